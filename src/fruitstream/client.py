"""A Python client of the fruitstream HTTP API (extra 'client': httpx), for integrators.

    from fruitstream.client import Client

    with Client("https://fruit.example", token="...") as api:
        print(api.classify(Path("banana.jpg"))["label"])
        batch = api.submit([Path("a.jpg"), Path("b.jpg")], name="market")
        rows = api.results(batch["session_id"], wait=60)

Every error answer becomes an ``ApiError`` carrying the problem document: its ``type`` (the
kinds docs/HTTP_API.md lists), ``status``, ``detail`` and the ``request_id`` to find in the server's
log. The client follows ``Retry-After`` on 429 once per call.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from fruitstream.errors import FruitstreamError, MissingDependencyError

if TYPE_CHECKING:
    import httpx

Photo = Path | tuple[str, bytes]


class ApiError(FruitstreamError):
    """An error answer of the API, with its problem document."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        self.type = str(problem.get("type", "about:blank"))
        self.request_id = problem.get("request_id")
        super().__init__(f"{status} {problem.get('title', '')}: {problem.get('detail', '')}")


def _named(photo: Photo) -> tuple[str, bytes]:
    if isinstance(photo, Path):
        return photo.name, photo.read_bytes()
    return photo


class Client:
    """One connection pool to one server; use it as a context manager, or ``close`` it."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        try:
            import httpx
        except ImportError as exc:
            raise MissingDependencyError("httpx", "client") from exc
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(
            base_url=base_url, headers=headers, timeout=timeout, transport=transport
        )

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
        self._http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self._http.request(method, path, **kwargs)
        if response.status_code == 429 and "retry-after" in response.headers:
            time.sleep(float(response.headers["retry-after"]))
            response = self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            try:
                problem = response.json()
            except ValueError:
                problem = {"title": response.reason_phrase, "detail": response.text[:200]}
            raise ApiError(response.status_code, problem if isinstance(problem, dict) else {})
        return response

    def classify(self, photo: Photo, top_k: int | None = None) -> dict[str, Any]:
        """One photo at once: ``label``, ``confidence``, ``known``, ``top_k``."""
        name, data = _named(photo)
        params: dict[str, Any] = {"name": name}
        if top_k is not None:
            params["top_k"] = top_k
        headers = {"Content-Type": "application/octet-stream"}
        answer: dict[str, Any] = self._call(
            "POST", "/v1/classify", content=data, params=params, headers=headers
        ).json()
        return answer

    def submit(self, photos: Sequence[Photo], name: str = "") -> dict[str, Any]:
        """A batch: ``session_id`` and one entry per photo, in order, with its ``image_id``."""
        files = [("files", _named(p)) for p in photos]
        answer: dict[str, Any] = self._call(
            "POST", "/v1/batches", files=files, params={"name": name}
        ).json()
        return answer

    def progress(self, session_id: str) -> dict[str, Any]:
        answer: dict[str, Any] = self._call("GET", f"/v1/batches/{session_id}").json()
        return answer

    def results(
        self, session_id: str, wait: float | None = None, poll: float = 0.5
    ) -> list[dict[str, Any]]:
        """The rows of a batch; with ``wait``, polls up to that many seconds for every row
        (``TimeoutError`` when they are not all there by then)."""
        deadline = None if wait is None else time.monotonic() + wait
        while True:
            response = self._call("GET", f"/v1/batches/{session_id}/results")
            rows: list[dict[str, Any]] = response.json()
            if response.status_code == 200 or deadline is None:
                return rows
            if time.monotonic() >= deadline:
                pending = response.headers.get("x-results-pending", "?")
                raise TimeoutError(f"{pending} photos of {session_id} still pending")
            time.sleep(poll)

    def batches(self, limit: int = 50) -> list[dict[str, Any]]:
        answer: list[dict[str, Any]] = self._call(
            "GET", "/v1/batches", params={"limit": limit}
        ).json()
        return answer

    def ready(self) -> bool:
        return self._http.get("/readyz").status_code == 200
