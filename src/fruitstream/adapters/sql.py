"""Results, sessions and heartbeats in SQL (SQLAlchemy Core): SQLite by default, PostgreSQL too."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from fruitstream.domain import STATUS_ERROR, Progress, ResultRow, SessionRecord
from fruitstream.errors import NotFoundError, ResultStoreError
from fruitstream.ports import Health

metadata = sa.MetaData()

sessions_table = sa.Table(
    "sessions",
    metadata,
    sa.Column("session_id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False, server_default=""),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("submitted", sa.Integer, nullable=False),
)

results_table = sa.Table(
    "results",
    metadata,
    sa.Column("image_id", sa.String(64), primary_key=True),
    sa.Column("session_id", sa.String(64), nullable=False, index=True),
    sa.Column("filename", sa.String(300), nullable=False),
    sa.Column("object_key", sa.String(600), nullable=False),
    sa.Column("label", sa.String(64)),
    sa.Column("confidence", sa.Float),
    sa.Column("known", sa.Boolean),
    sa.Column("top_k", sa.JSON, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("model_version", sa.String(100), nullable=False),
    sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("latency_ms", sa.Float),
)

heartbeats_table = sa.Table(
    "heartbeats",
    metadata,
    sa.Column("worker_id", sa.String(100), primary_key=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("beat_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("info", sa.JSON, nullable=False),
)

# The embedded queue lives in the same database (adapters.local_queue).
queue_table = sa.Table(
    "queue",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("image_id", sa.String(64), nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Column("enqueued_at", sa.Float, nullable=False),
    sa.Column("leased_until", sa.Float, index=True),
    sa.Column("lease_owner", sa.String(100)),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _describe(exc: sa.exc.SQLAlchemyError) -> str:
    """The driver's first line, never the statement's parameters or the URL."""
    orig = getattr(exc, "orig", None)
    text = str(orig) if orig is not None else type(exc).__name__
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL and a busy timeout for many processes at once."""
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise ResultStoreError("FRUITSTREAM_DATABASE_URL is not a valid database URL") from exc
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    try:
        return sa.create_engine(parsed, pool_pre_ping=True)
    except ImportError as exc:
        from fruitstream.errors import MissingDependencyError

        raise MissingDependencyError("psycopg", "distributed") from exc


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
            try:
                metadata.create_all(self.engine)
            except sa.exc.OperationalError:
                # Another process created them between the check and the CREATE: look again.
                metadata.create_all(self.engine)
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
        )
        with self.begin() as conn:
            conn.execute(stmt, values)

    def results(self, session_id: str) -> list[ResultRow]:
        q = (
            sa.select(results_table)
            .where(results_table.c.session_id == session_id)
            .order_by(results_table.c.submitted_at, results_table.c.filename)
        )
        with self.begin() as conn:
            rows = conn.execute(q).mappings().all()
        return [
            ResultRow(
                **{
                    **row,
                    "submitted_at": _aware(row["submitted_at"]),
                    "processed_at": _aware(row["processed_at"]),
                    "top_k": list(row["top_k"] or []),
                }
            )
            for row in rows
        ]

    def progress(self, session_id: str) -> Progress:
        session = self.get_session(session_id)
        q = sa.select(
            sa.func.count(),
            sa.func.coalesce(
                sa.func.sum(sa.case((results_table.c.status == STATUS_ERROR, 1), else_=0)), 0
            ),
        ).where(results_table.c.session_id == session_id)
        with self.begin() as conn:
            done, errors = conn.execute(q).one()
        return Progress(session_id, session.submitted, int(done), int(errors))

    # --- SessionStore ---------------------------------------------------------------------

    def add_session(self, session: SessionRecord) -> None:
        with self.begin() as conn:
            conn.execute(sa.insert(sessions_table).values(**session.__dict__))

    def get_session(self, session_id: str) -> SessionRecord:
        q = sa.select(sessions_table).where(sessions_table.c.session_id == session_id)
        with self.begin() as conn:
            row = conn.execute(q).mappings().first()
        if row is None:
            raise NotFoundError(f"no session {session_id!r}")
        return SessionRecord(**{**row, "created_at": _aware(row["created_at"])})

    def sessions(self, limit: int = 50) -> list[SessionRecord]:
        q = sa.select(sessions_table).order_by(sessions_table.c.created_at.desc()).limit(limit)
        with self.begin() as conn:
            rows = conn.execute(q).mappings().all()
        return [SessionRecord(**{**r, "created_at": _aware(r["created_at"])}) for r in rows]

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
