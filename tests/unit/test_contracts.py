"""The ports' contract suite (``tests/contracts.py``) on each real adapter that needs no server
and on its fake: LocalObjectStore and MemoryObjectStore, SqlQueue and MemoryQueue, and
SqlDatabase and MemoryResultsDatabase, over a local folder and a SQLite file."""

from __future__ import annotations

from pathlib import Path

import pytest

from fruitstream.adapters.local_queue import SqlQueue
from fruitstream.adapters.local_store import LocalObjectStore
from fruitstream.adapters.sql import SqlDatabase
from fruitstream.ports import ObjectStore, ResultsDatabase
from tests.contracts import (
    CallbacksContract,
    HeartbeatsContract,
    IdempotencyKeysContract,
    LabelStoreContract,
    ModelVersionsContract,
    ObjectStoreContract,
    QueueContract,
    QueueUnderTest,
    ResultStoreContract,
    SessionStoreContract,
    SubmitLogContract,
)
from tests.fakes import MemoryObjectStore, MemoryQueue, MemoryResultsDatabase


def _sqlite(tmp_path: Path) -> SqlDatabase:
    return SqlDatabase.from_url(f"sqlite:///{tmp_path / 'contract.db'}")


@pytest.fixture(params=["local", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return LocalObjectStore(tmp_path / "objects")
    return MemoryObjectStore()


@pytest.fixture(params=["sql", "memory"])
def queue(request: pytest.FixtureRequest, tmp_path: Path) -> QueueUnderTest:
    if request.param == "sql":
        db = _sqlite(tmp_path)
        producer = SqlQueue(db)
        return QueueUnderTest(
            producer, lambda owner: SqlQueue(db, owner=owner, lease_seconds=30), producer.depth
        )
    memory = MemoryQueue()  # one queue object: every consumer is the same
    return QueueUnderTest(memory, lambda _owner: memory, memory.depth)


@pytest.fixture(params=["sql", "memory"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> ResultsDatabase:
    return _sqlite(tmp_path) if request.param == "sql" else MemoryResultsDatabase()


class TestObjectStore(ObjectStoreContract):
    pass


class TestQueue(QueueContract):
    pass


class TestResultStore(ResultStoreContract):
    pass


class TestSessionStore(SessionStoreContract):
    pass


class TestSubmitLog(SubmitLogContract):
    pass


class TestHeartbeats(HeartbeatsContract):
    pass


class TestIdempotencyKeys(IdempotencyKeysContract):
    pass


class TestCallbacks(CallbacksContract):
    pass


class TestLabelStore(LabelStoreContract):
    pass


class TestModelVersions(ModelVersionsContract):
    pass
