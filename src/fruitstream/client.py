"""A Python client of the fruitstream HTTP API (extra 'client': httpx), for integrators.

    from fruitstream.client import Client

    with Client("https://fruit.example", token="...") as api:
        print(api.classify(Path("banana.jpg")).label)
        batch = api.submit([Path("a.jpg"), Path("b.jpg")], name="market", idempotency_key="k1")
        for row in api.results(batch.session_id, wait=60):   # every page, once complete
            print(row.filename, row.label, row.top_k[0].confidence)

Every answer is a frozen dataclass mirroring the API's schema (``Classification``,
``BatchReceipt``, ``Progress``, ``BatchSummary``, ``ResultRow``, ``Label``, ``Readiness``):
a misspelt field is a type checker's error, not a ``KeyError`` at run time. Timestamps are
``datetime``, lists are tuples.

Errors, one hierarchy (``ClientError``, a ``FruitstreamError``):

    ClientError                  anything this client raises on purpose
    ├── ApiError                 the server answered with a problem document (4xx, 5xx)
    ├── ServerUnavailableError   the server did not answer (refused, reset, timed out)
    ├── WaitTimeoutError         ``wait`` ran out of time (also a ``TimeoutError``)
    └── UnexpectedAnswerError    an answer that is not the documented schema

An ``ApiError`` carries the problem document: ``status``, ``type`` (the kinds
docs/HTTP_API.md lists; ``kind`` is its last part, e.g. ``not-found``), ``title``,
``detail`` and the ``request_id`` to find in the server's log. A ``ServerUnavailableError``
says the URL and is raised ``from`` the httpx error. The client follows ``Retry-After`` on
429 once per call. Lists page as the server does (``X-Next-Cursor``): ``iter_batches``,
``iter_results`` and ``iter_labels`` follow every page; ``*_page`` give one ``Page``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, cast
from urllib.parse import quote

from fruitstream.errors import FruitstreamError, MissingDependencyError

if TYPE_CHECKING:
    import httpx

# A photo: a file path, its bytes (named "upload"), or (file name, bytes).
Photo = str | os.PathLike[str] | bytes | tuple[str, bytes]
# The prefix of every problem ``type`` the server sends.
PROBLEM_PREFIX = "urn:fruitstream:problem:"
# The longest ``Retry-After`` the client waits out by itself (seconds); longer is an ApiError.
MAX_RETRY_AFTER = 30.0

T = TypeVar("T")


# --- errors -------------------------------------------------------------------------------


class ClientError(FruitstreamError):
    """Base of every error the client raises on purpose."""


@dataclass(frozen=True, slots=True)
class Problem:
    """An RFC 9457 problem document, as the server sends it (schema ``Problem``)."""

    type: str
    title: str
    status: int
    detail: str
    request_id: str | None = None


class ApiError(ClientError):
    """An error answer of the API: its status and problem document."""

    def __init__(self, status: int, problem: Problem, retry_after: float | None = None) -> None:
        self.status = status
        self.problem = problem
        self.type = problem.type
        self.title = problem.title
        self.detail = problem.detail
        self.request_id = problem.request_id
        # Seconds the server asked to wait (429, 503), when it said.
        self.retry_after = retry_after
        where = f" (request {problem.request_id})" if problem.request_id else ""
        super().__init__(f"{status} {problem.title}: {problem.detail}{where}")

    @property
    def kind(self) -> str:
        """The problem's kind: ``not-found`` for ``urn:fruitstream:problem:not-found``."""
        return self.type.removeprefix(PROBLEM_PREFIX)


class ServerUnavailableError(ClientError):
    """The server did not answer: connection refused or reset, or a timeout."""

    def __init__(self, url: str, cause: Exception) -> None:
        self.url = url
        self.cause = cause
        why = str(cause) or type(cause).__name__
        super().__init__(f"the server at {url} did not answer: {why}")


class WaitTimeoutError(ClientError, TimeoutError):
    """A batch was not complete by the end of a ``wait``; ``progress`` is the last seen."""

    def __init__(self, progress: Progress, timeout: float) -> None:
        self.progress = progress
        pending = progress.submitted - progress.done
        super().__init__(
            f"{pending} of {progress.submitted} photos of {progress.session_id} still pending"
            f" after {timeout:g} s"
        )


class UnexpectedAnswerError(ClientError):
    """An answer that is not what the API documents (another server, another version)."""


# --- the documents ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TopK:
    """One guess of the model (schema ``TopKOut``)."""

    label: str
    confidence: float


@dataclass(frozen=True, slots=True)
class Classification:
    """The answer of ``POST /v1/classify`` (schema ``ClassifyOut``): ``label`` is None when
    the model does not know the fruit (``guess`` is its closest) or on ``error``."""

    path: str
    label: str | None
    guess: str | None
    confidence: float | None
    known: bool | None
    top_k: tuple[TopK, ...]
    error: str | None


ReceiptState = Literal["queued", "rejected", "not sent"]


@dataclass(frozen=True, slots=True)
class PhotoReceipt:
    """One file of a batch, in the order sent (schema ``PhotoOut``)."""

    filename: str
    image_id: str
    state: ReceiptState
    reason: str | None


@dataclass(frozen=True, slots=True)
class BatchReceipt:
    """The 202 of ``POST /v1/batches`` (schema ``BatchOut``); ``replayed`` is the
    ``Idempotent-Replayed`` header: the answer to an earlier request with the same key."""

    session_id: str
    submitted: int
    queued: int
    rejected: Mapping[str, str]
    photos: tuple[PhotoReceipt, ...]
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a batch is (schema ``ProgressOut``)."""

    session_id: str
    submitted: int
    done: int
    errors: int
    complete: bool


@dataclass(frozen=True, slots=True)
class BatchSummary:
    """A batch of the history (schema ``SessionOut``), newest first."""

    session_id: str
    submitted: int
    done: int
    errors: int
    complete: bool
    name: str
    created_at: datetime


ResultStatus = Literal["ok", "error"]


@dataclass(frozen=True, slots=True)
class ResultRow:
    """One photo of a batch (schema ``ResultOut``; the CSV's columns)."""

    image_id: str
    session_id: str
    filename: str
    object_key: str
    label: str | None
    confidence: float | None
    known: bool | None
    top_k: tuple[TopK, ...]
    status: ResultStatus
    error: str | None
    model_version: str
    submitted_at: datetime
    processed_at: datetime
    latency_ms: float | None


@dataclass(frozen=True, slots=True)
class Label:
    """A person's label beside the model's answer at the time (schema ``LabelOut``)."""

    label_id: str
    content_sha256: str
    object_key: str
    label: str
    model_label: str | None
    model_known: bool | None
    model_version: str
    source: str
    created_at: datetime
    image_id: str | None


@dataclass(frozen=True, slots=True)
class Check:
    """One backend's state in ``/readyz`` (schema ``CheckOut``); ``detail`` and ``figures``
    are only given to a caller with a token."""

    name: str
    ok: bool
    detail: str
    figures: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Readiness:
    """The answer of ``/readyz`` (schema ``ReadyOut``), 200 or 503 alike."""

    ready: bool
    checks: tuple[Check, ...]


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a listing: its items and the cursor of the next (None on the last)."""

    items: tuple[T, ...]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class ResultsPage:
    """One page of a batch's rows, with whether every photo has its row yet."""

    items: tuple[ResultRow, ...]
    next_cursor: str | None
    complete: bool
    pending: int


# --- reading the JSON ---------------------------------------------------------------------


class _Fields:
    """Typed access to one JSON object; a missing or mistyped field is an
    ``UnexpectedAnswerError`` naming the document and the field."""

    def __init__(self, data: object, what: str) -> None:
        if not isinstance(data, dict):
            raise UnexpectedAnswerError(
                f"{what}: expected a JSON object, got {type(data).__name__}"
            )
        self.data = cast(dict[str, object], data)
        self.what = what

    def _get(self, name: str, kinds: tuple[type, ...], optional: bool = False) -> Any:
        if name not in self.data:
            raise UnexpectedAnswerError(f"{self.what}: no field {name!r}")
        value = self.data[name]
        if value is None and optional:
            return None
        # bool is an int in Python: refuse it where a number is meant, and the reverse.
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise UnexpectedAnswerError(f"{self.what}: {name!r} is {value!r}")
        return value

    def text(self, name: str) -> str:
        return cast(str, self._get(name, (str,)))

    def opt_text(self, name: str) -> str | None:
        return cast("str | None", self._get(name, (str,), optional=True))

    def integer(self, name: str) -> int:
        return cast(int, self._get(name, (int,)))

    def number(self, name: str) -> float:
        return float(self._get(name, (int, float)))

    def opt_number(self, name: str) -> float | None:
        value = self._get(name, (int, float), optional=True)
        return None if value is None else float(value)

    def flag(self, name: str) -> bool:
        return cast(bool, self._get(name, (bool,)))

    def opt_flag(self, name: str) -> bool | None:
        return cast("bool | None", self._get(name, (bool,), optional=True))

    def time(self, name: str) -> datetime:
        text = self.text(name)
        try:
            return datetime.fromisoformat(text)
        except ValueError as exc:
            raise UnexpectedAnswerError(f"{self.what}: {name!r} is not a time: {text!r}") from exc

    def mapping(self, name: str) -> _Fields:
        return _Fields(self._get(name, (dict,)), f"{self.what} {name}")

    def items(self, name: str) -> list[object]:
        return cast(list[object], self._get(name, (list,)))

    def choice(self, name: str, choices: Sequence[str]) -> Any:
        value = self.text(name)
        if value not in choices:
            raise UnexpectedAnswerError(f"{self.what}: {name!r} is {value!r}")
        return value


def _top_k(items: list[object], what: str) -> tuple[TopK, ...]:
    guesses = [_Fields(g, f"{what} top_k") for g in items]
    return tuple(TopK(g.text("label"), g.number("confidence")) for g in guesses)


def _classification(data: object) -> Classification:
    f = _Fields(data, "classify answer")
    return Classification(
        path=f.text("path"),
        label=f.opt_text("label"),
        guess=f.opt_text("guess"),
        confidence=f.opt_number("confidence"),
        known=f.opt_flag("known"),
        top_k=_top_k(f.items("top_k"), "classify answer"),
        error=f.opt_text("error"),
    )


def _receipt(data: object, replayed: bool) -> BatchReceipt:
    f = _Fields(data, "batch receipt")
    rejected = f.mapping("rejected")
    photos = [_Fields(p, "batch receipt photo") for p in f.items("photos")]
    return BatchReceipt(
        session_id=f.text("session_id"),
        submitted=f.integer("submitted"),
        queued=f.integer("queued"),
        rejected={name: rejected.text(name) for name in rejected.data},
        photos=tuple(
            PhotoReceipt(
                filename=p.text("filename"),
                image_id=p.text("image_id"),
                state=p.choice("state", ("queued", "rejected", "not sent")),
                reason=p.opt_text("reason"),
            )
            for p in photos
        ),
        replayed=replayed,
    )


def _progress(data: object) -> Progress:
    f = _Fields(data, "progress")
    return Progress(
        f.text("session_id"),
        f.integer("submitted"),
        f.integer("done"),
        f.integer("errors"),
        f.flag("complete"),
    )


def _summary(data: object) -> BatchSummary:
    f = _Fields(data, "batch")
    return BatchSummary(
        session_id=f.text("session_id"),
        submitted=f.integer("submitted"),
        done=f.integer("done"),
        errors=f.integer("errors"),
        complete=f.flag("complete"),
        name=f.text("name"),
        created_at=f.time("created_at"),
    )


def _row(data: object) -> ResultRow:
    f = _Fields(data, "result row")
    return ResultRow(
        image_id=f.text("image_id"),
        session_id=f.text("session_id"),
        filename=f.text("filename"),
        object_key=f.text("object_key"),
        label=f.opt_text("label"),
        confidence=f.opt_number("confidence"),
        known=f.opt_flag("known"),
        top_k=_top_k(f.items("top_k"), "result row"),
        status=f.choice("status", ("ok", "error")),
        error=f.opt_text("error"),
        model_version=f.text("model_version"),
        submitted_at=f.time("submitted_at"),
        processed_at=f.time("processed_at"),
        latency_ms=f.opt_number("latency_ms"),
    )


def _label(data: object) -> Label:
    f = _Fields(data, "label")
    return Label(
        label_id=f.text("label_id"),
        content_sha256=f.text("content_sha256"),
        object_key=f.text("object_key"),
        label=f.text("label"),
        model_label=f.opt_text("model_label"),
        model_known=f.opt_flag("model_known"),
        model_version=f.text("model_version"),
        source=f.text("source"),
        created_at=f.time("created_at"),
        image_id=f.opt_text("image_id"),
    )


def _readiness(data: object) -> Readiness:
    f = _Fields(data, "readiness")
    checks = [_Fields(c, "readiness check") for c in f.items("checks")]
    return Readiness(
        ready=f.flag("ready"),
        checks=tuple(
            Check(
                name=c.text("name"),
                ok=c.flag("ok"),
                detail=c.text("detail"),
                figures=tuple(str(x) for x in c.items("figures")),
            )
            for c in checks
        ),
    )


def _problem(response: httpx.Response) -> Problem:
    """The problem document of an error answer; a body that is none (a proxy's page) is
    summed up from the status line and the first characters of the body."""
    try:
        data = response.json()
    except ValueError:
        data = None
    request_id = response.headers.get("x-request-id")
    if isinstance(data, dict):
        if data.get("request_id") is not None:
            request_id = str(data["request_id"])
        return Problem(
            type=str(data.get("type") or "about:blank"),
            title=str(data.get("title") or response.reason_phrase),
            status=data["status"] if isinstance(data.get("status"), int) else response.status_code,
            detail=str(data.get("detail") or ""),
            request_id=request_id,
        )
    return Problem(
        type="about:blank",
        title=response.reason_phrase,
        status=response.status_code,
        detail=response.text[:200],
        request_id=request_id,
    )


def _seconds(value: str | None) -> float | None:
    """A ``Retry-After`` in seconds (an HTTP date is not waited out: None)."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _named(photo: Photo) -> tuple[str, bytes]:
    if isinstance(photo, tuple):
        return photo
    if isinstance(photo, bytes):
        return "upload", photo
    path = Path(photo)
    return path.name, path.read_bytes()


def _items(response: httpx.Response, what: str) -> list[object]:
    data = _json(response)
    if not isinstance(data, list):
        raise UnexpectedAnswerError(f"{what}: expected a JSON list, got {type(data).__name__}")
    return data


def _json(response: httpx.Response) -> object:
    try:
        return cast(object, response.json())
    except ValueError as exc:
        where = f"{response.request.method} {response.request.url.path}"
        raise UnexpectedAnswerError(f"{where}: the answer is not JSON") from exc


# --- the client ---------------------------------------------------------------------------


class Client:
    """One connection pool to one server; use it as a context manager, or ``close`` it.

    ``http``: an ``httpx.Client`` to send through instead of one of its own (a test's
    ``fastapi.testclient.TestClient``, a client with a proxy); it stays the caller's to
    close, its ``base_url`` is used when ``base_url`` is empty, and its own timeouts apply
    (``timeout`` is the client's own ``httpx.Client``'s, in seconds). ``transport``: the
    transport of the client's own ``httpx.Client`` (``httpx.MockTransport`` in tests)."""

    def __init__(
        self,
        base_url: str = "",
        token: str | None = None,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
        http: httpx.Client | None = None,
    ) -> None:
        try:
            import httpx
        except ImportError as exc:
            raise MissingDependencyError("httpx", "client") from exc
        self._httpx = httpx
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._owned = http is None
        if http is None:
            http = httpx.Client(base_url=base_url, timeout=timeout, transport=transport)
        self._http = http
        self.base_url = base_url.rstrip("/") if base_url else str(http.base_url).rstrip("/")

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._owned:
            self._http.close()

    # -- HTTP

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        url = f"{self.base_url}{path}"
        headers = {**self._headers, **kwargs.pop("headers", {})}
        try:
            return self._http.request(method, url, headers=headers, **kwargs)
        except self._httpx.UnsupportedProtocol as exc:
            raise ClientError(f"not an http(s) URL: {url!r}") from exc
        except self._httpx.TransportError as exc:
            raise ServerUnavailableError(url, exc) from exc

    def _call(
        self, method: str, path: str, ok: Sequence[int] = (), **kwargs: Any
    ) -> httpx.Response:
        """The answer of one request; an error status (not in ``ok``) is an ``ApiError``.
        A 429 with a short ``Retry-After`` is waited out and sent once more."""
        response = self._send(method, path, **kwargs)
        wait = _seconds(response.headers.get("retry-after"))
        if response.status_code == 429 and wait is not None and wait <= MAX_RETRY_AFTER:
            time.sleep(wait)
            response = self._send(method, path, **kwargs)
        if response.status_code >= 400 and response.status_code not in ok:
            raise ApiError(
                response.status_code,
                _problem(response),
                _seconds(response.headers.get("retry-after")),
            )
        return response

    def _page(
        self, path: str, read: Callable[[object], T], limit: int | None, cursor: str | None
    ) -> Page[T]:
        response = self._call("GET", path, params=_paging(limit, cursor))
        items = tuple(read(x) for x in _items(response, path))
        return Page(items, response.headers.get("x-next-cursor") or None)

    # -- photos

    def classify(self, photo: Photo, top_k: int | None = None) -> Classification:
        """One photo at once (a path, its bytes, or ``(name, bytes)``): its ``label``,
        ``confidence``, ``known`` and ``top_k`` guesses (``top_k``: how many, 1-50)."""
        name, data = _named(photo)
        params: dict[str, Any] = {"name": name}
        if top_k is not None:
            params["top_k"] = top_k
        headers = {"Content-Type": "application/octet-stream"}
        response = self._call("POST", "/v1/classify", content=data, params=params, headers=headers)
        return _classification(_json(response))

    # -- batches

    def submit(
        self,
        photos: Sequence[Photo],
        name: str = "",
        idempotency_key: str | None = None,
        callback: str | None = None,
    ) -> BatchReceipt:
        """A batch: its ``session_id`` and one entry per photo, in order, with its
        ``image_id`` (the key of its result row). With ``idempotency_key`` a retry of the
        same request (same key, same token) gets the first answer (``replayed``), not a
        second batch. With ``callback`` (a URL the server allows) the server POSTs a signed
        ``batch.complete`` document there once the batch is complete."""
        files = [("files", _named(p)) for p in photos]
        params: dict[str, str] = {"name": name}
        if callback is not None:
            params["callback"] = callback
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key is not None else {}
        response = self._call("POST", "/v1/batches", files=files, params=params, headers=headers)
        replayed = response.headers.get("idempotent-replayed", "").lower() == "true"
        return _receipt(_json(response), replayed)

    def progress(self, session_id: str) -> Progress:
        """How far a batch is: ``submitted``, ``done``, ``errors``, ``complete``."""
        return _progress(_json(self._call("GET", f"/v1/batches/{_segment(session_id)}")))

    def wait(self, session_id: str, timeout: float = 60.0, poll: float = 0.5) -> Progress:
        """Poll a batch's progress until it is complete, every ``poll`` seconds, for at most
        ``timeout`` seconds (then ``WaitTimeoutError``, with the last progress seen)."""
        deadline = time.monotonic() + timeout
        while True:
            seen = self.progress(session_id)
            if seen.complete:
                return seen
            left = deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeoutError(seen, timeout)
            time.sleep(min(poll, left))

    def results_page(
        self, session_id: str, limit: int | None = None, cursor: str | None = None
    ) -> ResultsPage:
        """One page of a batch's rows (``limit`` rows, the server's 1,000 by default), in
        file name order, from ``cursor`` (the ``next_cursor`` of the page before)."""
        path = f"/v1/batches/{_segment(session_id)}/results"
        response = self._call("GET", path, params=_paging(limit, cursor))
        return ResultsPage(
            items=tuple(_row(x) for x in _items(response, path)),
            next_cursor=response.headers.get("x-next-cursor") or None,
            complete=response.status_code == 200,
            pending=int(response.headers.get("x-results-pending", "0") or 0),
        )

    def iter_results(self, session_id: str, page_size: int | None = None) -> Iterator[ResultRow]:
        """Every row of a batch so far, page after page (``page_size`` rows a request)."""
        cursor: str | None = None
        while True:
            page = self.results_page(session_id, page_size, cursor)
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def results(
        self,
        session_id: str,
        wait: float | None = None,
        poll: float = 0.5,
        page_size: int | None = None,
    ) -> list[ResultRow]:
        """Every row of a batch, all pages; with ``wait``, first polls up to that many
        seconds for the batch to be complete (``WaitTimeoutError`` when it is not)."""
        if wait is not None:
            self.wait(session_id, timeout=wait, poll=poll)
        return list(self.iter_results(session_id, page_size))

    def results_csv(
        self,
        session_id: str,
        wait: float | None = None,
        poll: float = 0.5,
        page_size: int | None = None,
    ) -> bytes:
        """Every row of a batch as the server's CSV (UTF-8 bytes, one header line), all
        pages joined (``page_size`` rows a request); with ``wait``, once the batch is
        complete. ``.decode()`` it for text, or save it as it is."""
        if wait is not None:
            self.wait(session_id, timeout=wait, poll=poll)
        path = f"/v1/batches/{_segment(session_id)}/results"
        parts: list[bytes] = []
        cursor: str | None = None
        while True:
            response = self._call(
                "GET", path, params=_paging(page_size, cursor), headers={"Accept": "text/csv"}
            )
            body = response.content
            if parts:  # a later page: its rows, without the header line again
                body = body.split(b"\n", 1)[1] if b"\n" in body else b""
            parts.append(body)
            cursor = response.headers.get("x-next-cursor") or None
            if cursor is None:
                return b"".join(parts)

    def batches_page(
        self, limit: int | None = None, cursor: str | None = None
    ) -> Page[BatchSummary]:
        """One page of the history, newest first (``limit``: the server's 50 by default)."""
        return self._page("/v1/batches", _summary, limit, cursor)

    def batches(self, limit: int = 50) -> list[BatchSummary]:
        """The newest ``limit`` batches (one page; ``iter_batches`` for all)."""
        return list(self.batches_page(limit).items)

    def iter_batches(self, page_size: int | None = None) -> Iterator[BatchSummary]:
        """Every batch this token sees, newest first, page after page."""
        return _pages(lambda cursor: self.batches_page(page_size, cursor))

    # -- labels

    def label(self, image_id: str, label: str) -> Label:
        """Say what a batch photo shows, by its ``image_id`` (from the receipt or a row): a
        fruit, ``not-fruit`` or a new fruit's name; a confirmation is a label too."""
        body = {"image_id": image_id, "label": label}
        return _label(_json(self._call("POST", "/v1/labels", json=body)))

    def label_photo(self, photo: Photo, label: str) -> Label:
        """Say what a photo shows, sending the photo (a path, bytes or ``(name, bytes)``)."""
        files = {"file": _named(photo)}
        response = self._call("POST", "/v1/labels", files=files, data={"label": label})
        return _label(_json(response))

    def labels_page(self, limit: int | None = None, cursor: str | None = None) -> Page[Label]:
        """One page of the labels, each photo's current one, newest first (the server's 100
        a page by default)."""
        return self._page("/v1/labels", _label, limit, cursor)

    def labels(self, limit: int = 100) -> list[Label]:
        """The newest ``limit`` labels (one page; ``iter_labels`` for all)."""
        return list(self.labels_page(limit).items)

    def iter_labels(self, page_size: int | None = None) -> Iterator[Label]:
        """Every current label, newest first, page after page."""
        return _pages(lambda cursor: self.labels_page(page_size, cursor))

    def delete_label(self, label_id: str) -> None:
        """Take a label back; the photo's previous label, if any, is current again."""
        self._call("DELETE", f"/v1/labels/{_segment(label_id)}")

    # -- operations

    def healthy(self) -> bool:
        """Whether the process answers ``/healthz`` (``ServerUnavailableError`` when not)."""
        return self._call("GET", "/healthz").status_code == 200

    def readiness(self) -> Readiness:
        """``/readyz``: whether every backend answers, and each one's check (their details
        only with a token)."""
        return _readiness(_json(self._call("GET", "/readyz", ok=(503,))))

    def ready(self) -> bool:
        """Whether the server is ready to take work: False when it says not, does not
        answer at all, or a proxy in front of it answers a server error (502, 504)."""
        try:
            return self.readiness().ready
        except ServerUnavailableError:
            return False
        except ApiError as exc:
            if exc.status >= 500:
                return False
            raise


def _paging(limit: int | None, cursor: str | None) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if limit is not None:
        params["limit"] = limit
    if cursor is not None:
        params["cursor"] = cursor
    return params


def _pages(fetch: Callable[[str | None], Page[T]]) -> Iterator[T]:
    cursor: str | None = None
    while True:
        page = fetch(cursor)
        yield from page.items
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


def _segment(value: str) -> str:
    """An id as one path segment: nothing in it can leave the route."""
    return quote(value, safe="")


__all__ = [
    "ApiError",
    "BatchReceipt",
    "BatchSummary",
    "Check",
    "Classification",
    "Client",
    "ClientError",
    "Label",
    "Page",
    "Photo",
    "PhotoReceipt",
    "Problem",
    "Progress",
    "Readiness",
    "ResultRow",
    "ResultsPage",
    "ServerUnavailableError",
    "TopK",
    "UnexpectedAnswerError",
    "WaitTimeoutError",
]
