"""Operations' records in SQL: idempotency keys, batch callbacks, worker heartbeats."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from fruitstream.adapters.sql_engine import SqlEngine, aware
from fruitstream.adapters.sql_schema import callbacks_table, heartbeats_table, idempotency_table
from fruitstream.errors import ResultStoreError
from fruitstream.ports import KeyClaim


class SqlOps(SqlEngine):
    """IdempotencyKeys, Callbacks and Heartbeats over their three tables."""

    # --- IdempotencyKeys ------------------------------------------------------------------

    def claim(self, key: str, fingerprint: str = "") -> KeyClaim | None:
        t = idempotency_table
        try:
            with self.begin() as conn:
                conn.execute(
                    sa.insert(t).values(
                        key=key, answer=None, created_at=datetime.now(UTC), fingerprint=fingerprint
                    )
                )
            return None
        except ResultStoreError as exc:
            if not isinstance(exc.__cause__, sa.exc.IntegrityError):
                raise
        with self.begin() as conn:
            row = conn.execute(sa.select(t).where(t.c.key == key)).mappings().first()
        if row is None:  # released between the two: claim it now
            return self.claim(key, fingerprint)
        return KeyClaim(
            fingerprint=row["fingerprint"] or "",
            claimed_at=aware(row["created_at"]),
            session_id=row["session_id"],
            answer=row["answer"],
        )

    def bind(self, key: str, session_id: str) -> None:
        t = idempotency_table
        with self.begin() as conn:
            conn.execute(
                sa.update(t)
                .where(t.c.key == key, t.c.answer.is_(None))
                .values(session_id=session_id)
            )

    def settle(self, key: str, answer: str) -> None:
        t = idempotency_table
        with self.begin() as conn:
            conn.execute(sa.update(t).where(t.c.key == key).values(answer=answer))

    def release(self, key: str, claimed_before: datetime | None = None) -> None:
        t = idempotency_table
        where = [t.c.key == key, t.c.answer.is_(None)]
        if claimed_before is not None:
            where.append(t.c.created_at <= claimed_before)
        with self.begin() as conn:
            conn.execute(sa.delete(t).where(*where))

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
        return [(r.worker_id, r.kind, aware(r.beat_at), dict(r.info or {})) for r in rows]
