"""The shipped int8 graph answers the same on an AVX2-only CPU as here: its kernels run under QEMU.

QEMU's user-mode emulator with ``-cpu Haswell-v4`` reports AVX2 without VNNI or AVX-512, so ONNX
Runtime takes the kernels that add pairs of uint8 x int8 products into 16-bit lanes, whatever
CPU runs the test. A control shows the emulator really takes them: a product with 8-bit
weights saturates there, the same product with weights within the 7-bit bound does not.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fruitstream.dataset import image_files

pytestmark = [pytest.mark.dataset, pytest.mark.slow]

PROBE = """
import sys
from pathlib import Path
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper
from fruitstream.core.classifier import Classifier
from fruitstream.core.imaging import load_pixels
from fruitstream.model.bundle import ModelBundle, default_bundle_dir

def product(weight):
    # u8 activations of 255 times a column of equal int8 weights, summed in int32.
    k = 64
    a = helper.make_tensor_value_info("a", TensorProto.UINT8, [1, k])
    y = helper.make_tensor_value_info("y", TensorProto.INT32, [1, 8])
    b = helper.make_tensor("b", TensorProto.INT8, [k, 8], [weight] * (k * 8))
    node = helper.make_node("MatMulInteger", ["a", "b"], ["y"])
    graph = helper.make_graph([node], "g", [a], [y], [b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"a": np.full((1, k), 255, np.uint8)})[0]

clf = Classifier(ModelBundle.load(default_bundle_dir()).with_precision("int8"), threads=1)
pixels = np.stack([load_pixels(Path(p).read_bytes(), clf.bundle.preprocess) for p in sys.argv[2:]])
probs = clf.run(clf.model_input(pixels))
np.savez(sys.argv[1], eight=product(-128), seven=product(-64), probs=probs)
"""


def _run(command: list[str], out: Path, photos: list[Path]) -> dict[str, np.ndarray]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [*command, sys.executable, "-c", PROBE, str(out), *map(str, photos)],
        capture_output=True,
        text=True,
        env=env,
        timeout=540,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(np.load(out))


def test_int8_graph_is_exact_on_the_avx2_kernels(dataset: Path, tmp_path: Path) -> None:
    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("the AVX2 kernels are x86's")
    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        message = "needs qemu-x86_64 (Debian's qemu-user; `make system-deps` installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    photos = (
        image_files(dataset / "grocery" / "val")[::8] + image_files(dataset / "wild" / "val")[::80]
    )
    here = _run([], tmp_path / "here.npz", photos)
    avx2 = _run([qemu, "-cpu", "Haswell-v4"], tmp_path / "avx2.npz", photos)

    exact = 64 * 255 * -128
    assert (avx2["eight"] != exact).all(), "the emulated CPU did not take the 16-bit kernels"
    assert (avx2["seven"] == 64 * 255 * -64).all() and (here["seven"] == avx2["seven"]).all()
    # The shipped graph's integer sums are exact on both paths: the same probabilities, to
    # float rounding in the requantization steps.
    assert len(here["probs"]) == len(photos) >= 8
    assert np.abs(here["probs"] - avx2["probs"]).max() < 1e-3
    assert (here["probs"].argmax(axis=1) == avx2["probs"].argmax(axis=1)).all()
