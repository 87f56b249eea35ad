"""One photo, or files on disk, classified at once in this process."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from fruitstream.config import Settings
from fruitstream.dataset import expand_paths
from fruitstream.domain import Prediction, check_size
from fruitstream.errors import ImageTooLargeError
from fruitstream.ports import PhotoClassifier


class Bar(Protocol):
    total: float | None

    def update(self, n: float | None = ...) -> bool | None: ...
    def refresh(self) -> None: ...


@dataclass(frozen=True)
class FileResult:
    """One file classified in process: ``classify --json`` and ``POST /v1/classify``."""

    path: str
    prediction: Prediction | None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Always seven keys: path, label, guess, confidence, known, top_k, error. ``label``
        is the fruit only when the model knows it (``known``); ``guess`` is always its closest
        fruit, so that "not sure" never reads as an answer."""
        if self.prediction is not None:
            p = self.prediction.to_dict()
            return {
                "path": self.path,
                "label": p["label"] if p["known"] else None,
                "guess": p["label"],
                "confidence": p["confidence"],
                "known": p["known"],
                "top_k": p["top_k"],
                "error": None,
            }
        return {
            "path": self.path,
            "label": None,
            "guess": None,
            "confidence": None,
            "known": None,
            "top_k": [],
            "error": self.error,
        }


def file_result(path: Path | str, outcome: Prediction | Exception) -> FileResult:
    if isinstance(outcome, Prediction):
        return FileResult(str(path), outcome)
    return FileResult(str(path), None, str(outcome))


class Classifying:
    """Photos in, predictions out, with the live model version."""

    def __init__(self, settings: Settings, classifier: Callable[[], PhotoClassifier]) -> None:
        self.settings = settings
        self._classifier = classifier

    def classify_one(self, data: bytes, top_k: int | None = None) -> Prediction:
        """One photo, at once, in process; ``ImageError`` says why it cannot be classified."""
        return self._classifier().classify(data, top_k=top_k or self.settings.top_k)

    def classify_files(
        self,
        paths: Iterable[Path],
        top_k: int | None = None,
        bar: Bar | None = None,
        skipped: list[tuple[Path, str]] | None = None,
    ) -> Iterator[FileResult]:
        """Files and folders (recursively) in batches, one result per file in path order.

        A file that cannot be read or decoded gets its ``error``; the others go on. Paths
        left out of folders (links, hidden files) are appended to ``skipped`` with why.
        """
        clf = self._classifier()
        k = top_k or self.settings.top_k
        files = list(expand_paths(paths, skipped))
        if bar is not None:
            bar.total = len(files)
            bar.refresh()
        # Files are read a chunk at a time: memory holds one chunk of photos, not the folder.
        step = self.settings.batch_size
        for start in range(0, len(files), step):
            chunk = files[start : start + step]
            blobs: list[bytes] = []
            readable: list[Path] = []
            for path in chunk:
                try:
                    size = path.stat().st_size
                    if size > clf.limits.max_bytes:  # refused before a byte of it is read
                        check_size(size, clf.limits)
                    blobs.append(path.read_bytes())
                    readable.append(path)
                except ImageTooLargeError as exc:
                    yield file_result(path, exc)
                except OSError as exc:
                    yield file_result(path, OSError(f"cannot read file: {exc.strerror or exc}"))
            for path, outcome in zip(readable, clf.classify_many(blobs, top_k=k), strict=True):
                yield file_result(path, outcome)
            if bar is not None:
                bar.update(len(chunk))
