"""Use cases over the classifier: classify files on disk in batches, one record per file."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

from fruitstream.classifier import Classifier, Prediction
from fruitstream.dataset import expand_paths
from fruitstream.errors import ImageTooLargeError


class _Bar(Protocol):
    total: float | None

    def update(self, n: float | None = ...) -> bool | None: ...
    def refresh(self) -> None: ...


def file_record(path: Path, outcome: Prediction | Exception) -> dict[str, Any]:
    """The JSON record of ``fruitstream classify --json``: always the same six keys."""
    if isinstance(outcome, Prediction):
        return {"path": str(path), **outcome.to_dict(), "error": None}
    return {
        "path": str(path),
        "label": None,
        "confidence": None,
        "known": None,
        "top_k": [],
        "error": str(outcome),
    }


def classify_files(
    clf: Classifier,
    paths: Iterable[Path],
    top_k: int = 3,
    bar: _Bar | None = None,
    skipped: list[tuple[Path, str]] | None = None,
) -> Iterator[dict[str, Any]]:
    """Classify files and folders (recursively) in batches, yielding records in path order.

    A file that cannot be read or decoded gets its ``error``; the others go on. Paths left
    out of folders (links, hidden files) are appended to ``skipped`` with the reason.
    """
    files = list(expand_paths(paths, skipped))
    if bar is not None:
        bar.total = len(files)
        bar.refresh()
    for start in range(0, len(files), clf.batch_size):
        chunk = files[start : start + clf.batch_size]
        blobs: list[bytes] = []
        readable: list[Path] = []
        for path in chunk:
            try:
                size = path.stat().st_size
                if size > clf.limits.max_bytes:  # refused before a byte of it is read
                    yield file_record(
                        path,
                        ImageTooLargeError(
                            f"file is {size:,} bytes, over the limit of "
                            f"{clf.limits.max_bytes:,} bytes"
                        ),
                    )
                    continue
                blobs.append(path.read_bytes())
                readable.append(path)
            except OSError as exc:
                yield file_record(path, OSError(f"cannot read file: {exc.strerror or exc}"))
        for path, outcome in zip(readable, clf.classify_many(blobs, top_k=top_k), strict=True):
            yield file_record(path, outcome)
        if bar is not None:
            bar.update(len(chunk))
