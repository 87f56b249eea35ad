"""Batch-complete callbacks: checked at submit, delivered once when the batch is complete.

A batch submitted with a callback URL (to a host the operator allows) gets one signed POST
when its last photo has its row; the API process's sender delivers it, retrying with backoff
(a receiver down for a while still gets it) and giving up after ``MAX_ATTEMPTS``. What is
still to deliver is kept in the results database: a restarted server carries on.

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
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict

from fruitstream.config import FruitstreamSettings, items
from fruitstream.errors import CallbackError, FruitstreamError
from fruitstream.ports import ResultsDatabase

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 8
# Seconds before attempt n + 1: 2, 4, 8, ... up to 5 minutes.
MAX_BACKOFF = 300.0

Post = Callable[[str, bytes, Mapping[str, str]], int]


class CallbackSettings(FruitstreamSettings):
    """Where callbacks may go and how they are signed (``FRUITSTREAM_API_CALLBACK_*``)."""

    model_config = SettingsConfigDict(
        env_prefix="FRUITSTREAM_API_CALLBACK_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    # Hosts a batch's completion callback may be sent to (POST /v1/batches?callback=URL),
    # comma-separated; empty: callbacks are refused. Each is signed with the secret.
    hosts: str = ""
    secret: SecretStr | None = None

    @property
    def host_list(self) -> list[str]:
        return [h.lower() for h in items(self.hosts)]

    @property
    def secret_text(self) -> str | None:
        return self.secret.get_secret_value() if self.secret is not None else None


def check_callback(url: str, hosts: Sequence[str], secret: str | None) -> str:
    """``url`` when callbacks may go there, else a ``CallbackError`` saying why."""
    if not hosts or not secret:
        raise CallbackError("callbacks are off on this server (no FRUITSTREAM_API_CALLBACK_HOSTS)")
    parts = urlsplit(url)
    if parts.scheme not in {"https", "http"} or not parts.hostname:
        raise CallbackError(f"callback is not an http(s) URL: {url[:200]!r}")
    if parts.hostname.lower() not in hosts:
        raise CallbackError(f"callback host {parts.hostname!r} is not one this server may call")
    return url


def signature(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


class CallbackSender:
    """Delivers due callbacks of complete batches; ``run`` loops until ``stop`` is set."""

    def __init__(
        self,
        db: ResultsDatabase,
        post: Post,
        secret: str,
        hosts: Sequence[str],
        poll: float = 1.0,
    ) -> None:
        self.db = db
        self.post = post
        self.secret = secret
        self.hosts = hosts
        self.poll = poll

    def run_once(self) -> int:
        """One round: every due callback whose batch is complete is tried; returns how many
        were delivered."""
        delivered = 0
        now = datetime.now(UTC)
        for session_id, url, attempts in self.db.due_callbacks(now):
            progress = self.db.progress(session_id)
            if not progress.complete:
                continue
            try:
                check_callback(url, self.hosts, self.secret)  # the list may have changed
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
            stamp = str(int(time.time()))
            headers = {
                "X-Fruitstream-Event": "batch.complete",
                "X-Fruitstream-Timestamp": stamp,
                "X-Fruitstream-Signature": signature(self.secret, stamp, body),
            }
            status = self.post(url, body, headers)
            if 200 <= status < 300:
                self.db.settle_callback(session_id, None)
                delivered += 1
            elif attempts + 1 >= MAX_ATTEMPTS:
                log.warning("callback of %s given up after %d attempts", session_id, attempts + 1)
                self.db.settle_callback(session_id, None)
            else:
                wait = min(MAX_BACKOFF, 2.0 ** (attempts + 1))
                self.db.settle_callback(session_id, now + timedelta(seconds=wait))
        return delivered

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.run_once()
            except FruitstreamError as exc:  # a backend restarting: the next round retries
                log.warning("callbacks: %s", exc)
            stop.wait(self.poll)
