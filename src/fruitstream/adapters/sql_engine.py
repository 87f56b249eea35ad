"""The SQL repositories' shared plumbing: one engine, its transactions, errors, paging, health."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Self

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from fruitstream.adapters.sql_schema import create_tables, make_engine
from fruitstream.errors import CursorError, ResultStoreError
from fruitstream.ports import Health


def aware(value: datetime) -> datetime:
    """A timestamp read back (SQLite drops the zone) as UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def describe(exc: sa.exc.SQLAlchemyError) -> str:
    """The driver's first line, never the statement's parameters or the URL."""
    orig = getattr(exc, "orig", None)
    text = str(orig) if orig is not None else type(exc).__name__
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def keyset_page(
    conn: Connection,
    q: sa.Select[Any],
    order: tuple[sa.ColumnElement[Any], sa.ColumnElement[Any]],
    limit: int | None,
    cursor: str | None,
    *,
    missing: str,
    descending: bool = False,
    scope: Sequence[sa.ColumnElement[bool]] = (),
) -> Sequence[sa.RowMapping]:
    """A page of ``q`` in ``order`` (a sort column, then the key), ``limit`` rows past
    ``cursor``: the key of the previous page's last row; ``CursorError(missing)`` when no row
    within ``scope`` has that key."""
    sort, key = order
    if cursor is not None:
        last = conn.execute(sa.select(sort).where(key == cursor, *scope)).first()
        if last is None:
            raise CursorError(missing)
        row, seen = sa.tuple_(sort, key), sa.tuple_(last[0], cursor)
        q = q.where(row < seen if descending else row > seen)
    q = q.order_by(*((c.desc() for c in order) if descending else order)).limit(limit)
    return conn.execute(q).mappings().all()


class SqlEngine:
    """One SQLAlchemy engine: transactions, the schema made on first use, upserts, health."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._ready = False
        self._schema_lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str) -> Self:
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
            raise ResultStoreError(f"results database error: {describe(exc)}") from exc

    def create_schema(self) -> None:
        """Create missing tables (idempotent; threads and processes may race to do it)."""
        with self._schema_lock:
            if self._ready:
                return
            create_tables(self.engine)
            self._ready = True

    def _insert(self, table: sa.Table) -> Any:
        """An INSERT of the engine's dialect, the one with ``on_conflict_do_update``."""
        if self.dialect == "postgresql":
            from sqlalchemy.dialects import postgresql

            return postgresql.insert(table)
        from sqlalchemy.dialects import sqlite

        return sqlite.insert(table)

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
