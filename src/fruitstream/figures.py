"""Matplotlib for the tools' figures (PNG files only), shared by training's model card figures
(``training.figures``) and the benchmarks' plots (``bench.openset``): neither package imports
the other for it."""

from __future__ import annotations

from typing import Any

from fruitstream.errors import MissingDependencyError


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend; matplotlib comes with the extra ``train``."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display on a server
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise MissingDependencyError("matplotlib", "train") from exc
    return plt
