"""Image folders on disk: ``<root>/<class>/*.jpg`` for labelled sets, flat folders for the rest."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
NOT_FRUIT_DIRS = ("not-fruit", "not_fruit")


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def image_files(folder: Path) -> list[Path]:
    """Every image file below ``folder`` (recursive), sorted for reproducibility."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and is_image_path(p))


def expand_paths(paths: Iterable[Path]) -> Iterator[Path]:
    """Files as given, folders expanded recursively to every file in them.

    Files named explicitly are kept whatever their suffix, so that a bad file reaches the
    classifier and gets its error instead of being silently skipped.
    """
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file() and not _hidden(p))
        else:
            yield path


def _hidden(path: Path) -> bool:
    return path.name.startswith(".")


def labelled_images(root: Path, classes: Iterable[str] | None = None) -> list[tuple[Path, str]]:
    """``(path, class)`` for each image in ``root/<class>/``; not-fruit folders are skipped."""
    wanted = set(classes) if classes is not None else None
    items: list[tuple[Path, str]] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if folder.name in NOT_FRUIT_DIRS or (wanted is not None and folder.name not in wanted):
            continue
        items.extend((path, folder.name) for path in image_files(folder))
    return items
