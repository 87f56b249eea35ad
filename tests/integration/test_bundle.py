"""Model bundles: the int8 graph is the default when shipped, fp32 one setting away."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fruitstream.errors import ModelError
from fruitstream.model.bundle import INT8_FILE, MODEL_FILE, ModelBundle, default_bundle_dir


def bundle_dir(tmp_path: Path, precision: str, int8: bool) -> Path:
    root = tmp_path / "bundle"
    root.mkdir()
    meta = json.loads((default_bundle_dir() / "bundle.json").read_text())
    meta["precision"] = precision
    (root / "bundle.json").write_text(json.dumps(meta))
    (root / MODEL_FILE).write_bytes(b"fp32")
    if int8:
        (root / INT8_FILE).write_bytes(b"int8")
    return root


@pytest.mark.model
def test_int8_bundle_runs_int8_unless_fp32_is_asked_for(tmp_path: Path) -> None:
    bundle = ModelBundle.load(bundle_dir(tmp_path, "int8", int8=True))
    assert bundle.onnx_path.name == INT8_FILE
    assert bundle.with_precision("auto") is bundle
    fp32 = bundle.with_precision("fp32")
    assert fp32.onnx_path.name == MODEL_FILE
    assert fp32.model_version == f"{bundle.name}:{bundle.version}+fp32"
    assert bundle.model_version == f"{bundle.name}:{bundle.version}"


@pytest.mark.model
def test_missing_graph_is_a_clear_error(tmp_path: Path) -> None:
    root = bundle_dir(tmp_path, "int8", int8=False)
    with pytest.raises(ModelError, match=r"no int8 graph \(model.int8.onnx\)"):
        ModelBundle.load(root)
    (root / "bundle.json").write_text(
        json.dumps({**json.loads((root / "bundle.json").read_text()), "precision": "fp32"})
    )
    bundle = ModelBundle.load(root)
    with pytest.raises(ModelError, match="no int8 graph"):
        bundle.with_precision("int8")
    with pytest.raises(ModelError, match="unknown precision 'fp16'"):
        bundle.with_precision("fp16")


@pytest.mark.model
def test_training_record_round_trips(tmp_path: Path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(default_bundle_dir(), root)
    bundle = ModelBundle.load(root)
    from dataclasses import replace

    replace(bundle, training={"config": {"seed": 0}, "total_seconds": 12}).save_metadata()
    assert ModelBundle.load(root).training == {"config": {"seed": 0}, "total_seconds": 12}
