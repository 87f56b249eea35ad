"""People's labels and the adapted model versions in SQL (LabelStore, ModelVersions)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from fruitstream.adapters.sql_engine import SqlEngine, aware, keyset_page
from fruitstream.adapters.sql_schema import (
    labels_table,
    model_activations_table,
    model_versions_table,
)
from fruitstream.domain import BASE_VERSION, Label, ModelVersion
from fruitstream.errors import NotFoundError


def _label(row: Any) -> Label:
    return Label(**{**row, "created_at": aware(row["created_at"])})


class SqlLabels(SqlEngine):
    """LabelStore and ModelVersions over the labels, model versions and activations tables."""

    # --- LabelStore -----------------------------------------------------------------------

    def add_label(self, label: Label) -> None:
        with self.begin() as conn:
            conn.execute(sa.insert(labels_table).values(**label.__dict__))

    def labels(self, limit: int = 50, before: str | None = None) -> list[Label]:
        t = labels_table
        newer = t.alias("newer")
        # The current label of a photo: none of the same content is newer.
        later = sa.exists().where(
            newer.c.content_sha256 == t.c.content_sha256,
            sa.tuple_(newer.c.created_at, newer.c.label_id)
            > sa.tuple_(t.c.created_at, t.c.label_id),
        )
        q = sa.select(t).where(~later)
        with self.begin() as conn:
            rows = keyset_page(
                conn, q, (t.c.created_at, t.c.label_id), limit, before,
                missing=f"cursor {before!r} is not a label", descending=True,
            )  # fmt: skip
        return [_label(r) for r in rows]

    def remove_label(self, label_id: str) -> Label:
        t = labels_table
        with self.begin() as conn:
            row = conn.execute(sa.select(t).where(t.c.label_id == label_id)).mappings().first()
            if row is None:
                raise NotFoundError(f"no label {label_id!r}")
            conn.execute(sa.delete(t).where(t.c.label_id == label_id))
        return _label(row)

    # --- ModelVersions --------------------------------------------------------------------

    def add_version(self, version: ModelVersion) -> None:
        data = version.to_dict()
        data["created_at"] = version.created_at
        with self.begin() as conn:
            conn.execute(sa.insert(model_versions_table).values(**data))

    def versions(self) -> list[ModelVersion]:
        t = model_versions_table
        with self.begin() as conn:
            rows = conn.execute(sa.select(t).order_by(t.c.created_at.desc())).mappings().all()
        return [
            ModelVersion(**{
                **r, "classes": tuple(r["classes"]), "refused": tuple(r["refused"]),
                "created_at": aware(r["created_at"]),
            })
            for r in rows
        ]  # fmt: skip

    def activate(self, version: str) -> None:
        t = model_versions_table
        with self.begin() as conn:
            if (
                version != BASE_VERSION
                and conn.execute(sa.select(t.c.version).where(t.c.version == version)).first()
                is None
            ):
                raise NotFoundError(f"no model version {version!r}")
            conn.execute(
                sa.insert(model_activations_table).values(version=version, at=datetime.now(UTC))
            )

    def active_version(self) -> str:
        t = model_activations_table
        with self.begin() as conn:
            row = conn.execute(sa.select(t.c.version).order_by(t.c.seq.desc()).limit(1)).first()
        return BASE_VERSION if row is None else str(row[0])
