"""Who classifies the queue: this process's worker thread, worker processes, their chores,
and the sender of batch-complete callbacks."""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable

from fruitstream.config import Settings
from fruitstream.errors import ConfigError
from fruitstream.housekeeping import HOUSEKEEPING_SECONDS, Housekeeping, worker_id
from fruitstream.ports import PhotoClassifier
from fruitstream.service.backends import Backends
from fruitstream.service.callbacks import AllowedCallback, CallbackSender, CallbackSettings
from fruitstream.service.health import live_workers, owner_is_dead
from fruitstream.worker import Worker, WorkerStats

log = logging.getLogger(__name__)


# How often a serving process checks that something classifies its queue: a heartbeat goes
# stale in 15 s, a killed worker of this machine is seen at once.
WATCH_SECONDS = 2.0


class Workers:
    """The worker policy of one process, decided here for every entrypoint.

    With the embedded queue, a worker thread of this process is started whenever a batch is
    submitted or waited for and no worker is alive, unless ``start_workers`` is off (a
    server whose batches ``fruitstream worker`` processes take) or the caller asked for
    queue-only. With Kafka the Spark job classifies; nothing is started here.
    """

    def __init__(
        self,
        settings: Settings,
        backends: Backends,
        classifier: Callable[[], PhotoClassifier],
        follow: Callable[[PhotoClassifier], None],
        repair: Callable[[], object],
        start_workers: bool = True,
        watch_seconds: float = WATCH_SECONDS,
    ) -> None:
        self.settings = settings
        self.backends = backends
        self._classifier = classifier
        self._follow = follow
        self._repair = repair
        self.start_workers = start_workers
        self.watch_seconds = watch_seconds
        self._thread: threading.Thread | None = None
        self._callbacks: threading.Thread | None = None
        self._watch: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def can_classify_here(self) -> bool:
        """Whether this process can classify queued photos itself (the embedded queue)."""
        return self.backends.consumes_locally

    def running_here(self) -> bool:
        """Whether this process's own worker thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def alive(self) -> bool:
        """This process has a running worker, or a worker or Spark job elsewhere beat
        recently and runs (a beat of this process counts only while its thread runs)."""
        here = self.running_here()
        return here or bool(live_workers(self.backends.db, me_running=here))

    def needed(self, queue_only: bool = False) -> bool:
        """A batch was submitted or is waited for: start a worker here if the policy says so
        and none is alive; whether one was started."""
        if queue_only or not self.start_workers:
            return False
        return self.ensure()

    def ensure(self) -> bool:
        """Start a worker thread in this process when nothing classifies the embedded queue;
        returns whether one was started. It runs until ``stop``."""
        if not self.can_classify_here():
            return False
        with self._lock:
            if self.alive():
                return False
            worker = self.worker()
            worker.announce()  # before the thread: its warm-up can outlast the first page
            self._thread = threading.Thread(
                target=worker.run, args=(self._stop,), name="fruitstream-worker", daemon=True
            )
            self._thread.start()
            return True

    def worker(self, classifier: PhotoClassifier | None = None) -> Worker:
        """A worker over the embedded queue, whose chores free the leases of dead workers
        and repair stalled submits (``ConfigError`` with Kafka: the Spark job consumes it)."""
        if not self.can_classify_here():
            raise ConfigError(
                "the embedded worker consumes the local queue only; with Kafka, run the Spark "
                "job (fruitstream spark-job)"
            )
        name = worker_id()
        consumer = self.backends.consumer(name)
        clf = classifier or self._classifier()
        reclaim = getattr(consumer, "reclaim", None)  # queues with leases free dead owners'

        def chores() -> None:
            if reclaim is not None:
                reclaim(owner_is_dead)
            self._repair()

        s = self.settings
        return Worker(
            consumer,
            self.backends.store,
            self.backends.db,
            clf,
            heartbeats=self.backends.db,
            batch_size=s.worker_batch_size,
            poll_seconds=s.worker_poll_seconds,
            top_k=s.top_k,
            name=name,
            lease_seconds=s.lease_seconds,
            housekeeping=chores,
            housekeeping_seconds=chores_seconds(s),
            before_batch=lambda: self._follow(clf),
        )

    def run_worker(
        self, stop: threading.Event, started: Callable[[str], None] | None = None
    ) -> WorkerStats:
        """Be a worker until ``stop`` is set (``fruitstream worker``): embedded queue only."""
        worker = self.worker()
        if started is not None:
            started(worker.name)
        return worker.run(stop)

    @functools.cached_property
    def _callback_settings(self) -> CallbackSettings:
        return CallbackSettings.of(self.settings)

    def callback_config(self) -> tuple[list[AllowedCallback], str | None]:
        """Where callbacks may go (``ConfigError`` for a bad entry), and the secret that
        signs them."""
        return self._callback_settings.allowed, self._callback_settings.secret_text

    def ensure_callbacks(self) -> bool:
        """Start this process's callback sender when callbacks are configured; whether one
        was started."""
        hosts, secret = self.callback_config()
        if not hosts or not secret:
            return False
        with self._lock:
            if self._callbacks is not None and self._callbacks.is_alive():
                return False
            sender = CallbackSender(self.backends.db, self.backends.post, secret, hosts)
            self._callbacks = threading.Thread(
                target=sender.run, args=(self._stop,), name="fruitstream-callbacks", daemon=True
            )
            self._callbacks.start()
            return True

    def start(self) -> None:
        """A serving process begins (the app, the API): its worker when the policy says so,
        its callback sender when callbacks are configured, and its watch."""
        self.needed()
        self.ensure_callbacks()
        if self.can_classify_here() and self.start_workers:
            with self._lock:
                if self._watch is None or not self._watch.is_alive():
                    self._watch = threading.Thread(
                        target=self._watching, name="fruitstream-watch", daemon=True
                    )
                    self._watch.start()

    def _watching(self) -> None:
        """Every ``watch_seconds``, see that something classifies the queue: a worker killed
        (``kill -9`` of a ``fruitstream worker``, of this process's thread's work) or never
        there is replaced by one here, so a batch never waits for the next submit."""
        while not self._stop.wait(self.watch_seconds):
            try:
                self.needed()
            except Exception as exc:  # a backend restarting: the next round tries again
                log.warning("the worker watch failed: %s", exc)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop this process's worker thread, after the batch in hand, and its callbacks."""
        self._stop.set()
        for thread in (self._thread, self._callbacks, self._watch):
            if thread is not None:
                thread.join(timeout)


def chores_seconds(settings: Settings) -> float:
    """How often a worker's chores run: often enough to finish a stalled submit in time."""
    return min(HOUSEKEEPING_SECONDS, settings.stalled_submit_seconds / 2)


def housekeeping(
    backends: Backends, repair: Callable[[], object], name: str, kind: str
) -> Housekeeping:
    """The heartbeat and chores of a worker that is not a ``Worker`` (the Spark job)."""
    return Housekeeping(backends.db, name, kind, repair, chores_seconds(backends.settings))
