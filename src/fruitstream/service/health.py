"""Health: which consumers are alive, each backend's state, and the lines a person reads."""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from datetime import UTC, datetime

from fruitstream.core.precision import cpu_features
from fruitstream.domain import BASE_VERSION
from fruitstream.errors import BackendError, FruitstreamError
from fruitstream.housekeeping import process_started, process_state
from fruitstream.model.bundle import ModelBundle
from fruitstream.ports import Health, Heartbeats, ObjectStore, Publisher, ResultsDatabase

# A worker whose last heartbeat is older than this is reported as down.
HEARTBEAT_STALE_SECONDS = 15.0
# The backends whose state decides whether the service is ready (workers may come later).
CORE_BACKENDS = ("storage", "queue", "results database")

Beat = tuple[str, str, datetime, dict[str, object]]


def is_alive(beat_at: datetime, info: dict[str, object], me_running: bool | None = None) -> bool:
    """Whether a heartbeat stands for a live consumer.

    A clean stop writes ``state: stopped``; a killed process cannot, so one on this machine
    is looked up rather than trusted for the whole heartbeat window: a pid that is gone, a
    zombie (killed, not yet reaped: ``kill(pid, 0)`` still answers), or a pid now held by a
    process started later than the one that beat (a restart reused it) is dead. A beat of
    this very process stands only for a worker that still runs here: ``me_running`` (None:
    nobody here knows, the beat is taken as it is).
    """
    if (datetime.now(UTC) - beat_at).total_seconds() >= HEARTBEAT_STALE_SECONDS:
        return False
    if info.get("state") == "stopped":
        return False
    pid, started = info.get("pid"), info.get("started")
    if not isinstance(pid, int) or str(info.get("host")) != socket.gethostname():
        return True  # another machine's: only its beats can tell
    if pid == os.getpid() and started in (None, process_started()):
        return True if me_running is None else me_running
    found = process_state(pid)
    if found is None:
        return not _gone(socket.gethostname(), pid)  # no /proc here: the signal test alone
    state, since = found
    if state in ("Z", "X", "gone"):
        return False
    return started is None or started == since


def owner_is_dead(owner: str) -> bool:
    """Whether a lease owner (``host:pid:thread``, see ``worker_id``) is a process of this
    machine that no longer runs (gone, or a zombie); owners elsewhere are left to lease
    expiry."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if not pid.isdigit() or host != socket.gethostname():
        return False
    found = process_state(int(pid))
    if found is not None:
        return found[0] in ("Z", "X", "gone")
    return _gone(host, int(pid))


def _gone(host: str, pid: int) -> bool:
    """Whether ``pid`` on ``host`` is known to have ended (the signal test, for systems
    without ``/proc``): only this machine can tell."""
    if host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, under another user
        return False
    return False


def live_workers(heartbeats: Heartbeats, me_running: bool | None = None) -> list[Beat]:
    """Workers and Spark jobs that beat recently, have not said they stopped, and (when on
    this machine) are still running; ``me_running``: whether this process's own worker
    runs (see ``is_alive``)."""
    try:
        beats = heartbeats.latest()
    except BackendError:
        return []
    return [b for b in beats if is_alive(b[2], b[3], me_running)]


_FIGURES = {
    "rate": "{:.1f} photos/s",
    "lag": "lag {:,} messages",
    "input_rate": "input {:.1f} rows/s",
    "processed_rate": "processed {:.1f} rows/s",
}


def figures(extra: dict[str, object]) -> tuple[str, ...]:
    """The lines a person reads under a backend's state, from its machine figures."""
    return tuple(
        fmt.format(extra[key]) for key, fmt in _FIGURES.items() if extra.get(key) is not None
    )


def workers_health(live: Sequence[Beat]) -> Health:
    """The consumers: how many beat, of which kind, and their rates (Spark: its Kafka lag)."""
    if not live:
        return Health("workers", False, "no worker heartbeat in the last 15 s (none running)")
    extra: dict[str, object] = {"rate": sum(float(str(b[3].get("rate", 0))) for b in live)}
    spark = [b[3] for b in live if b[1] == "spark"]
    if spark:  # the streaming query's own figures: Kafka lag and rates
        extra = {
            k: spark[0][k]
            for k in ("lag", "input_rate", "processed_rate")
            if spark[0].get(k) is not None
        }
    kinds = ", ".join(sorted({b[1] for b in live}))
    detail = f"{len(live)} alive ({kinds}), last beat {live[0][2]:%H:%M:%S} UTC"
    return Health("workers", True, detail, extra, figures(extra))


def backends_health(
    store: ObjectStore,
    publisher: Publisher,
    db: ResultsDatabase,
    me_running: bool | None = None,
) -> list[Health]:
    """Storage, queue, results database and the consumers, in that order."""
    live = live_workers(db, me_running)
    return [store.health(), publisher.health(), db.health(), workers_health(live)]


def model_health(bundle: ModelBundle | FruitstreamError, live: str | None = None) -> Health:
    """The configured model, the live version adapted from it (``fruitstream models``) and the
    graph this machine runs, or why it cannot be loaded."""
    if isinstance(bundle, FruitstreamError):
        return Health("model", False, str(bundle))
    adapted = f" + adapted version {live}" if live and live != BASE_VERSION else ""
    return Health(
        "model",
        True,
        f"{bundle.name} v{bundle.version}{adapted}, {bundle.precision} graph",
        {"precision": bundle.precision, "live_version": live or BASE_VERSION},
        (bundle.precision_reason, f"CPU: {cpu_features().describe()}"),
    )


def is_ready(checks: Sequence[Health]) -> bool:
    """Storage, queue and results database answer, and no photo waits with nothing alive
    to classify it (a batch would sit there: a load balancer should look elsewhere)."""
    if not all(h.ok for h in checks if h.name in CORE_BACKENDS):
        return False
    workers = next((h for h in checks if h.name == "workers"), None)
    waiting = queue_lag(checks)
    return not (workers is not None and not workers.ok and waiting is not None and waiting > 0)


def queue_lag(checks: Sequence[Health]) -> float | None:
    """Photos waiting: the Spark job's Kafka lag, or the embedded queue's depth."""
    for name, key in (("workers", "lag"), ("queue", "depth")):
        for h in checks:
            value = (h.extra or {}).get(key)
            if h.name == name and isinstance(value, int | float):
                return float(value)
    return None
