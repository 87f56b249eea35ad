"""The request guard: authentication and size limits, before a byte of the body is read.

A pure ASGI middleware, so that a request without a valid token, or one that declares more
bytes than its route accepts, is answered at once from its headers; a body sent without a
length (chunked) is counted as it arrives and cut off at the limit. FastAPI reads a form body
before its dependencies run: a check there would come after the upload.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import threading
import time
from collections.abc import Callable, Sequence

from fruitstream.domain import ImageLimits
from fruitstream.entrypoints.api.asgi import App, Message, Receive, Scope, Send, request_id_of
from fruitstream.entrypoints.api.problems import (
    RATE_LIMITED,
    REQUEST_TOO_LARGE,
    UnauthorizedError,
    kind_of,
    problem,
)
from fruitstream.entrypoints.api.settings import ApiSettings

# Multipart framing around a file: boundaries, part headers, the file name.
PART_OVERHEAD = 64 * 1024
# A request to any other route carries no photo.
SMALL_BODY = 64 * 1024
# Paths anyone may call: the probes (readiness without details, see routes) and the API's
# own description, which holds no data and which a client needs before it has a token.
# ``OPTIONS`` is open on every path too: it says which methods a path allows, nothing more.
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/openapi.json", "/docs"})
OPEN_PREFIXES = ("/docs/",)


def matched_token(authorization: str | None, tokens: Sequence[str]) -> str | None:
    """The one of ``tokens`` an ``Authorization`` header carries as a bearer token (the
    scheme in any case, spaces around the token ignored; compared in constant time with
    each), else None."""
    scheme, _, given = (authorization or "").partition(" ")
    given = given.strip()
    if scheme.lower() != "bearer" or not given:
        return None
    found = None
    for token in tokens:  # every one compared: the time says nothing of which matched
        if hmac.compare_digest(given.encode(), token.encode()):
            found = token
    return found


def token_accepted(authorization: str | None, tokens: Sequence[str]) -> bool:
    """Whether an ``Authorization`` header carries one of ``tokens`` as a bearer token
    (compared in constant time); no tokens configured means no authentication."""
    return not tokens or matched_token(authorization, tokens) is not None


def owner_id(token: str) -> str:
    """The opaque id a token's batches are recorded under (the token itself never is)."""
    return hashlib.sha256(token.encode()).hexdigest()[:32]


def body_limit(method: str, path: str, limits: ImageLimits, api: ApiSettings) -> int:
    """The most bytes a request to ``path`` may send."""
    per_file = limits.max_bytes + PART_OVERHEAD
    if method == "POST" and path in ("/v1/classify", "/v1/labels"):  # a label may bring its photo
        return per_file
    if method == "POST" and path == "/v1/batches":
        return min(api.max_batch_files * per_file, api.max_request_bytes)
    return SMALL_BODY


class RateLimiter:
    """A token bucket per caller: ``rate`` requests a second on average, ``burst`` at once.

    The table stays small: a bucket untouched for ``burst / rate`` seconds is full again,
    the same as no bucket, and is dropped; past ``max_buckets`` the least recently used ones
    are dropped too (those callers start again with a full burst)."""

    def __init__(
        self, max_buckets: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        # caller -> (tokens, at), least recently used first
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()
        self.max_buckets = max_buckets
        self._clock = clock

    def __len__(self) -> int:
        return len(self._buckets)

    def wait_for(self, caller: str, rate: float, burst: int) -> float:
        """0 when the caller may go on now (one request taken), else the seconds until it may."""
        now = self._clock()
        with self._lock:
            tokens, at = self._buckets.pop(caller, (float(burst), now))
            self._evict(now, burst / rate)
            tokens = min(float(burst), tokens + (now - at) * rate)
            wait = 0.0 if tokens >= 1.0 else (1.0 - tokens) / rate
            self._buckets[caller] = (tokens - 1.0 if wait == 0.0 else tokens, now)  # last used
            return wait

    def _evict(self, now: float, idle: float) -> None:
        """Drop full buckets (untouched for ``idle`` s), then the oldest past the bound."""
        while self._buckets:
            oldest, (_tokens, at) = next(iter(self._buckets.items()))
            if now - at < idle and len(self._buckets) < self.max_buckets:
                return
            del self._buckets[oldest]


class RequestGuard:
    """Refuse unauthenticated and oversized requests before their bodies are read."""

    def __init__(
        self,
        app: App,
        settings: Callable[[Scope], tuple[ImageLimits, ApiSettings]],
        tokens: Callable[[Scope], Sequence[str]],
    ) -> None:
        self.app = app
        self.settings = settings
        self.tokens = tokens
        self.limiter = RateLimiter()  # by token owner (or address, without tokens)
        self.failures = RateLimiter()  # failed authentications, by address

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (
            scope["type"] != "http"
            or path in OPEN_PATHS
            or path.startswith(OPEN_PREFIXES)
            or scope["method"] == "OPTIONS"
        ):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        tokens = self.tokens(scope)
        token = matched_token(headers.get("authorization"), tokens)
        limits, api = self.settings(scope)
        address = _address(scope)
        if tokens and token is None:
            # Failed (or missing) authentications count per client address, in a table of
            # their own (so that many addresses never push a token's bucket out): a flood of
            # guesses gets 429 after the burst.
            if not await self._limited(
                self.failures, f"address:{address}", api, scope, receive, send
            ):
                refused = UnauthorizedError()
                answer = problem(kind_of(refused), str(refused), request_id=request_id_of(scope))
                await answer(scope, receive, send)
            return
        # The token's owner, however the header spells it; without tokens, the address.
        caller = f"owner:{owner_id(token)}" if token is not None else f"address:{address}"
        if await self._limited(self.limiter, caller, api, scope, receive, send):
            return
        limit = body_limit(scope["method"], scope["path"], limits, api)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            detail = f"request is {int(declared):,} bytes, over the limit of {limit:,} bytes"
            answer = problem(REQUEST_TOO_LARGE, detail, request_id=request_id_of(scope))
            await answer(scope, receive, send)
            return
        await _bounded(self.app, scope, receive, send, limit)

    @staticmethod
    async def _limited(
        limiter: RateLimiter,
        caller: str,
        api: ApiSettings,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> bool:
        """Whether ``caller`` is over the rate limit (and was answered 429)."""
        if api.rate_limit <= 0:
            return False
        wait = limiter.wait_for(caller, api.rate_limit, api.rate_burst)
        if wait <= 0:
            return False
        retry = str(max(1, math.ceil(wait)))
        detail = f"over {api.rate_limit:g} requests a second; retry in {retry} s"
        answer = problem(RATE_LIMITED, detail, {"Retry-After": retry}, request_id_of(scope))
        await answer(scope, receive, send)
        return True


async def _bounded(app: App, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
    """Run ``app`` on a body cut off at ``limit`` bytes. Past it, the app is told the client
    left (what any parser stops on) and whatever it answers is replaced by a 413."""
    seen = 0
    cut = False
    started = False

    async def counted() -> Message:
        nonlocal seen, cut
        if cut:
            return {"type": "http.disconnect"}
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                cut = True
                return {"type": "http.disconnect"}
        return message

    async def forward(message: Message) -> None:
        nonlocal started
        if cut and not started:
            return  # the app's answer to a body it never got whole
        started = started or message["type"] == "http.response.start"
        await send(message)

    try:
        await app(scope, counted, forward)
    except Exception:
        if not cut or started:
            raise
    if cut and not started:
        detail = f"request body passed the limit of {limit:,} bytes; the rest was not read"
        answer = problem(REQUEST_TOO_LARGE, detail, request_id=request_id_of(scope))
        await answer(scope, receive, send)


def _address(scope: Scope) -> str:
    """The client's address (behind a proxy: the proxy's, unless the server is told to
    trust its forwarded headers)."""
    client = scope.get("client") or ("unknown", 0)
    return str(client[0])
