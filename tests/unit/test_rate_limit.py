"""The API's rate limit (over the fakes): one bucket per token owner however the header spells
the token, failed authentications limited per address, a bucket table that stays small."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from fruitstream.entrypoints.api import create_app
from fruitstream.entrypoints.api.guard import RateLimiter, matched_token
from tests.fakes import fake_world

TOKEN = "rate-token-0123456789"
OTHER = "rate-other-0123456789"


def test_every_spelling_of_a_token_is_one_bucket(tmp_path: Path) -> None:
    world = fake_world(tmp_path, api_rate_limit=0.01, api_rate_burst=3)
    with TestClient(create_app(world.service, tokens=[TOKEN, OTHER])) as client:
        spellings = [f"Bearer {TOKEN}", f"bearer {TOKEN}", f"BEARER    {TOKEN}"]
        got = [client.get("/v1/batches", headers={"authorization": h}) for h in spellings]
        assert [r.status_code for r in got] == [200, 200, 200]
        limited = client.get("/v1/batches", headers={"authorization": f"Bearer {TOKEN}"})
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        other = client.get("/v1/batches", headers={"authorization": f"Bearer {OTHER}"})
        assert other.status_code == 200  # another owner, its own bucket
    world.service.stop(timeout=5)


def test_failed_authentications_are_limited_per_address(tmp_path: Path) -> None:
    world = fake_world(tmp_path, api_rate_limit=0.01, api_rate_burst=2)
    with TestClient(create_app(world.service, tokens=[TOKEN])) as client:
        guesses = [{"authorization": f"Bearer guess-{i}"} for i in range(2)]
        assert [client.get("/v1/batches", headers=h).status_code for h in guesses] == [401, 401]
        flood = client.get("/v1/batches", headers={"authorization": "Bearer guess-3"})
        assert flood.status_code == 429, flood.text
        assert flood.json()["type"] == "urn:fruitstream:problem:rate-limited"
        assert int(flood.headers["retry-after"]) >= 1
        assert client.get("/v1/batches").status_code == 429  # no token at all counts too
        good = client.get("/v1/batches", headers={"authorization": f"Bearer {TOKEN}"})
        assert good.status_code == 200  # the token's own bucket, not the address's failures
    world.service.stop(timeout=5)


def test_without_tokens_every_header_of_an_address_is_one_bucket(tmp_path: Path) -> None:
    world = fake_world(tmp_path, api_rate_limit=0.01, api_rate_burst=2)
    with TestClient(create_app(world.service, tokens=[])) as client:
        codes = [
            client.get("/v1/batches", headers={"authorization": f"Bearer any-{i}"}).status_code
            for i in range(3)
        ]
        assert codes == [200, 200, 429]
    world.service.stop(timeout=5)


def test_the_bucket_table_stays_bounded() -> None:
    now = [0.0]
    limiter = RateLimiter(max_buckets=50, clock=lambda: now[0])
    for i in range(1000):  # many distinct callers at once
        limiter.wait_for(f"address:10.0.{i // 250}.{i % 250}", rate=1.0, burst=5)
        assert len(limiter) <= 50
    now[0] += 5.0  # burst / rate: every bucket is full again, the same as none
    assert limiter.wait_for("address:10.9.9.9", rate=1.0, burst=5) == 0.0
    assert len(limiter) == 1


def test_a_busy_bucket_outlives_idle_ones() -> None:
    now = [0.0]
    limiter = RateLimiter(clock=lambda: now[0])
    assert [limiter.wait_for("busy", rate=1.0, burst=2) for _ in range(2)] == [0.0, 0.0]
    limiter.wait_for("idle", rate=1.0, burst=2)
    now[0] += 1.0
    assert limiter.wait_for("busy", rate=1.0, burst=2) == 0.0  # refilled one, took it
    assert limiter.wait_for("busy", rate=1.0, burst=2) == 1.0  # empty: kept, still limited
    now[0] += 1.5  # "idle" untouched for 2.5 s >= 2 s: full, dropped
    limiter.wait_for("third", rate=1.0, burst=2)
    assert len(limiter) == 2  # "busy" (touched 1.5 s ago) and "third"


def test_the_matched_token_whatever_the_spelling() -> None:
    tokens = [TOKEN, OTHER]
    for header in (f"Bearer {TOKEN}", f"bearer {TOKEN}", f"BEARER   {TOKEN}  "):
        assert matched_token(header, tokens) == TOKEN
    assert matched_token(f"Bearer {OTHER}", tokens) == OTHER
    for header in (f"Basic {TOKEN}", TOKEN, "Bearer ", "", None, f"Bearer {TOKEN}x"):
        assert matched_token(header, tokens) is None
    assert matched_token(f"Bearer {TOKEN}", []) is None
