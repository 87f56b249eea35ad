"""The housekeeping of every consumer of the queue: its heartbeat and its periodic chores.

The embedded worker and the Spark job's driver run the same ``Housekeeping`` from their own
loops: a heartbeat about once a second (what ``status`` and the sidebar read), and every
``chores_seconds`` the chores the service gives it (finish stalled submits, free the leases
of dead workers). Neither may end the loop: a backend restarting only costs a log line.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from fruitstream.errors import FruitstreamError
from fruitstream.ports import Heartbeats

log = logging.getLogger(__name__)

# How often at most a consumer runs its chores (``FruitService.repair`` and lease reclaim).
HOUSEKEEPING_SECONDS = 30.0


def process_started(pid: int | None = None) -> int | None:
    """When a process of this machine started (this one's when ``pid`` is None), in clock
    ticks since boot (``/proc``), so that a pid reused by a later process is told apart;
    None where ``/proc`` is absent."""
    return _started(os.getpid()) if pid is None else _started.__wrapped__(pid)


@functools.lru_cache(maxsize=4)  # this process's own start never changes (keyed by pid)
def _started(pid: int) -> int | None:
    found = process_state(pid)
    return None if found is None or found[0] == "gone" else found[1]


def process_state(pid: int) -> tuple[str, int] | None:
    """``(state, start time)`` of ``pid`` from ``/proc/<pid>/stat``: ``("gone", 0)`` when
    there is no such process, None when this system has no ``/proc``."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return ("gone", 0) if Path("/proc/self/stat").exists() else None
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces: the fields follow its last ")".
    fields = text.rpartition(")")[2].split()
    return fields[0], int(fields[19])


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
        mine = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "state": state,
            "started": process_started(),
        }
        try:
            self.heartbeats.beat(self.name, self.kind, {**info, **mine})
        except FruitstreamError as exc:
            log.warning("heartbeat failed: %s", exc)

    def stopped(self, info: dict[str, object]) -> None:
        """The last beat, saying the consumer stopped (so nobody waits on it)."""
        self.beat(info, force=True, state="stopped")
