"""The model's side of the service: people's labels, teaching from a folder, adapting a
version from the labels, listing and switching versions, and the classifier that follows
the live one."""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from pathlib import Path

from fruitstream.config import Settings
from fruitstream.domain import Label, ModelVersion
from fruitstream.errors import FruitstreamError, LabelError
from fruitstream.ports import PhotoClassifier
from fruitstream.service.backends import Backends
from fruitstream.service.labels import TeachReport, label_of_photo, label_of_row, teach
from fruitstream.service.versions import AdaptReport, Versions

log = logging.getLogger(__name__)


class Models:
    """Labels and model versions, shared by every process through the database."""

    def __init__(
        self,
        settings: Settings,
        backends: Backends,
        classifier: Callable[[], PhotoClassifier],
    ) -> None:
        self.settings = settings
        self.backends = backends
        self._factory = classifier
        self._adapting = threading.Lock()

    @functools.cached_property
    def versions(self) -> Versions:
        """Adapting, listing and switching model versions (shared through the database)."""
        return Versions(
            self.backends.db,
            self.backends.store,
            self._factory,
            self.settings.dataset_dir,
            self.settings.data_dir / "cache",
        )

    def classifier(self) -> PhotoClassifier:
        """The process-wide classifier, loaded on first use, answering with the live model
        version (followed at most once a second)."""
        clf = self._factory()
        self.versions.follow(clf)
        return clf

    def follow(self, clf: PhotoClassifier) -> None:
        """Switch ``clf`` to the live version when it changed."""
        self.versions.follow(clf)

    # --- labels: what people say the photos show ------------------------------------------

    def label(
        self,
        text: str,
        image_id: str | None = None,
        data: bytes | None = None,
        source: str = "cli",
        filename: str = "",
    ) -> Label:
        """Keep a person's label of a batch photo (``image_id``) or of a photo given now
        (``data``), beside the model's answer; ``LabelError`` for a label that names nothing,
        ``ImageError`` for bytes that are not a photo."""
        if (image_id is None) == (data is None):
            raise LabelError("a label is of one photo: an image id, or the photo itself")
        db, store = self.backends.db, self.backends.store
        if image_id is not None:
            label = label_of_row(db, store, image_id, text, source)
        else:
            assert data is not None
            clf = self.classifier()
            label = label_of_photo(
                db,
                store,
                lambda photo: clf.classify(photo, top_k=self.settings.top_k),
                clf.bundle.model_version,
                data,
                text,
                source,
                filename,
            )
        self._adapt_when_due()
        return label

    def labels(self, limit: int = 50, before: str | None = None) -> list[Label]:
        """Each photo's current label, newest first; a page after the label ``before``."""
        return self.backends.db.labels(limit=limit, before=before)

    def unlabel(self, label_id: str) -> Label:
        """Take a label back; the photo's previous label, if any, is current again."""
        return self.backends.db.remove_label(label_id)

    def teach(self, folder: Path, source: str = "teach") -> TeachReport:
        """Label every photo of ``folder/<label>/`` with its folder's name."""
        return teach(
            folder,
            lambda data, text, name: self.label(text, data=data, source=source, filename=name),
            self.settings.limits,
        )

    # --- model versions -------------------------------------------------------------------

    def adapt(self, method: str = "mix", force: bool = False) -> AdaptReport:
        """A new model version from every label, live if the guard passes it (or ``force``)."""
        return self.versions.adapt(method, force)

    def models(self) -> tuple[list[ModelVersion], str]:
        """Every adapted version, newest first, and the live one."""
        return self.versions.listing()

    def activate(self, version: str) -> str:
        """Make ``version`` (``base``: the shipped model) live for every process."""
        return self.versions.activate(version)

    def rollback(self) -> str:
        """Back to the live version's parent; returns the version now live."""
        return self.versions.rollback()

    def _adapt_when_due(self) -> None:
        """With ``adapt_every`` N: adapt in the background once N labels came since the
        newest version (one adaptation at a time; the guard still decides)."""
        every = self.settings.adapt_every
        if not every or not self._adapting.acquire(blocking=False):
            return
        started = False
        try:
            versions = self.backends.db.versions()
            wanted = (versions[0].labels_used if versions else 0) + every
            # One page of at most ``wanted`` labels says it: not every label on every label.
            if len(self.labels(limit=wanted)) >= wanted:
                threading.Thread(
                    target=self._adapt_in_background, name="adapt", daemon=True
                ).start()
                started = True
        finally:
            if not started:  # else the thread releases it when done
                self._adapting.release()

    def _adapt_in_background(self) -> None:
        try:
            report = self.adapt()
            log.info(
                "adapted on its own: %s (%s)", report.version.version,
                "live" if report.active else "; ".join(report.version.refused),
            )  # fmt: skip
        except FruitstreamError as exc:
            log.warning("adapting on its own failed: %s", exc)
        finally:
            self._adapting.release()
