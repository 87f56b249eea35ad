"""Labels: a person says what a photo shows, next to what the model said, kept durably.

A label names a stored photo by its content: a photo of a batch (by its ``image_id``, its
stored object and its row's answer), or a photo given with the label (stored now under
``labels/<sha256>``, classified now for the model's answer). The latest label of the same
content is the photo's; the earlier ones stay as its history. These are what a later
adaptation of the model learns from (issue 18).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fruitstream.dataset import CONTENT_TYPES, image_files
from fruitstream.domain import (
    LABEL_PREFIX,
    ImageLimits,
    Label,
    Prediction,
    check_size,
    new_id,
    normalize_label,
    utcnow,
)
from fruitstream.errors import FruitstreamError
from fruitstream.ports import ObjectStore, ResultsDatabase


def label_of_row(
    db: ResultsDatabase, store: ObjectStore, image_id: str, text: str, source: str
) -> Label:
    """Label the photo of a batch's result row (``NotFoundError`` for an unknown image or a
    photo no longer in the store)."""
    label = normalize_label(text)
    row = db.result(image_id)
    data = store.get(row.object_key)  # it must still be there to learn from
    entry = Label(
        label_id=new_id(),
        content_sha256=hashlib.sha256(data).hexdigest(),
        object_key=row.object_key,
        label=label,
        model_label=row.label,
        model_known=row.known,
        model_version=row.model_version,
        source=source,
        created_at=utcnow(),
        image_id=image_id,
    )
    db.add_label(entry)
    return entry


def label_of_photo(
    db: ResultsDatabase,
    store: ObjectStore,
    classify: Callable[[bytes], Prediction],
    model_version: str,
    data: bytes,
    text: str,
    source: str,
    filename: str = "",
) -> Label:
    """Label a photo given now: it must be an image the model can read (``ImageError``
    otherwise); it is stored by its content, and the model's answer kept beside the label."""
    label = normalize_label(text)
    prediction = classify(data)  # refuses what is not a photo, before anything is kept
    digest = hashlib.sha256(data).hexdigest()
    suffix = Path(filename).suffix.lower()
    key = f"{LABEL_PREFIX}{digest}{suffix if suffix in CONTENT_TYPES else ''}"
    store.put(key, data, CONTENT_TYPES.get(suffix))
    entry = Label(
        label_id=new_id(),
        content_sha256=digest,
        object_key=key,
        label=label,
        model_label=prediction.label,
        model_known=prediction.known,
        model_version=model_version,
        source=source,
        created_at=utcnow(),
    )
    db.add_label(entry)
    return entry


@dataclass
class TeachReport:
    """What ``teach`` did with a folder: labels made, and files left out with why."""

    labels: list[Label] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def teach(
    folder: Path, label_one: Callable[[bytes, str, str], Label], limits: ImageLimits
) -> TeachReport:
    """Every photo under ``folder/<label>/``: the folder's name is the label (``not-fruit``
    for photos of none of the fruits). A file that cannot be labelled is skipped with why;
    the others go on."""
    report = TeachReport()
    folders = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise FruitstreamError(f"{folder} has no folder per label (e.g. {folder}/mango/*.jpg)")
    for sub in folders:
        for path in image_files(sub):
            try:
                check_size(path.stat().st_size, limits)  # refused before it is read
                report.labels.append(label_one(path.read_bytes(), sub.name, path.name))
            except (FruitstreamError, OSError) as exc:
                report.skipped.append((path, str(exc)))
    return report
