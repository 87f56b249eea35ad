"""Image folders on disk: ``<root>/<class>/*.jpg`` for labelled sets, flat folders for the rest."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

# Where the fruits15 dataset is by default (relative to the working directory): the settings'
# FRUITSTREAM_DATASET_DIR, training's --data and the quality gate start from it.
DATASET_DIR = Path("../shared/datasets/fruits15")
# The one table of image file types: suffix -> content type (S3 objects get it too).
CONTENT_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
    ".gif": "image/gif",
    ".bmp": "image/bmp",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
}
IMAGE_SUFFIXES = frozenset(CONTENT_TYPES)
NOT_FRUIT_DIRS = ("not-fruit", "not_fruit")


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def image_files(folder: Path) -> list[Path]:
    """Every image file below ``folder`` (recursive), sorted for reproducibility."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and is_image_path(p))


def expand_paths(
    paths: Iterable[Path], skipped: list[tuple[Path, str]] | None = None
) -> Iterator[Path]:
    """Files as given, folders expanded recursively to every file in them.

    Files named explicitly are kept whatever their suffix, so that a bad file reaches the
    classifier and gets its error instead of being silently skipped. Inside folders, symbolic
    links are not followed (a link in an upload folder must not send ``/etc/passwd``), and
    hidden files and folders are left out; each is appended to ``skipped`` with the reason.
    """
    note = skipped.append if skipped is not None else (lambda _item: None)
    for path in paths:
        if path.is_dir():
            yield from _walk(path, note)
        else:
            yield path


def _walk(folder: Path, note: Callable[[tuple[Path, str]], None]) -> Iterator[Path]:
    for entry in sorted(folder.iterdir()):
        if entry.is_symlink():
            note((entry, "symbolic link, not followed"))
        elif entry.name.startswith("."):
            note((entry, "hidden " + ("folder" if entry.is_dir() else "file")))
        elif entry.is_dir():
            if is_image_path(entry):
                note((entry, "a folder named like a photo: its contents are submitted instead"))
            yield from _walk(entry, note)
        elif entry.is_file():
            yield entry
        else:
            note((entry, "not a regular file"))


def labelled_images(root: Path, classes: Iterable[str] | None = None) -> list[tuple[Path, str]]:
    """``(path, class)`` for each image in ``root/<class>/``; not-fruit folders are skipped."""
    wanted = set(classes) if classes is not None else None
    items: list[tuple[Path, str]] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if folder.name in NOT_FRUIT_DIRS or (wanted is not None and folder.name not in wanted):
            continue
        items.extend((path, folder.name) for path in image_files(folder))
    return items
