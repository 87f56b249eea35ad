"""Results, sessions and heartbeats in SQL (SQLAlchemy Core): SQLite by default, PostgreSQL too.

The repository only; its tables and migrations are in ``sql_schema``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from fruitstream.adapters.sql_schema import (
    callbacks_table,
    create_tables,
    heartbeats_table,
    idempotency_table,
    labels_table,
    make_engine,
    model_activations_table,
    model_versions_table,
    photos_table,
    results_table,
    sessions_table,
)
from fruitstream.domain import (
    BASE_VERSION,
    ImageMessage,
    Label,
    ModelVersion,
    Progress,
    ResultRow,
    SessionRecord,
    Status,
)
from fruitstream.errors import CursorError, NotFoundError, ResultStoreError
from fruitstream.ports import Health


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _session(row: Any) -> SessionRecord:
    return SessionRecord(
        session_id=row["session_id"],
        created_at=_aware(row["created_at"]),
        submitted=row["submitted"],
        name=row["name"],
        owner=row.get("owner") or "",
    )


def _row(row: Any) -> ResultRow:
    return ResultRow(
        **{
            **row,
            "submitted_at": _aware(row["submitted_at"]),
            "processed_at": _aware(row["processed_at"]),
            "top_k": list(row["top_k"] or []),
        }
    )


def _label(row: Any) -> Label:
    return Label(**{**row, "created_at": _aware(row["created_at"])})


def _describe(exc: sa.exc.SQLAlchemyError) -> str:
    """The driver's first line, never the statement's parameters or the URL."""
    orig = getattr(exc, "orig", None)
    text = str(orig) if orig is not None else type(exc).__name__
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


class SqlDatabase:
    """Implements ResultStore, SessionStore and Heartbeats on one SQLAlchemy engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._ready = False
        self._schema_lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str) -> SqlDatabase:
        return cls(make_engine(url))

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A transaction; the schema is created on first use; errors become ResultStoreError."""
        try:
            if not self._ready:
                self.create_schema()
            with self.engine.begin() as conn:
                yield conn
        except sa.exc.SQLAlchemyError as exc:
            raise ResultStoreError(f"results database error: {_describe(exc)}") from exc

    def create_schema(self) -> None:
        """Create missing tables (idempotent; threads and processes may race to do it)."""
        with self._schema_lock:
            if self._ready:
                return
            create_tables(self.engine)
            self._ready = True

    def _insert(self, table: sa.Table) -> Any:
        if self.dialect == "postgresql":
            from sqlalchemy.dialects import postgresql

            return postgresql.insert(table)
        from sqlalchemy.dialects import sqlite

        return sqlite.insert(table)

    # --- ResultStore ----------------------------------------------------------------------

    def upsert(self, rows: Sequence[ResultRow]) -> None:
        if not rows:
            return
        values = [
            {**r.__dict__, "top_k": list(r.top_k)}
            for r in {r.image_id: r for r in rows}.values()  # last write wins within a batch
        ]
        stmt = self._insert(results_table)
        stmt = stmt.on_conflict_do_update(
            index_elements=["image_id"],
            set_={c.name: stmt.excluded[c.name] for c in results_table.c if c.name != "image_id"},
            # A photo classified once stays classified: a late error row for it (a second
            # attempt that lost its lease, a replay) never replaces the answer.
            where=sa.or_(results_table.c.status != Status.OK, stmt.excluded.status == Status.OK),
        )
        with self.begin() as conn:
            conn.execute(stmt, values)

    def result(self, image_id: str) -> ResultRow:
        with self.begin() as conn:
            row = (
                conn.execute(sa.select(results_table).where(results_table.c.image_id == image_id))
                .mappings()
                .first()
            )
        if row is None:
            raise NotFoundError(f"no result for image {image_id!r}")
        return _row(row)

    def results(
        self, session_id: str, limit: int | None = None, after: str | None = None
    ) -> list[ResultRow]:
        t = results_table
        q = sa.select(t).where(t.c.session_id == session_id)
        with self.begin() as conn:
            if after is not None:
                last = conn.execute(
                    sa.select(t.c.filename).where(
                        t.c.image_id == after, t.c.session_id == session_id
                    )
                ).first()
                if last is None:
                    raise CursorError(f"cursor {after!r} is not a row of session {session_id!r}")
                q = q.where(sa.tuple_(t.c.filename, t.c.image_id) > sa.tuple_(last[0], after))
            q = q.order_by(t.c.filename, t.c.image_id).limit(limit)
            rows = conn.execute(q).mappings().all()
        return [_row(row) for row in rows]

    def progress(self, session_id: str) -> Progress:
        session = self.get_session(session_id)
        q = sa.select(
            sa.func.count(),
            sa.func.coalesce(
                sa.func.sum(sa.case((results_table.c.status == Status.ERROR, 1), else_=0)), 0
            ),
        ).where(results_table.c.session_id == session_id)
        with self.begin() as conn:
            done, errors = conn.execute(q).one()
        return Progress(session_id, session.submitted, int(done), int(errors))

    # --- SessionStore ---------------------------------------------------------------------

    def add_session(self, session: SessionRecord, photos: Sequence[ImageMessage] = ()) -> None:
        """Record a session and its photo list in one transaction, before anything is stored."""
        with self.begin() as conn:
            conn.execute(
                sa.insert(sessions_table).values(
                    **session.__dict__,
                    state="submitting" if photos else "submitted",
                    updated_at=datetime.now(UTC),
                )
            )
            if photos:
                conn.execute(
                    sa.insert(photos_table),
                    [
                        {
                            "image_id": m.image_id,
                            "session_id": m.session_id,
                            "filename": m.filename,
                            "object_key": m.object_key,
                            "submitted_at": m.submitted_at,
                        }
                        for m in photos
                    ],
                )

    def mark_queued(self, session_id: str, image_ids: Sequence[str], finished: bool) -> None:
        """Note photos as queued (or settled with an error row); ``finished``: all are."""
        with self.begin() as conn:
            if image_ids:
                conn.execute(
                    sa.update(photos_table)
                    .where(photos_table.c.image_id.in_(list(image_ids)))
                    .values(queued=True)
                )
            values: dict[str, Any] = {"updated_at": datetime.now(UTC)}
            if finished:
                values["state"] = "submitted"
            conn.execute(
                sa.update(sessions_table)
                .where(sessions_table.c.session_id == session_id)
                .values(**values)
            )

    def stalled(self, older_than: float) -> dict[str, list[ImageMessage]]:
        """Photos of submits that stopped half way (no progress for ``older_than`` seconds):
        neither queued nor with a result row, by session."""
        cutoff = datetime.now(UTC).timestamp() - older_than
        stuck = sa.select(sessions_table.c.session_id).where(
            sessions_table.c.state == "submitting",
            sessions_table.c.updated_at < datetime.fromtimestamp(cutoff, UTC),
        )
        has_result = sa.exists().where(results_table.c.image_id == photos_table.c.image_id)
        q = (
            sa.select(photos_table)
            .where(photos_table.c.session_id.in_(stuck), ~photos_table.c.queued, ~has_result)
            .order_by(photos_table.c.session_id)
        )
        with self.begin() as conn:
            sessions = [r[0] for r in conn.execute(stuck).all()]
            rows = conn.execute(q).mappings().all()
        found: dict[str, list[ImageMessage]] = {s: [] for s in sessions}
        for r in rows:
            found[r["session_id"]].append(
                ImageMessage(
                    image_id=r["image_id"],
                    session_id=r["session_id"],
                    object_key=r["object_key"],
                    filename=r["filename"],
                    content_sha256="",
                    submitted_at=_aware(r["submitted_at"]),
                )
            )
        return found

    def get_session(self, session_id: str) -> SessionRecord:
        q = sa.select(sessions_table).where(sessions_table.c.session_id == session_id)
        with self.begin() as conn:
            row = conn.execute(q).mappings().first()
        if row is None:
            raise NotFoundError(f"no session {session_id!r}")
        return _session(row)

    def sessions(
        self, limit: int = 50, before: str | None = None, owner: str | None = None
    ) -> list[SessionRecord]:
        t = sessions_table
        q = sa.select(t) if owner is None else sa.select(t).where(t.c.owner == owner)
        with self.begin() as conn:
            if before is not None:
                last = conn.execute(
                    sa.select(t.c.created_at).where(t.c.session_id == before)
                ).first()
                if last is None:
                    raise CursorError(f"cursor {before!r} is not a session")
                q = q.where(sa.tuple_(t.c.created_at, t.c.session_id) < sa.tuple_(last[0], before))
            q = q.order_by(t.c.created_at.desc(), t.c.session_id.desc()).limit(limit)
            rows = conn.execute(q).mappings().all()
        return [_session(r) for r in rows]

    # --- IdempotencyKeys ------------------------------------------------------------------

    def claim(self, key: str) -> str | None:
        t = idempotency_table
        try:
            with self.begin() as conn:
                conn.execute(
                    sa.insert(t).values(key=key, answer=None, created_at=datetime.now(UTC))
                )
            return None
        except ResultStoreError as exc:
            if not isinstance(exc.__cause__, sa.exc.IntegrityError):
                raise
        with self.begin() as conn:
            answer = conn.execute(sa.select(t.c.answer).where(t.c.key == key)).scalar()
        return answer or ""

    def settle(self, key: str, answer: str) -> None:
        t = idempotency_table
        with self.begin() as conn:
            conn.execute(sa.update(t).where(t.c.key == key).values(answer=answer))

    def release(self, key: str) -> None:
        t = idempotency_table
        with self.begin() as conn:
            conn.execute(sa.delete(t).where(t.c.key == key, t.c.answer.is_(None)))

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
            if before is not None:
                last = conn.execute(sa.select(t.c.created_at).where(t.c.label_id == before)).first()
                if last is None:
                    raise CursorError(f"cursor {before!r} is not a label")
                q = q.where(sa.tuple_(t.c.created_at, t.c.label_id) < sa.tuple_(last[0], before))
            q = q.order_by(t.c.created_at.desc(), t.c.label_id.desc()).limit(limit)
            return [_label(r) for r in conn.execute(q).mappings().all()]

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
                "created_at": _aware(r["created_at"]),
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

    # --- Callbacks ------------------------------------------------------------------------

    def add_callback(self, session_id: str, url: str) -> None:
        with self.begin() as conn:
            conn.execute(
                sa.insert(callbacks_table).values(
                    session_id=session_id, url=url, attempts=0, next_at=datetime.now(UTC)
                )
            )

    def due_callbacks(self, now: datetime) -> list[tuple[str, str, int]]:
        t = callbacks_table
        q = sa.select(t.c.session_id, t.c.url, t.c.attempts).where(~t.c.done, t.c.next_at <= now)
        with self.begin() as conn:
            return [(r[0], r[1], int(r[2])) for r in conn.execute(q.order_by(t.c.next_at)).all()]

    def settle_callback(self, session_id: str, retry_at: datetime | None) -> None:
        t = callbacks_table
        values: dict[str, Any] = {"attempts": t.c.attempts + 1}
        values.update({"done": True} if retry_at is None else {"next_at": retry_at})
        with self.begin() as conn:
            conn.execute(sa.update(t).where(t.c.session_id == session_id).values(**values))

    # --- Heartbeats -----------------------------------------------------------------------

    def beat(self, worker_id: str, kind: str, info: dict[str, Any]) -> None:
        stmt = self._insert(heartbeats_table).values(
            worker_id=worker_id, kind=kind, beat_at=datetime.now(UTC), info=info
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["worker_id"],
            set_={
                "kind": stmt.excluded.kind,
                "beat_at": stmt.excluded.beat_at,
                "info": stmt.excluded.info,
            },
        )
        with self.begin() as conn:
            conn.execute(stmt)

    def latest(self) -> list[tuple[str, str, datetime, dict[str, Any]]]:
        q = sa.select(heartbeats_table).order_by(heartbeats_table.c.beat_at.desc())
        with self.begin() as conn:
            rows = conn.execute(q).all()
        return [(r.worker_id, r.kind, _aware(r.beat_at), dict(r.info or {})) for r in rows]

    def health(self) -> Health:
        try:
            with self.begin() as conn:
                conn.execute(sa.select(1))
        except ResultStoreError as exc:
            return Health("results database", False, str(exc))
        url = self.engine.url
        where = (
            url.database if self.dialect == "sqlite" else f"{url.host}:{url.port}/{url.database}"
        )
        return Health("results database", True, f"{self.dialect} {where}")
