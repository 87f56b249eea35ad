"""Batch-complete callbacks: checked at submit, delivered once when the batch is complete.

A batch submitted with a callback URL (to a place the operator allows) gets one signed POST
when its last photo has its row; the API process's sender delivers it, retrying with backoff
(a receiver down for a while still gets it) and giving up after ``MAX_ATTEMPTS``. What is
still to deliver is kept in the results database: a restarted server carries on.

Where callbacks may go (``FRUITSTREAM_API_CALLBACK_HOSTS``): a comma-separated list of
``scheme://host[:port][/path]`` entries (``AllowedCallback``). A URL is allowed when its
scheme (http or https), host (lower case; IP literals as written, never resolved or
normalised) and port (the scheme's default when not written: https 443, http 80) are one
entry's, and, when that entry has a path, the URL's path is that path or under it
(``/hooks`` allows ``/hooks`` and ``/hooks/done``, not ``/hooks-old``); an entry without a
path allows any path of its origin. A URL with user info (``user:pw@``), a dot segment
(``/hooks/../admin``, also percent-encoded), a backslash, white space or a control
character is refused whatever the list says. An entry that is not of that form, the old
bare host name (``hooks.example``) among them, is a ``ConfigError`` when the settings are
read (at the server's start), not a guess at what it meant.

Sending: each delivery runs in a thread of its own, at most ``SENDERS`` at once and at most
``PER_TENANT`` for one tenant, the batch's owner (``SessionRecord.owner``: one API token,
one browser; the operator's batches are the tenant ""), so a slow or hung receiver holds
that tenant's slots only, for at most the POST's timeout, and everyone else's callbacks
still leave on time. A delivery in flight is not taken again until it has settled.

The signature lets the receiver check that the call came from this deployment:
``X-Fruitstream-Signature: sha256=HMAC-SHA256(secret, "<timestamp>." + body)`` with the
``X-Fruitstream-Timestamp`` header (Unix seconds), as Stripe and GitHub sign theirs.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import SplitResult, unquote, urlsplit

from pydantic import SecretStr, field_validator

from fruitstream.config import FruitstreamSettings, items, part_config
from fruitstream.errors import CallbackError, FruitstreamError, NotFoundError
from fruitstream.ports import ResultsDatabase

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 8
# Seconds before attempt n + 1: 2, 4, 8, ... up to 5 minutes.
MAX_BACKOFF = 300.0
# Deliveries in flight at once: in all, and for one tenant (a batch's owner).
SENDERS = 16
PER_TENANT = 2

DEFAULT_PORTS = {"https": 443, "http": 80}

Post = Callable[[str, bytes, Mapping[str, str]], int]


@dataclass(frozen=True)
class AllowedCallback:
    """One entry of the allow-list: an origin, and the path under which URLs may go ("":
    any path of the origin)."""

    scheme: str
    host: str
    port: int
    path: str = ""

    @classmethod
    def parse(cls, entry: str) -> AllowedCallback:
        """``scheme://host[:port][/path]``; a ``ValueError`` saying the form otherwise."""
        form = "write scheme://host[:port][/path], like https://hooks.example"
        parts = _split(entry)
        if parts is None or not parts.scheme or not parts.netloc:
            raise ValueError(f"callback entry {entry!r} is not an http(s) origin: {form}")
        if parts.query or parts.fragment or entry.endswith(("?", "#")):
            raise ValueError(f"callback entry {entry!r} has a query or fragment: {form}")
        if "*" in entry:
            raise ValueError(f"callback entry {entry!r}: wildcards are not supported: {form}")
        try:
            scheme, host, port = _origin(parts)
        except CallbackError as exc:
            raise ValueError(f"callback entry {entry!r}: {exc}: {form}") from None
        path = parts.path.rstrip("/")
        if path and _dot_segments(path):
            raise ValueError(f"callback entry {entry!r} has a . or .. segment in its path")
        return cls(scheme, host, port, path)

    def allows(self, scheme: str, host: str, port: int, path: str) -> bool:
        if (scheme, host, port) != (self.scheme, self.host, self.port):
            return False
        return not self.path or path == self.path or path.startswith(self.path + "/")

    def __str__(self) -> str:
        shown = f"[{self.host}]" if ":" in self.host else self.host
        default = DEFAULT_PORTS[self.scheme] == self.port
        return f"{self.scheme}://{shown}{'' if default else f':{self.port}'}{self.path}"


def allowed_callbacks(value: str) -> list[AllowedCallback]:
    """The entries of a comma-separated allow-list (``ValueError`` for a bad one)."""
    return [AllowedCallback.parse(entry) for entry in items(value)]


class CallbackSettings(FruitstreamSettings):
    """Where callbacks may go and how they are signed (``FRUITSTREAM_API_CALLBACK_*``)."""

    model_config = part_config("FRUITSTREAM_API_CALLBACK_")

    # Where a batch's completion callback may be sent (POST /v1/batches?callback=URL):
    # comma-separated scheme://host[:port][/path] entries (the module's docstring says how
    # a URL matches); empty: callbacks are refused. Each is signed with the secret.
    hosts: str = ""
    secret: SecretStr | None = None

    @field_validator("hosts")
    @classmethod
    def _entries(cls, value: str) -> str:
        allowed_callbacks(value)  # a bad entry refuses the settings, naming the variable
        return value

    @property
    def allowed(self) -> list[AllowedCallback]:
        return allowed_callbacks(self.hosts)

    @property
    def secret_text(self) -> str | None:
        return self.secret.get_secret_value() if self.secret is not None else None


def check_callback(url: str, allowed: Sequence[AllowedCallback], secret: str | None) -> str:
    """``url`` when callbacks may go there, else a ``CallbackError`` saying why."""
    if not allowed or not secret:
        raise CallbackError("callbacks are off on this server (no FRUITSTREAM_API_CALLBACK_HOSTS)")
    shown = repr(url[:200])
    parts = _split(url)
    if parts is None or parts.scheme not in DEFAULT_PORTS or not parts.netloc:
        raise CallbackError(f"callback is not an http(s) URL: {shown}")
    scheme, host, port = _origin(parts)
    path = parts.path or "/"
    if _dot_segments(path):
        raise CallbackError(f"callback path has a . or .. segment: {shown}")
    if not any(entry.allows(scheme, host, port, path) for entry in allowed):
        raise CallbackError(f"callback {shown} is not a place this server may call")
    return url


def _split(url: str) -> SplitResult | None:
    """``url`` split, or None when it has characters a URL should not carry: white space,
    control characters, backslashes, non-ASCII outside the host (which parsers and HTTP
    libraries read differently) or a port that is not a number."""
    if not url or any(c <= " " or c in "\\\x7f" for c in url):
        return None
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return None
    if not (parts.scheme + parts.path + parts.query + parts.fragment).isascii():
        return None
    return parts


def _origin(parts: SplitResult) -> tuple[str, str, int]:
    """(scheme, host, effective port) of a split URL; ``CallbackError`` for user info, no
    host or a scheme other than http(s)."""
    if parts.scheme not in DEFAULT_PORTS:
        raise CallbackError(f"scheme {parts.scheme!r} is not http or https")
    if "@" in parts.netloc:
        raise CallbackError("user info (user:password@) is not allowed")
    host = parts.hostname or ""
    if not host:
        raise CallbackError("no host")
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise CallbackError(f"host {host!r} is not a valid name") from None
    port = parts.port if parts.port is not None else DEFAULT_PORTS[parts.scheme]
    return parts.scheme, host.lower(), port


def _dot_segments(path: str) -> bool:
    """Whether ``path``, percent-decoded, has a ``.`` or ``..`` segment, which a receiver
    may resolve out of the allowed path (``/hooks/%2e%2e/admin``)."""
    return any(segment in {".", ".."} for segment in unquote(path).split("/"))


def signature(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


class CallbackSender:
    """Delivers due callbacks of complete batches; ``run`` loops until ``stop`` is set.

    Each delivery runs in a daemon thread of its own, at most ``senders`` at once and at
    most ``per_tenant`` for the batch's owner; a callback in flight is not taken again
    until its POST has answered (or timed out) and it is settled.
    """

    def __init__(
        self,
        db: ResultsDatabase,
        post: Post,
        secret: str,
        allowed: Sequence[AllowedCallback],
        poll: float = 1.0,
        senders: int = SENDERS,
        per_tenant: int = PER_TENANT,
    ) -> None:
        self.db = db
        self.post = post
        self.secret = secret
        self.allowed = allowed
        self.poll = poll
        self.senders = senders
        self.per_tenant = per_tenant
        self._lock = threading.Lock()
        self._in_flight: dict[str, str] = {}  # session id -> its tenant
        # session id -> when its delivery settled (monotonic): a round that read the due
        # list before that read it as still due, and must not send it again.
        self._settled: dict[str, float] = {}
        self._delivered = 0

    def in_flight(self) -> int:
        with self._lock:
            return len(self._in_flight)

    def dispatch(self) -> list[threading.Thread]:
        """Start a delivery for every due callback of a complete batch that is not in flight
        and fits its tenant's and the sender's limits; returns the threads started."""
        began = time.monotonic()
        with self._lock:
            self._settled = {k: t for k, t in self._settled.items() if t > began - 60}
        started: list[threading.Thread] = []
        for session_id, url, attempts in self.db.due_callbacks(datetime.now(UTC)):
            with self._lock:  # a cheap first look, before reading the batch
                if session_id in self._in_flight or self._taken(session_id, began):
                    continue
                if len(self._in_flight) >= self.senders:
                    break
            try:
                progress = self.db.progress(session_id)
                tenant = self.db.get_session(session_id).owner
            except NotFoundError:
                log.warning("callback of %s dropped: no such batch", session_id)
                self.db.settle_callback(session_id, None)
                continue
            if not progress.complete:
                continue
            try:
                check_callback(url, self.allowed, self.secret)  # the list may have changed
            except CallbackError as exc:
                log.warning("callback of %s dropped: %s", session_id, exc)
                self.db.settle_callback(session_id, None)
                continue
            body = json.dumps(
                {
                    "event": "batch.complete",
                    "session_id": session_id,
                    "submitted": progress.submitted,
                    "done": progress.done,
                    "errors": progress.errors,
                    "results": f"/v1/batches/{session_id}/results",
                }
            ).encode()
            with self._lock:  # taken here, or left for a later round
                busy = Counter(self._in_flight.values())
                if session_id in self._in_flight or self._taken(session_id, began):
                    continue
                if busy[tenant] >= self.per_tenant:
                    continue
                if len(self._in_flight) >= self.senders:
                    break
                self._in_flight[session_id] = tenant
            thread = threading.Thread(
                target=self._deliver,
                args=(session_id, url, attempts, body),
                name=f"fruitstream-callback-{session_id[:8]}",
                daemon=True,
            )
            thread.start()
            started.append(thread)
        return started

    def _deliver(self, session_id: str, url: str, attempts: int, body: bytes) -> None:
        """POST one callback and settle it: done, given up, or due again after a backoff."""
        try:
            stamp = str(int(time.time()))
            headers = {
                "X-Fruitstream-Event": "batch.complete",
                "X-Fruitstream-Timestamp": stamp,
                "X-Fruitstream-Signature": signature(self.secret, stamp, body),
            }
            try:
                status = self.post(url, body, headers)
            except Exception:  # a sender that breaks is a failed attempt, retried
                log.exception("callback of %s: the POST failed", session_id)
                status = 0
            if 200 <= status < 300:
                self.db.settle_callback(session_id, None)
                with self._lock:
                    self._delivered += 1
            elif attempts + 1 >= MAX_ATTEMPTS:
                log.warning("callback of %s given up after %d attempts", session_id, attempts + 1)
                self.db.settle_callback(session_id, None)
            else:
                wait = min(MAX_BACKOFF, 2.0 ** (attempts + 1))
                self.db.settle_callback(session_id, datetime.now(UTC) + timedelta(seconds=wait))
        except FruitstreamError as exc:  # the database restarting: due again, sent again
            log.warning("callback of %s not settled: %s", session_id, exc)
        finally:
            with self._lock:
                self._in_flight.pop(session_id, None)
                self._settled[session_id] = time.monotonic()

    def _taken(self, session_id: str, began: float) -> bool:
        """Whether a delivery of ``session_id`` settled after a round beginning at ``began``
        read the due list (so the list is stale about it). Called with the lock held."""
        return self._settled.get(session_id, -1.0) >= began

    def run_once(self) -> int:
        """One round, waited for: every due callback that may leave now is tried; returns
        how many were delivered."""
        with self._lock:
            before = self._delivered
        for thread in self.dispatch():
            thread.join()
        with self._lock:
            return self._delivered - before

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.dispatch()
            except FruitstreamError as exc:  # a backend restarting: the next round retries
                log.warning("callbacks: %s", exc)
            stop.wait(self.poll)
