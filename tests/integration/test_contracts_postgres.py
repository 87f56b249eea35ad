"""The SQL adapters' contract suite (``tests/contracts.py``) on PostgreSQL: the database at
``FRUITSTREAM_TEST_POSTGRES_URL``, else the local stack's (``scripts/stack up``). Each test
gets a schema of its own (dropped after it), so that they start empty as on SQLite."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from fruitstream.adapters.local_queue import SqlQueue
from fruitstream.adapters.sql import SqlDatabase
from tests.contracts import (
    CallbacksContract,
    HeartbeatsContract,
    IdempotencyKeysContract,
    LabelStoreContract,
    ModelVersionsContract,
    QueueContract,
    QueueUnderTest,
    ResultStoreContract,
    SessionStoreContract,
    SubmitLogContract,
)
from tests.stack import stack_env

pytestmark = pytest.mark.distributed


def _postgres_url() -> sa.URL:
    url = os.environ.get("FRUITSTREAM_TEST_POSTGRES_URL") or stack_env()["FRUITSTREAM_DATABASE_URL"]
    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "postgresql":
        pytest.fail(f"not a PostgreSQL URL: {parsed.render_as_string(hide_password=True)}")
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


@pytest.fixture
def database() -> Iterator[SqlDatabase]:
    url = _postgres_url()
    schema = f"contract_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(url)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    # Every connection of the adapter's engine finds its tables in that schema only.
    own = url.update_query_dict({"options": f"-csearch_path={schema}"})
    db = SqlDatabase.from_url(own.render_as_string(hide_password=False))
    try:
        yield db
    finally:
        db.engine.dispose()
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def queue(database: SqlDatabase) -> QueueUnderTest:
    producer = SqlQueue(database)
    return QueueUnderTest(
        producer, lambda owner: SqlQueue(database, owner=owner, lease_seconds=30), producer.depth
    )


def test_each_test_has_a_schema_of_its_own(database: SqlDatabase) -> None:
    with database.begin() as conn:
        schema = conn.execute(sa.text("SELECT current_schema()")).scalar_one()
    assert schema.startswith("contract_")
    assert database.sessions() == []


class TestQueueOnPostgres(QueueContract):
    pass


class TestResultStoreOnPostgres(ResultStoreContract):
    pass


class TestSessionStoreOnPostgres(SessionStoreContract):
    pass


class TestSubmitLogOnPostgres(SubmitLogContract):
    pass


class TestHeartbeatsOnPostgres(HeartbeatsContract):
    pass


class TestIdempotencyKeysOnPostgres(IdempotencyKeysContract):
    pass


class TestCallbacksOnPostgres(CallbacksContract):
    pass


class TestLabelStoreOnPostgres(LabelStoreContract):
    pass


class TestModelVersionsOnPostgres(ModelVersionsContract):
    pass
