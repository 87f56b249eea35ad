"""The Python client (``fruitstream.client``) over the real app, in process: its typed answers
mirror the API's schemas, it follows the server's pages, replays an idempotent submit, labels,
downloads the CSV, and says so in its own errors when the server refuses or does not answer."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from fruitstream.client import (
    ApiError,
    BatchReceipt,
    BatchSummary,
    Check,
    Classification,
    Client,
    ClientError,
    Label,
    PhotoReceipt,
    Problem,
    Progress,
    Readiness,
    ResultRow,
    ServerUnavailableError,
    TopK,
    UnexpectedAnswerError,
    WaitTimeoutError,
)
from fruitstream.entrypoints.api import create_app
from fruitstream.entrypoints.api import schemas as api
from fruitstream.errors import FruitstreamError
from tests.fakes import FakeWorld, fake_world

TOKEN = "client-token-a-0123456789"
OTHER = "client-token-b-0123456789"
# Five photos (file names in order): more than one page of two.
FIVE = ("apple", "banana", "orange", "?", "apple")


@pytest.fixture
def world(tmp_path: Path) -> Iterator[FakeWorld]:
    w = fake_world(
        tmp_path, api_callback_hosts="https://hooks.example", api_callback_secret="s" * 24
    )
    yield w
    w.service.stop(timeout=5)


@pytest.fixture
def server(world: FakeWorld) -> Iterator[TestClient]:
    """The app with two tokens, started (its worker classifies the batches)."""
    with TestClient(create_app(world.service, tokens=[TOKEN, OTHER])) as http:
        yield http


@pytest.fixture
def client(server: TestClient) -> Iterator[Client]:
    with Client(token=TOKEN, http=server) as api:
        yield api


def _photos(*labels: str) -> list[tuple[str, bytes]]:
    return [(f"{i:02d}-{label}.jpg", f"fruit:{label}".encode()) for i, label in enumerate(labels)]


# --- typed answers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ours", "theirs", "extra"),
    [
        (TopK, api.TopKOut, ()),
        (Classification, api.ClassifyOut, ()),
        (PhotoReceipt, api.PhotoOut, ()),
        (BatchReceipt, api.BatchOut, ("replayed",)),  # the Idempotent-Replayed header
        (Progress, api.ProgressOut, ()),
        (BatchSummary, api.SessionOut, ()),
        (ResultRow, api.ResultOut, ()),
        (Label, api.LabelOut, ()),
        (Check, api.CheckOut, ()),
        (Readiness, api.ReadyOut, ()),
        (Problem, api.Problem, ()),
    ],
)
def test_each_answer_mirrors_the_apis_schema(
    ours: type, theirs: type[BaseModel], extra: tuple[str, ...]
) -> None:
    """One dataclass field per schema field, same names: a field the API adds or renames
    fails here, not in an integrator's code."""
    assert dataclasses.is_dataclass(ours) and ours.__dataclass_params__.frozen  # type: ignore[attr-defined]
    names = {f.name for f in dataclasses.fields(ours)}
    assert names == set(theirs.model_fields) | set(extra)


def test_a_misspelt_field_is_an_error_not_a_key_lookup(client: Client) -> None:
    answer = client.classify(b"fruit:banana")
    with pytest.raises(AttributeError):
        answer.label_typo  # type: ignore[attr-defined]  # noqa: B018
    with pytest.raises(dataclasses.FrozenInstanceError):
        answer.label = "kiwi"  # type: ignore[misc]


def test_classify_by_bytes_path_or_name_gives_a_classification(
    client: Client, tmp_path: Path
) -> None:
    one = client.classify(b"fruit:banana", top_k=2)
    assert isinstance(one, Classification)
    assert (one.label, one.guess, one.known, one.error) == ("banana", "banana", True, None)
    assert one.path == "upload" and isinstance(one.confidence, float)
    assert len(one.top_k) == 2 and isinstance(one.top_k[0], TopK)
    assert one.top_k[0].label == "banana"
    photo = tmp_path / "kiwi.jpg"
    photo.write_bytes(b"fruit:?")
    unknown = client.classify(photo)
    assert (unknown.path, unknown.label, unknown.known) == ("kiwi.jpg", None, False)
    assert unknown.guess is not None
    assert client.classify(str(photo)).path == "kiwi.jpg"
    assert client.classify(("named.jpg", b"fruit:apple")).label == "apple"


def test_a_batch_is_submitted_followed_and_read_typed(client: Client) -> None:
    receipt = client.submit([*_photos("apple", "?"), ("empty.jpg", b"")], name="shelf")
    assert isinstance(receipt, BatchReceipt) and not receipt.replayed
    assert (receipt.submitted, receipt.queued) == (3, 2)
    assert [p.state for p in receipt.photos] == ["queued", "queued", "rejected"]
    assert receipt.rejected.keys() == {"empty.jpg"} and receipt.photos[2].reason
    done = client.wait(receipt.session_id, timeout=20, poll=0.02)
    assert isinstance(done, Progress) and done.complete and done.submitted == 3
    assert client.progress(receipt.session_id) == done
    rows = client.results(receipt.session_id)
    by_id = {r.image_id: r for r in rows}
    assert [by_id[p.image_id].status for p in receipt.photos] == ["ok", "ok", "error"]
    apple = by_id[receipt.photos[0].image_id]
    assert apple.label == "apple" and apple.known is True and apple.top_k[0].label == "apple"
    assert isinstance(apple.submitted_at, datetime) and apple.processed_at.tzinfo is not None
    assert by_id[receipt.photos[2].image_id].error
    [summary] = client.batches()
    assert isinstance(summary, BatchSummary)
    assert (summary.session_id, summary.name, summary.complete) == (
        receipt.session_id,
        "shelf",
        True,
    )
    assert isinstance(summary.created_at, datetime)


def test_results_with_wait_poll_until_complete(client: Client) -> None:
    receipt = client.submit(_photos("apple", "banana"))
    rows = client.results(receipt.session_id, wait=20, poll=0.02)
    assert sorted(r.label or "" for r in rows) == ["apple", "banana"]


def test_a_wait_that_runs_out_says_how_far_the_batch_got(tmp_path: Path) -> None:
    world = fake_world(tmp_path, start_workers=False)  # nobody classifies: it stays queued
    try:
        with TestClient(create_app(world.service, tokens=[])) as http, Client(http=http) as api:
            receipt = api.submit(_photos("apple"))
            with pytest.raises(WaitTimeoutError) as late:
                api.wait(receipt.session_id, timeout=0.2, poll=0.05)
            assert isinstance(late.value, TimeoutError) and isinstance(late.value, ClientError)
            assert late.value.progress.session_id == receipt.session_id
            assert late.value.progress.done == 0 and not late.value.progress.complete
            page = api.results_page(receipt.session_id)
            assert page.items == () and not page.complete and page.pending == 1
    finally:
        world.service.stop(timeout=5)


# --- paging -------------------------------------------------------------------------------


def test_the_iterators_follow_every_page(client: Client, server: TestClient) -> None:
    receipt = client.submit(_photos(*FIVE))
    client.wait(receipt.session_id, timeout=20, poll=0.02)
    first = client.results_page(receipt.session_id, limit=2)
    assert len(first.items) == 2 and first.next_cursor is not None and first.complete
    second = client.results_page(receipt.session_id, limit=2, cursor=first.next_cursor)
    assert {r.image_id for r in first.items}.isdisjoint(r.image_id for r in second.items)
    rows = list(client.iter_results(receipt.session_id, page_size=2))  # 3 pages
    assert [r.filename for r in rows] == [n for n, _ in _photos(*FIVE)]
    assert {r.image_id for r in rows} == {p.image_id for p in receipt.photos}
    assert client.results(receipt.session_id, page_size=2) == rows
    more = [client.submit(_photos("apple"), name=f"b{i}").session_id for i in range(4)]
    newest_first = [s.session_id for s in client.iter_batches(page_size=2)]  # 5 batches: 3 pages
    assert newest_first == [*reversed(more), receipt.session_id]
    page = client.batches_page(limit=2)
    assert len(page.items) == 2 and page.next_cursor is not None
    assert [s.session_id for s in client.batches(limit=3)] == newest_first[:3]
    with pytest.raises(ApiError) as bad:
        client.results_page(receipt.session_id, cursor="nope")
    assert bad.value.status == 404 and bad.value.kind == "unknown-cursor"


def test_another_tokens_batch_is_not_found(client: Client, server: TestClient) -> None:
    receipt = client.submit(_photos("apple"))
    with Client(token=OTHER, http=server) as other:
        assert list(other.iter_batches()) == []
        with pytest.raises(ApiError) as hidden:
            other.results(receipt.session_id)
    assert hidden.value.status == 404 and hidden.value.kind == "not-found"


# --- idempotency and callbacks ------------------------------------------------------------


def test_an_idempotent_retry_gets_the_first_answer(client: Client, world: FakeWorld) -> None:
    photos = _photos("apple", "banana")
    first = client.submit(photos, name="retry", idempotency_key="order-42")
    again = client.submit(photos, name="retry", idempotency_key="order-42")
    assert not first.replayed and again.replayed
    assert dataclasses.replace(again, replayed=False) == first
    assert len(world.db.session_records) == 1  # one batch, not two
    other = client.submit(photos, name="retry", idempotency_key="order-43")
    assert other.session_id != first.session_id and not other.replayed


def test_a_callback_is_sent_to_the_server(client: Client, world: FakeWorld) -> None:
    """The server checks ``callback=``: one it may not call is refused before anything is
    stored (the accepted path and its signature: tests/unit/test_callbacks.py)."""
    with pytest.raises(ApiError) as refused:
        client.submit(_photos("apple"), callback="https://evil.example/hook")
    assert refused.value.status == 422 and refused.value.kind == "callback-refused"
    assert world.db.session_records == {}


# --- labels -------------------------------------------------------------------------------


def test_labels_by_image_id_or_photo_listed_paged_and_deleted(client: Client) -> None:
    receipt = client.submit(_photos("?", "banana"))
    client.wait(receipt.session_id, timeout=20, poll=0.02)
    unsure, sure = (p.image_id for p in receipt.photos)
    made = client.label(unsure, "Mango")
    assert isinstance(made, Label) and isinstance(made.created_at, datetime)
    assert (made.label, made.image_id, made.model_known, made.source) == (
        "mango", unsure, False, "api"
    )  # fmt: skip
    confirmed = client.label(sure, "banana")
    sent = client.label_photo(("shelf.jpg", b"fruit:apple#2"), "apple")
    assert sent.image_id is None and sent.model_label == "apple"
    newest_first = [x.label_id for x in client.iter_labels(page_size=2)]  # 3 labels: 2 pages
    assert newest_first == [sent.label_id, confirmed.label_id, made.label_id]
    page = client.labels_page(limit=2)
    assert len(page.items) == 2 and page.next_cursor is not None
    assert [x.label for x in client.labels()] == ["apple", "banana", "mango"]
    client.delete_label(sent.label_id)
    assert [x.label_id for x in client.labels()] == [confirmed.label_id, made.label_id]
    with pytest.raises(ApiError) as absurd:
        client.label(sure, "<script>")
    assert absurd.value.status == 422
    with pytest.raises(ApiError) as missing:
        client.label("no-such-image", "kiwi")
    assert missing.value.status == 404 and missing.value.kind == "not-found"


# --- CSV ----------------------------------------------------------------------------------


def test_the_csv_joins_every_page_under_one_header(client: Client) -> None:
    receipt = client.submit(_photos(*FIVE))
    csv = client.results_csv(receipt.session_id, wait=20, poll=0.02, page_size=2)
    assert isinstance(csv, bytes)
    lines = csv.decode().splitlines()
    assert lines[0].startswith("image_id,session_id,filename")
    assert len(lines) == 6 and sum(line.startswith("image_id,") for line in lines) == 1
    assert [line.split(",")[2] for line in lines[1:]] == [n for n, _ in _photos(*FIVE)]
    assert client.results_csv(receipt.session_id) == csv  # one page: the same file


# --- operations ---------------------------------------------------------------------------


def test_health_and_readiness(client: Client) -> None:
    assert client.healthy() and client.ready()
    ready = client.readiness()
    assert isinstance(ready, Readiness) and ready.ready
    assert ready.checks and all(isinstance(c, Check) for c in ready.checks)
    assert {c.name for c in ready.checks} >= {"storage"}


# --- errors -------------------------------------------------------------------------------


def test_a_problem_document_is_an_api_error(client: Client, server: TestClient) -> None:
    with pytest.raises(ApiError) as missing:
        client.progress("no-such-batch")
    error = missing.value
    assert isinstance(error, ClientError) and isinstance(error, FruitstreamError)
    assert error.status == 404 and error.type == "urn:fruitstream:problem:not-found"
    assert error.kind == "not-found" and error.title and error.detail
    assert error.request_id and error.request_id in str(error)
    assert error.problem.status == 404
    intruder = Client(token="wrong-token-0123456789", http=server)
    with intruder, pytest.raises(ApiError) as refused:
        intruder.batches()
    assert refused.value.status == 401 and refused.value.kind == "unauthorized"
    with pytest.raises(ApiError) as bad:
        client.classify(b"not a photo")
    assert bad.value.status == 422


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # closed again: nothing listens there


def test_a_server_that_is_not_there_is_server_unavailable() -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    with Client(url, timeout=5) as api:
        with pytest.raises(ServerUnavailableError) as down:
            api.classify(b"fruit:apple")
        assert not api.ready()  # a probe says no rather than raising
    error = down.value
    assert isinstance(error, ClientError)
    assert error.url == f"{url}/v1/classify" and url in str(error)
    assert isinstance(error.__cause__, httpx.ConnectError) and error.cause is error.__cause__


def test_a_server_that_does_not_answer_in_time_is_server_unavailable() -> None:
    with socket.socket() as listener:  # accepts connections (the backlog), never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        with Client(url, timeout=0.3) as api, pytest.raises(ServerUnavailableError) as slow:
            api.progress("x")
    assert isinstance(slow.value.__cause__, httpx.TimeoutException)


def _scripted(
    *answers: httpx.Response, token: str | None = None
) -> tuple[Client, list[httpx.Request]]:
    """A client of a server that gives these answers in turn (the last one again after)."""
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers[min(len(seen), len(answers)) - 1]

    return Client("http://fruit.test", token=token, transport=httpx.MockTransport(answer)), seen


def test_a_429_with_a_short_retry_after_is_waited_out_once() -> None:
    limited = httpx.Response(429, headers={"Retry-After": "0"}, json={"title": "t", "detail": "d"})
    progress = {"session_id": "s", "submitted": 1, "done": 1, "errors": 0, "complete": True}
    api, seen = _scripted(limited, httpx.Response(200, json=progress), token="t")
    with api:
        assert api.progress("s").complete
    assert len(seen) == 2 and seen[0].headers["authorization"] == "Bearer t"
    api, seen = _scripted(limited)
    with api, pytest.raises(ApiError) as again:
        api.progress("s")
    assert len(seen) == 2 and again.value.status == 429 and again.value.retry_after == 0


def test_answers_that_are_not_the_api_s_are_said_so() -> None:
    """A proxy's error page, or a server of another kind, never a KeyError."""
    page = httpx.Response(502, text="<html>Bad gateway</html>", headers={"X-Request-ID": "r1"})
    api, _ = _scripted(page)
    with api, pytest.raises(ApiError) as proxy:
        api.progress("s")
    assert proxy.value.status == 502 and proxy.value.type == "about:blank"
    assert "Bad gateway" in proxy.value.detail and proxy.value.request_id == "r1"
    api, _ = _scripted(page)
    with api:
        assert not api.ready()  # the probe: not ready, rather than an error
    api, _ = _scripted(httpx.Response(200, json={"session_id": "s"}))
    with api, pytest.raises(UnexpectedAnswerError, match="submitted"):
        api.progress("s")
    api, _ = _scripted(httpx.Response(200, text="hello"))
    with api, pytest.raises(UnexpectedAnswerError, match="not JSON"):
        api.batches()


def test_an_id_stays_one_path_segment() -> None:
    api, seen = _scripted(httpx.Response(204))
    with api:
        api.delete_label("../batches/x?y")
    assert seen[0].url.raw_path == b"/v1/labels/..%2Fbatches%2Fx%3Fy"
