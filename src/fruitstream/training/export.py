"""Step 5a: export to ONNX (uint8 pixels in, softmax out)."""

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
