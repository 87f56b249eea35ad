"""The model card's figures (PNG, matplotlib): training curves and the wild/val confusion matrix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fruitstream.figures import pyplot

CURVES_FILE = "training_curves.png"
CONFUSION_FILE = "confusion_wild.png"
OPEN_SET_FILE = "open_set.png"


def smooth(values: list[float], window: int) -> tuple[np.ndarray, np.ndarray]:
    """A running mean over ``window`` steps, and the step each point stands for."""
    x = np.asarray(values, dtype=np.float64)
    if len(x) < window:
        return np.arange(len(x)), x
    kernel = np.ones(window) / window
    return np.arange(window - 1, len(x)), np.convolve(x, kernel, mode="valid")


def training_curves(curves: dict[str, list[float]], path: Path) -> Path | None:
    """Fine-tuning cross-entropy per step (running mean) and the held-out cross-entropy and
    top-1 after each epoch; None when the run kept no curves (head-only, older bundles)."""
    steps = curves.get("step_ce", [])
    if not steps:
        return None
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    x, y = smooth(steps, 25)
    ax1.plot(np.arange(len(steps)), steps, color="#c8d7e8", linewidth=0.6, label="each step")
    ax1.plot(x, y, color="#1f5a96", label="running mean (25 steps)")
    ax1.set(xlabel="fine-tuning step", ylabel="cross-entropy (training views)")
    ax1.legend(frameon=False)
    held_ce, held_top1 = curves.get("epoch_held_ce", []), curves.get("epoch_held_top1", [])
    epochs = np.arange(len(held_ce))
    ax2.plot(epochs, held_ce, "o-", color="#b4451f", label="cross-entropy")
    ax2.set(xlabel="epoch (0: before fine-tuning)", ylabel="held-out cross-entropy")
    ax2.set_xticks(epochs)
    twin = ax2.twinx()
    twin.plot(epochs, np.asarray(held_top1) * 100, "s--", color="#2b7a3d", label="top-1")
    twin.set_ylabel("held-out top-1 (%)")
    ax2.set_title("held-out views (calibration photos and scenes)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def confusion_matrix(report: dict[str, Any], labels: list[str], path: Path) -> Path | None:
    """Rows: the true fruit (only fruits with photos); columns: the model's top answer, known
    or not. Each row in percent of its photos, the counts written in the cells."""
    matrix = report.get("confusion")
    if not matrix:
        return None
    plt = pyplot()
    counts = np.asarray(matrix, dtype=np.int64)
    rows = [i for i in range(len(labels)) if counts[i].sum()]
    shares = counts[rows] / counts[rows].sum(axis=1, keepdims=True)
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 2))
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right")
    ax.set_yticks(range(len(rows)), [f"{labels[i]} ({counts[i].sum()})" for i in rows])
    for r, i in enumerate(rows):
        for j in range(len(labels)):
            if counts[i, j]:
                ax.text(j, r, str(counts[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if shares[r, j] > 0.5 else "black")  # fmt: skip
    ax.set(xlabel="top answer", ylabel="true fruit (photos)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
