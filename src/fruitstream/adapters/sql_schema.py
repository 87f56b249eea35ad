"""The results database's schema and its migrations: tables, engines, upgrades in place.

Every table of the database is declared here, the embedded queue's too (``queue_table``, for
``local_queue``), and every column added since the first release is in ``ADDED_COLUMNS``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from fruitstream.domain import optional_columns, result_columns
from fruitstream.errors import ResultStoreError

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
    # Who submitted it (an API token's hashed id; "" for the CLI and the app).
    sa.Column("owner", sa.String(64), nullable=False, server_default="", index=True),
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
    # Its place in the submit (the receipts' order); null in sessions of older releases.
    sa.Column("position", sa.Integer),
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

# Answers by idempotency key (hashed with the caller's id): a batch sent twice is one batch.
idempotency_table = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("answer", sa.Text),  # null while the first request runs
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    # What the request was (a hash of its name, callback and files): another request with
    # the same key is refused, not answered with the first one's answer.
    sa.Column("fingerprint", sa.String(64)),
    # The batch the request makes, recorded before any photo is stored: a retry after the
    # claimer died answers with that batch as repair left it.
    sa.Column("session_id", sa.String(64)),
)

# Completion callbacks still to deliver (POST /v1/batches?callback=URL).
callbacks_table = sa.Table(
    "callbacks",
    metadata,
    sa.Column("session_id", sa.String(64), primary_key=True),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("done", sa.Boolean, nullable=False, server_default=sa.false(), index=True),
)

# People's labels of photos: every one kept (the history), the latest per content current.
labels_table = sa.Table(
    "labels",
    metadata,
    sa.Column("label_id", sa.String(64), primary_key=True),
    sa.Column("content_sha256", sa.String(64), nullable=False, index=True),
    sa.Column("object_key", sa.Text, nullable=False),
    sa.Column("label", sa.String(64), nullable=False),
    sa.Column("model_label", sa.String(64)),
    sa.Column("model_known", sa.Boolean),
    sa.Column("model_version", sa.String(100), nullable=False),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("image_id", sa.String(64)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
)

# The versions ``fruitstream adapt`` made (their heads are in the object store).
model_versions_table = sa.Table(
    "model_versions",
    metadata,
    sa.Column("version", sa.String(64), primary_key=True),
    sa.Column("parent", sa.String(64), nullable=False),
    sa.Column("base_model", sa.String(100), nullable=False),
    sa.Column("labels_used", sa.Integer, nullable=False),
    sa.Column("classes", sa.JSON, nullable=False),
    sa.Column("method", sa.String(32), nullable=False),
    sa.Column("figures", sa.JSON, nullable=False),
    sa.Column("refused", sa.JSON, nullable=False),
    sa.Column("seconds", sa.Float, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

# Every switch of the live version, in order: the newest row says which one is live.
model_activations_table = sa.Table(
    "model_activations",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("version", sa.String(64), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
)

# The embedded queue (``local_queue.SqlQueue``): a table of the results database, on the
# same engine, in transactions of its own. A submit records its session and photo list, then
# chunk by chunk publishes (one transaction: all of the chunk's messages or none) and marks
# the chunk queued, each step its own transaction; a submit killed in between is finished by
# ``Pipeline.repair`` from the photo list. A worker writes its results, then deletes (acks)
# their messages: two transactions again, and a replay only rewrites the same rows.
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
ADDED_COLUMNS: list[tuple[sa.Table, str]] = [
    (sessions_table, "state"),
    (sessions_table, "updated_at"),
    (sessions_table, "owner"),
    (queue_table, "last_error"),
    (photos_table, "position"),
    (idempotency_table, "fingerprint"),
    (idempotency_table, "session_id"),
]
# Columns that were VARCHAR(n) and are TEXT now (PostgreSQL enforces the length).
WIDENED_COLUMNS = [(results_table, "filename"), (results_table, "object_key")]


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


def create_tables(engine: Engine) -> None:
    """Create missing tables (idempotent; processes may race to do it), then migrate."""
    try:
        metadata.create_all(engine)
    except (sa.exc.OperationalError, sa.exc.IntegrityError, sa.exc.ProgrammingError):
        # Another process created them between the check and the CREATE: look again.
        metadata.create_all(engine)
    migrate(engine)


def migrate(engine: Engine) -> None:
    """Bring a database made by an older release up to this schema (idempotent)."""
    inspector = sa.inspect(engine)
    with engine.begin() as conn:
        for table, name in ADDED_COLUMNS:
            have = {c["name"] for c in inspector.get_columns(table.name)}
            if name not in have:
                column = table.c[name]
                kind = column.type.compile(dialect=engine.dialect)
                conn.execute(sa.text(f"ALTER TABLE {table.name} ADD COLUMN {name} {kind}"))
        if engine.dialect.name == "postgresql":
            for table, name in WIDENED_COLUMNS:
                found = [c for c in inspector.get_columns(table.name) if c["name"] == name]
                if found and getattr(found[0]["type"], "length", None) is not None:
                    conn.execute(sa.text(f"ALTER TABLE {table.name} ALTER COLUMN {name} TYPE TEXT"))
