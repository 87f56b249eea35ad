"""The housekeeping of every consumer of the queue: its heartbeat and its periodic chores.

The embedded worker and the Spark job's driver run the same ``Housekeeping`` from their own
loops: a heartbeat about once a second (what ``status`` and the sidebar read), and every
``chores_seconds`` the chores the service gives it (finish stalled submits, free the leases
of dead workers). Neither may end the loop: a backend restarting only costs a log line.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable

from fruitstream.errors import FruitstreamError
from fruitstream.ports import Heartbeats

log = logging.getLogger(__name__)

# How often at most a consumer runs its chores (``FruitService.repair`` and lease reclaim).
HOUSEKEEPING_SECONDS = 30.0


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident() % 100000}"


class Housekeeping:
    """Heartbeat and chores of one consumer, called from its loop with ``tick``."""

    def __init__(
        self,
        heartbeats: Heartbeats | None,
        name: str,
        kind: str,
        chores: Callable[[], object] | None = None,
        chores_seconds: float = HOUSEKEEPING_SECONDS,
        beat_seconds: float = 1.0,
    ) -> None:
        self.heartbeats = heartbeats
        self.name = name
        self.kind = kind
        self.chores = chores
        self.chores_seconds = chores_seconds
        self.beat_seconds = beat_seconds
        self._last_beat = 0.0
        self._last_chores = 0.0

    def tick(self, info: dict[str, object]) -> None:
        """Beat when a beat is due, then run the chores when they are due."""
        self.beat(info)
        due = time.time() - self._last_chores >= self.chores_seconds
        if self.chores is None or not due:
            return
        self._last_chores = time.time()
        try:
            self.chores()
        except Exception as exc:  # a backend restarting: the consumer goes on
            log.warning("housekeeping failed: %s", exc)

    def beat(self, info: dict[str, object], force: bool = False, state: str = "running") -> None:
        if self.heartbeats is None or (
            not force and time.time() - self._last_beat < self.beat_seconds
        ):
            return
        self._last_beat = time.time()
        mine = {"pid": os.getpid(), "host": socket.gethostname(), "state": state}
        try:
            self.heartbeats.beat(self.name, self.kind, {**info, **mine})
        except FruitstreamError as exc:
            log.warning("heartbeat failed: %s", exc)

    def stopped(self, info: dict[str, object]) -> None:
        """The last beat, saying the consumer stopped (so nobody waits on it)."""
        self.beat(info, force=True, state="stopped")
