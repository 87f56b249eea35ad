"""Step 5b: the int8 graph: static QDQ quantization calibrated on training views."""

from __future__ import annotations

import random
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fruitstream.errors import ConfigError, MissingDependencyError
from fruitstream.model.bundle import PreprocessConfig
from fruitstream.training.config import TrainConfig
from fruitstream.training.data import Source, SpriteBank, sample_up_to, training_views

# Weight formats of the int8 graph; activations are uint8 in all of them. On x86 without VNNI,
# ONNX Runtime adds pairs of uint8 x int8 products into 16-bit lanes (vpmaddubsw) in its
# pointwise convolutions and matrix products: 8-bit weights can overflow them (2 x 255 x 128 =
# 65,280 > 32,767), 7-bit weights cannot (2 x 255 x 64 = 32,640); see core.precision. Its
# depthwise kernels widen every product to 32 bits first, so they keep 8 bits in "s7".
INT8_WEIGHT_QMAX = {"s7": 64, "s8": 127}


def quantize_int8(
    fp32: Path,
    out: Path,
    calibration: Sequence[NDArray[np.uint8]],
    weights: str = "s7",
    bias_correction: bool = False,
) -> None:
    """ONNX Runtime static quantization: QDQ, per-channel weights in the ``weights`` format of
    ``INT8_FORMATS``, uint8 activations whose ranges come from ``calibration`` batches of
    training views; with ``bias_correction``, biases absorb the mean rounding error first."""
    if bias_correction and weights not in INT8_WEIGHT_QMAX:
        raise ConfigError(f"bias correction takes symmetric weights (s7, s8), not {weights}")
    try:
        from onnxruntime.quantization import (
            CalibrationDataReader,
            QuantFormat,
            QuantType,
            quantize_static,
        )
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as exc:
        raise MissingDependencyError("onnx", "train") from exc

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._batches = iter(calibration)

        def get_next(self) -> dict[str, NDArray[np.uint8]] | None:
            batch = next(self._batches, None)
            return None if batch is None else {"input": batch}

    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        # Every other op is quantized: leaving the activations (Clip) or residual Adds in float
        # between quantized convolutions lost 22 points of top-1 in a trial, all ops none.
        nodes = onnx.load(str(prepared)).graph.node
        # The final softmax stays in float: probabilities near 0 and 1 need the range. With
        # 7-bit weights, so do the first and last convolutions and the classifier: on the
        # shipped v3 weights this kept wild/val and grocery/val top-1 equal to fp32's, where
        # quantizing them too lost 0.7 and gained 1.3 points (agreement 95.7% and 94.7%).
        float_nodes = [n.name for n in nodes if n.op_type == "Softmax"]
        if weights == "s7":
            float_nodes += edge_layers(nodes)
        if bias_correction:
            correct_biases(prepared, calibration, weights, float_nodes)
        # Depthwise kernels widen each product to 32 bits on every CPU, so their weights keep
        # all 8 bits: 7 bits there cost accuracy and buy no safety.
        overrides = {
            name: [{"axis": 0, "reduce_range": False}] for name in depthwise_weights(nodes)
        }
        quantize_static(
            str(prepared),
            str(out),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QUInt8 if weights == "u8" else QuantType.QInt8,
            reduce_range=weights == "s7",
            nodes_to_exclude=float_nodes,
            # Ranges averaged over the calibration batches, not their extremes: with 512 views
            # this kept the shipped model's wild/val top-1 within 0.2 point of fp32, where
            # the plain minimum and maximum of 256 views lost 0.9 point.
            extra_options={
                "CalibMovingAverage": True,
                **({"TensorQuantOverrides": overrides} if weights == "s7" else {}),
            },
        )


def correct_biases(
    model_path: Path,
    calibration: Sequence[NDArray[np.uint8]],
    weights: str,
    float_nodes: Sequence[str] = (),
) -> None:
    """Shift each convolution's bias by the mean error its weight rounding adds to its output
    (bias correction, Nagel et al. 2019): ``b -= (round(W) - W) . E[x]``, with E[x] the mean
    of each input channel over the calibration views. Rewrites ``model_path`` in place."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    model = onnx.load(str(model_path))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    convs = [
        n for n in graph.node
        if n.op_type == "Conv" and n.name not in float_nodes and n.input[1] in inits
    ]  # fmt: skip
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    for name in {n.input[0] for n in convs} - known:
        probe.graph.output.append(
            onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
        )
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    sums: dict[str, NDArray[np.float64]] = {}
    positions: dict[str, int] = {}
    for batch in calibration:
        outs = dict(zip(names, session.run(names, {"input": batch}), strict=True))
        for name in {n.input[0] for n in convs}:
            x = outs[name]
            sums[name] = sums.get(name, 0) + x.sum(axis=(0, 2, 3), dtype=np.float64)
            positions[name] = positions.get(name, 0) + x.size // x.shape[1]
    depthwise = set(depthwise_weights(convs))
    for n in convs:
        w = numpy_helper.to_array(inits[n.input[1]]).astype(np.float64)
        mean = sums[n.input[0]] / positions[n.input[0]]
        qmax = 127 if n.input[1] in depthwise else INT8_WEIGHT_QMAX[weights]
        scale = np.abs(w).reshape(w.shape[0], -1).max(axis=1) / qmax
        scale[scale == 0] = 1.0
        s = scale[:, None, None, None]
        error = np.clip(np.round(w / s), -qmax, qmax) * s - w
        if n.input[1] in depthwise:
            shift = error.sum(axis=(1, 2, 3)) * mean
        else:
            shift = np.einsum("oikl,i->o", error, mean)
        if len(n.input) > 2 and n.input[2] in inits:
            bias = numpy_helper.to_array(inits[n.input[2]]).astype(np.float64)
            inits[n.input[2]].CopyFrom(
                numpy_helper.from_array((bias - shift).astype(np.float32), n.input[2])
            )
    onnx.save(model, str(model_path))


def edge_layers(nodes: Any) -> list[str]:
    """The first and last convolutions and every matrix product (the classifier)."""
    convs = [n.name for n in nodes if n.op_type == "Conv"]
    products = [n.name for n in nodes if n.op_type in ("Gemm", "MatMul")]
    return [*convs[:1], *convs[-1:], *products]


def depthwise_weights(nodes: Any) -> list[str]:
    """The weight names of the depthwise convolutions (one input channel per group)."""
    return [
        n.input[1]
        for n in nodes
        if n.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in n.attribute)
    ]


def calibration_batches(
    cfg: TrainConfig, sources: list[Source], bank: SpriteBank, pre: PreprocessConfig
) -> list[NDArray[np.uint8]]:
    """A seeded sample of training views, studio, real and synthetic alike, in batches."""
    rng = random.Random(cfg.seed + 2)
    picked = sample_up_to(sources, cfg.quant_calibration, rng)
    views = [
        pixels for pixels, _, _ in training_views(picked, bank, replace(cfg, real_views=1), pre)
    ]
    return [np.stack(views[i : i + 16]) for i in range(0, len(views), 16)]
