"""Durable embedded queue: a table in the results database, with leases instead of deletes.

A taken message is leased to one worker; it is deleted only when acknowledged, after its
result is written. A worker killed mid-batch leaves leases that expire, and the messages go
to the next taker: nothing submitted is lost, and the result upsert keeps one row per image.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import sqlalchemy as sa

from fruitstream.adapters.sql_engine import SqlEngine
from fruitstream.adapters.sql_schema import queue_table
from fruitstream.domain import ImageMessage
from fruitstream.errors import QueueError, ResultStoreError
from fruitstream.ports import Delivery, Health

__all__ = ["SqlQueue", "queue_table"]  # the table is sql_schema's, named here for the queue's users


class _Doorbell:
    """Rung when this process publishes, so that its own workers wake at once.

    Workers in other processes cannot hear it and poll the table (every 0.1 s).
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._rings = 0

    @property
    def rings(self) -> int:
        return self._rings

    def ring(self) -> None:
        with self._cond:
            self._rings += 1
            self._cond.notify_all()

    def wait(self, seen: int, timeout: float) -> None:
        """Until a ring after ``seen`` rings, or ``timeout`` seconds."""
        with self._cond:
            self._cond.wait_for(lambda: self._rings != seen, timeout)


_DOORBELL = _Doorbell()


class SqlQueue:
    """Publisher and Consumer over ``queue_table``, on the results database's engine (its
    ``SqlDatabase``); each call is a transaction of its own."""

    def __init__(self, db: SqlEngine, owner: str = "", lease_seconds: float = 10.0) -> None:
        self.db = db
        self.owner = owner
        self.lease_seconds = lease_seconds

    def publish(self, messages: Sequence[ImageMessage]) -> dict[str, str]:
        if not messages:
            return {}
        now = time.time()
        rows = [
            {"image_id": m.image_id, "payload": m.to_json(), "enqueued_at": now} for m in messages
        ]
        try:
            with self.db.begin() as conn:
                conn.execute(sa.insert(queue_table), rows)
        except ResultStoreError as exc:
            return {m.image_id: f"could not queue: {exc}" for m in messages}
        _DOORBELL.ring()
        return {}

    def take(self, max_messages: int, timeout: float = 0.0) -> list[Delivery]:
        """Lease up to ``max_messages``, waiting up to ``timeout`` seconds for the first."""
        deadline = time.monotonic() + timeout
        while True:
            # Read before looking, so that a publish during the look still wakes the wait.
            seen = _DOORBELL.rings
            got = self._lease(max_messages)
            if got or time.monotonic() >= deadline:
                return got
            _DOORBELL.wait(seen, min(0.1, max(0.0, deadline - time.monotonic())))

    def _lease(self, n: int) -> list[Delivery]:
        now = time.time()
        free = sa.or_(queue_table.c.leased_until.is_(None), queue_table.c.leased_until < now)
        pick = sa.select(queue_table.c.seq).where(free).order_by(queue_table.c.seq).limit(n)
        if self.db.dialect == "postgresql":
            pick = pick.with_for_update(skip_locked=True)
        stmt = (
            sa.update(queue_table)
            .where(queue_table.c.seq.in_(pick.scalar_subquery()))
            .values(
                leased_until=now + self.lease_seconds,
                lease_owner=self.owner,
                attempts=queue_table.c.attempts + 1,
            )
            .returning(
                queue_table.c.seq,
                queue_table.c.payload,
                queue_table.c.attempts,
                queue_table.c.last_error,
            )
        )
        try:
            with self.db.begin() as conn:
                rows = sorted(conn.execute(stmt).all(), key=lambda r: r.seq)
        except ResultStoreError as exc:
            raise QueueError(f"cannot take from the local queue: {exc}") from exc
        return [
            Delivery(
                raw=bytes(r.payload), handle=r.seq, attempts=r.attempts, last_error=r.last_error
            )
            for r in rows
        ]

    def extend(
        self, deliveries: Sequence[Delivery], seconds: float, reason: str | None = None
    ) -> None:
        """Move the lease end of messages this consumer still holds; note why, when told."""
        if not deliveries:
            return
        values: dict[str, object] = {"leased_until": time.time() + seconds}
        if reason is not None:
            values["last_error"] = reason
        try:
            with self.db.begin() as conn:
                conn.execute(
                    sa.update(queue_table)
                    .where(
                        queue_table.c.seq.in_([d.handle for d in deliveries]),
                        queue_table.c.lease_owner == self.owner,
                    )
                    .values(**values)
                )
        except ResultStoreError as exc:
            raise QueueError(f"cannot extend leases on the local queue: {exc}") from exc

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        seqs = [d.handle for d in deliveries]
        try:
            with self.db.begin() as conn:
                conn.execute(
                    sa.delete(queue_table).where(
                        queue_table.c.seq.in_(seqs), queue_table.c.lease_owner == self.owner
                    )
                )
        except ResultStoreError as exc:
            raise QueueError(f"cannot acknowledge on the local queue: {exc}") from exc

    def reclaim(self, is_dead: Callable[[str], bool]) -> int:
        """Free at once the leases of owners ``is_dead`` says are gone (a worker killed on
        this machine), instead of waiting for them to expire; returns how many."""
        now = time.time()
        held = queue_table.c.leased_until >= now
        try:
            with self.db.begin() as conn:
                owners = conn.execute(
                    sa.select(queue_table.c.lease_owner).where(held).distinct()
                ).scalars()
                dead = [o for o in owners if o and o != self.owner and is_dead(o)]
                if not dead:
                    return 0
                freed = conn.execute(
                    sa.update(queue_table)
                    .where(held, queue_table.c.lease_owner.in_(dead))
                    .values(leased_until=None, lease_owner=None)
                )
        except ResultStoreError as exc:
            raise QueueError(f"cannot reclaim leases on the local queue: {exc}") from exc
        return int(freed.rowcount or 0)

    def depth(self) -> int:
        with self.db.begin() as conn:
            return int(
                conn.execute(sa.select(sa.func.count()).select_from(queue_table)).scalar_one()
            )

    def health(self) -> Health:
        try:
            depth = self.depth()
        except ResultStoreError as exc:
            return Health("queue", False, str(exc))
        return Health("queue", True, f"local queue, {depth} waiting", {"depth": depth})
