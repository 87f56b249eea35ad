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

from fruitstream.domain import (
    ImageMessage,
    Progress,
    ResultRow,
    SessionRecord,
    Status,
    optional_columns,
    result_columns,
)
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
    # "submitting" until every photo is queued or has its error row, then "submitted"; a
    # session left "submitting" by a crashed submitter is finished by ``Pipeline.repair``.
    sa.Column("state", sa.String(16)),
    sa.Column("updated_at", sa.DateTime(timezone=True)),
)

# The photo list of each session, written before any photo is stored: what ``repair`` needs
# to finish a submit that was killed half way.
photos_table = sa.Table(
    "photos",
    metadata,
    sa.Column("image_id", sa.String(64), primary_key=True),
    sa.Column("session_id", sa.String(64), nullable=False, index=True),
    sa.Column("filename", sa.Text, nullable=False),
    sa.Column("object_key", sa.Text, nullable=False),
    sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("queued", sa.Boolean, nullable=False, server_default=sa.false()),
)

_SQL_TYPES: dict[str, Any] = {
    "text": sa.Text,
    "float": sa.Float,
    "bool": sa.Boolean,
    "timestamp": sa.DateTime(timezone=True),
    "json": sa.JSON,
}

# One column per ``ResultRow`` field, in contract order. Text of any length: a file name is
# the user's, and one over a limit must not lose its photo's row.
results_table = sa.Table(
    "results",
    metadata,
    *(
        sa.Column(
            name,
            _SQL_TYPES[kind],
            primary_key=name == "image_id",
            index=name == "session_id",
            nullable=name in optional_columns(),
        )
        for name, kind in result_columns()
    ),
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
    sa.Column("last_error", sa.Text),
)

# Columns added since the first release: ``create_schema`` adds them to an older database.
_ADDED_COLUMNS = [
    (sessions_table, "state"),
    (sessions_table, "updated_at"),
    (queue_table, "last_error"),
]
# Columns that were VARCHAR(n) and are TEXT now (PostgreSQL enforces the length).
_WIDENED_COLUMNS = [(results_table, "filename"), (results_table, "object_key")]


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _session(row: Any) -> SessionRecord:
    return SessionRecord(
        session_id=row["session_id"],
        created_at=_aware(row["created_at"]),
        submitted=row["submitted"],
        name=row["name"],
    )


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
            except (sa.exc.OperationalError, sa.exc.IntegrityError, sa.exc.ProgrammingError):
                # Another process created them between the check and the CREATE: look again.
                metadata.create_all(self.engine)
            self._migrate()
            self._ready = True

    def _migrate(self) -> None:
        """Bring a database made by an older release up to this schema (idempotent)."""
        inspector = sa.inspect(self.engine)
        with self.engine.begin() as conn:
            for table, name in _ADDED_COLUMNS:
                have = {c["name"] for c in inspector.get_columns(table.name)}
                if name not in have:
                    column = table.c[name]
                    kind = column.type.compile(dialect=self.engine.dialect)
                    conn.execute(sa.text(f"ALTER TABLE {table.name} ADD COLUMN {name} {kind}"))
            if self.dialect == "postgresql":
                for table, name in _WIDENED_COLUMNS:
                    found = [c for c in inspector.get_columns(table.name) if c["name"] == name]
                    if found and getattr(found[0]["type"], "length", None) is not None:
                        conn.execute(
                            sa.text(f"ALTER TABLE {table.name} ALTER COLUMN {name} TYPE TEXT")
                        )

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

    def sessions(self, limit: int = 50) -> list[SessionRecord]:
        q = sa.select(sessions_table).order_by(sessions_table.c.created_at.desc()).limit(limit)
        with self.begin() as conn:
            rows = conn.execute(q).mappings().all()
        return [_session(r) for r in rows]

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
