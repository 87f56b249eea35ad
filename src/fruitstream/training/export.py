"""Step 5a: export to ONNX (probabilities and pooled features out), the head and the anchors."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fruitstream.training.config import require_torch


def export_onnx(module: Any, path: Path, input_size: int, outputs: Sequence[str]) -> None:
    torch = require_torch()
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


def _final_gemm(graph: Any) -> Any:
    """The graph's last layer: its final Gemm node (input 0 the pooled features)."""
    return [n for n in graph.node if n.op_type == "Gemm"][-1]


def add_features_output(path: Path) -> None:
    """Expose the input of the final Gemm (the pooled features) as the output ``features``.

    Works on the fp32 graph and its int8 twin alike (the head stays fp32 in both); a graph
    that already has the output is left as it is.
    """
    import onnx
    from onnx import TensorProto, helper

    from fruitstream.model.bundle import FEATURES_OUTPUT

    model = onnx.load(str(path))
    graph = model.graph
    if any(o.name == FEATURES_OUTPUT for o in graph.output):
        return
    gemm = _final_gemm(graph)
    pooled = gemm.input[0]
    width = next(i for i in graph.initializer if i.name == gemm.input[1]).dims[1]
    graph.node.append(helper.make_node("Identity", [pooled], [FEATURES_OUTPUT]))
    graph.output.append(
        helper.make_tensor_value_info(FEATURES_OUTPUT, TensorProto.FLOAT, ["batch", width])
    )
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def export_head(graph: Path, out: Path) -> None:
    """The final Gemm's weights and bias (``head.npz``): the prior ``adapt`` starts from."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(graph))
    gemm = _final_gemm(model.graph)
    inits = {i.name: i for i in model.graph.initializer}
    weight = numpy_helper.to_array(inits[gemm.input[1]]).astype(np.float32)
    bias = numpy_helper.to_array(inits[gemm.input[2]]).astype(np.float32)
    np.savez(out, weight=weight, bias=bias)


def export_anchors(bundle_dir: Path, data_dir: Path, seed: int = 0) -> int:
    """``anchors.npz``: pooled features of training photos (30 studio frames per fruit, every
    grocery/train photo, 30 field/train photos per fruit that has them, 200 not-fruit and 200
    other-fruit frames) and their fruit ("" for the negatives): the base answers that
    ``adapt`` keeps. Training data only: never wild/. Returns how many photos."""
    import random

    import numpy as np

    from fruitstream.core.adaptation import embed
    from fruitstream.core.classifier import Classifier
    from fruitstream.dataset import image_files, labelled_images
    from fruitstream.model.bundle import ANCHORS_FILE, ModelBundle

    clf = Classifier(ModelBundle.load(bundle_dir))
    rng = random.Random(seed)
    photos: list[tuple[Path, str]] = []
    for fruit in clf.labels:
        frames = image_files(data_dir / "studio" / "train" / fruit)
        rng.shuffle(frames)
        photos += [(p, fruit) for p in frames[:30]]
    photos += labelled_images(data_dir / "grocery" / "train", clf.labels)
    field = data_dir / "field" / "train"
    for fruit in clf.labels if field.is_dir() else ():
        frames = image_files(field / fruit) if (field / fruit).is_dir() else []
        rng.shuffle(frames)
        photos += [(p, fruit) for p in frames[:30]]
    for negatives in ("not-fruit", "other-fruit"):
        frames = image_files(data_dir / negatives / "train")
        rng.shuffle(frames)
        photos += [(p, "") for p in frames[:200]]
    features = embed(clf, [(p, "") for p, _ in photos]).features
    # labels: each row's fruit, "" for the negatives (open-set scores read the fruit rows).
    np.savez_compressed(
        bundle_dir / ANCHORS_FILE,
        features=features.astype(np.float16),
        labels=np.array([fruit for _, fruit in photos]),
    )
    return len(features)
