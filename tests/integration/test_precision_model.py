"""Choosing a graph with the shipped bundle: the ``auto`` rule on its figures, and the int8
saturation bound of its graph."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fruitstream.core.precision import (
    INT8_WEIGHT_BOUND,
    MAX_INT8_LOSS,
    choose_precision,
    int8_loss,
    parse_cpuinfo,
)
from fruitstream.model.bundle import INT8_FILE, MODEL_FILE, ModelBundle, default_bundle_dir
from tests.helpers import ARM_DOTPROD, ARM_PLAIN, AVX2_ONLY, VNNI

VNNI_CPU = parse_cpuinfo(VNNI, "x86_64")
AVX2_CPU = parse_cpuinfo(AVX2_ONLY, "x86_64")


def _bundle(tmp_path: Path, int8: bool = True, loss: float | None = 0.0) -> ModelBundle:
    """A bundle whose int8 graph loses ``loss`` of top-1 against fp32 on wild_val (None: no
    figures at all)."""
    root = tmp_path / f"bundle-{int8}-{loss}"
    root.mkdir()
    meta = json.loads((default_bundle_dir() / "bundle.json").read_text())
    meta["precision"] = "int8" if int8 else "fp32"
    meta["metrics"] = {}
    if loss is not None:
        meta["metrics"] = {
            "studio_test": {"accuracy": 0.99},
            "wild_val": {"accuracy": 0.80 - loss},
            "not_fruit_val": {"not_fruit": {"rejection_rate": 0.97}},
            "fp32": {"studio_test": {"accuracy": 0.99}, "wild_val": {"accuracy": 0.80}},
        }
    (root / "bundle.json").write_text(json.dumps(meta))
    (root / MODEL_FILE).write_bytes(b"fp32")
    if int8:
        (root / INT8_FILE).write_bytes(b"int8")
    return ModelBundle.load(root)


@pytest.mark.model
def test_auto_runs_int8_only_with_a_dot_product_and_close_figures(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path, loss=0.002)
    chosen = choose_precision(bundle, "auto", VNNI_CPU)
    assert chosen.precision == "int8" and "avx512_vnni" in chosen.reason
    slow = choose_precision(bundle, "auto", AVX2_CPU)
    assert slow.precision == "fp32" and "no int8 dot product" in slow.reason
    arm = choose_precision(bundle, None, parse_cpuinfo(ARM_PLAIN, "aarch64"))
    assert arm.precision == "fp32"
    assert choose_precision(bundle, None, parse_cpuinfo(ARM_DOTPROD, "aarch64")).precision == "int8"


@pytest.mark.model
def test_auto_refuses_an_int8_graph_that_loses_accuracy(tmp_path: Path) -> None:
    lossy = choose_precision(_bundle(tmp_path, loss=MAX_INT8_LOSS + 0.004), "auto", VNNI_CPU)
    assert lossy.precision == "fp32"
    assert "loses 0.9 points of top-1 on wild_val" in lossy.reason
    unmeasured = choose_precision(_bundle(tmp_path, loss=None), "auto", VNNI_CPU)
    assert (
        unmeasured.precision == "fp32" and "records no int8 and fp32 figures" in unmeasured.reason
    )
    no_int8 = choose_precision(_bundle(tmp_path, int8=False), "auto", VNNI_CPU)
    assert no_int8.precision == "fp32" and "no int8 graph" in no_int8.reason


@pytest.mark.model
def test_an_explicit_precision_is_always_obeyed(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path, loss=0.05)
    assert choose_precision(bundle, "int8", AVX2_CPU).precision == "int8"
    assert choose_precision(bundle, "fp32", VNNI_CPU).precision == "fp32"


@pytest.mark.model
def test_int8_loss_is_the_worst_set(tmp_path: Path) -> None:
    assert int8_loss(_bundle(tmp_path, loss=0.03)) == pytest.approx((0.03, "wild_val"))
    assert int8_loss(_bundle(tmp_path, loss=None)) is None


@pytest.mark.model
def test_the_chosen_graph_and_its_reason_travel_with_the_bundle(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path)
    chosen = choose_precision(bundle, "auto", AVX2_CPU)
    running = bundle.with_precision(chosen.precision, chosen.reason)
    assert running.onnx_path.name == MODEL_FILE
    assert running.precision_reason == chosen.reason
    assert running.model_version.endswith("+fp32")
    assert replace(running, precision="int8").onnx_path.name == INT8_FILE


@pytest.mark.model
def test_the_shipped_int8_graph_keeps_its_weights_within_the_bound() -> None:
    """Every weight that meets ``vpmaddubsw`` (pointwise and full convolutions, matrix products)
    is within the 7-bit bound; depthwise weights keep 8 bits: their kernels widen each
    product to 32 bits (``vpmovsxbd`` + ``vpmaddwd``) before adding."""
    onnx = pytest.importorskip("onnx", reason="the bound is read with onnx (extra 'train')")
    from onnx import numpy_helper

    graph = onnx.load(str(default_bundle_dir() / INT8_FILE)).graph
    inits = {i.name: i for i in graph.initializer}
    consumers = {i: n for n in graph.node for i in n.input}
    paired = depthwise = activations = 0
    for node in graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        source = inits.get(node.input[0])
        if source is None:  # an activation: quantized at run time
            zero_point = numpy_helper.to_array(inits[node.input[2]])
            assert zero_point.dtype == np.uint8, node.name
            activations += 1
            continue
        user = consumers[node.output[0]]
        if user.op_type not in ("Conv", "Gemm", "MatMul") or user.input[1] != node.output[0]:
            continue  # biases (added in 32 bits) and constants of float ops
        values = numpy_helper.to_array(source)
        assert values.dtype == np.int8, node.name
        groups = next((a.i for a in user.attribute if a.name == "group"), 1)
        if user.op_type == "Conv" and groups > 1 and values.shape[1] == 1:
            depthwise += 1
            continue
        assert np.abs(values.astype(np.int32)).max() <= INT8_WEIGHT_BOUND, node.name
        paired += 1
    assert paired > 30 and depthwise > 10 and activations > 50
