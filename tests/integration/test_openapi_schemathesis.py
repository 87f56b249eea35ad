"""The server answers as its OpenAPI document says: schemathesis, every phase and every check,
over the fakes (no model, no server). It is here, not in tests/unit, for its 25-45 s."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fruitstream.entrypoints.api import create_app
from tests.fakes import fake_world

TOKEN = "openapi-token-0123456789"


@pytest.mark.slow
def test_the_server_answers_as_its_document_says_every_check(tmp_path: Path) -> None:
    """schemathesis over the served document, every phase (examples, coverage, fuzzing,
    stateful) and every check (``--checks all``): status codes, media types, headers and
    bodies as declared, valid requests accepted, invalid ones refused, no 5xx, a missing or
    wrong token refused, deleted labels gone. Bounded (5 examples an operation): 25-45 s
    on 2 shared cores."""
    import schemathesis
    from schemathesis.config import SchemathesisConfig
    from schemathesis.engine import events, from_schema
    from schemathesis.generation import GenerationMode

    world = fake_world(tmp_path)
    # Any bytes fit "binary": that they decode as a photo no schema can say. The fake reads
    # every photo it does not know as an apple, so that a valid request is a valid photo.
    known = world.classifier.classify
    world.classifier.classify = lambda data, top_k=3: known(  # type: ignore[method-assign]
        data if data.startswith(b"fruit:") else b"fruit:apple", top_k
    )
    app = create_app(world.service, tokens=[TOKEN])
    config = SchemathesisConfig()
    project = config.projects.default
    project.update(headers={"Authorization": f"Bearer {TOKEN}"}, continue_on_failure=True)
    project.checks.update(included_check_names=["all"])
    project.generation.update(
        modes=list(GenerationMode), max_examples=5, deterministic=True, database="none"
    )
    failures: dict[tuple[str, str], str] = {}
    errors: list[str] = []
    with TestClient(app):  # the lifespan: the service and its worker
        schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)

        @schema.hook
        def filter_failure(_context: Any, failure: Any, case: Any, response: Any) -> bool:
            """Keep every failure but those that are not the server's: a callback URL the
            operator's allow-list refuses (no schema can say which hosts it lists), and an
            OPTIONS of a deleted label (it says what the path allows, whatever it names)."""
            if (
                case.method.upper() == "OPTIONS"
                and failure.title == "Deleted resource still available"
            ):
                return False
            try:
                kind = json.loads(response.content).get("type", "")
            except (ValueError, AttributeError):
                kind = ""
            # And an Idempotency-Key the run sends again with another body: refusing it
            # (422) is the IETF draft's rule, which depends on what came before.
            stateful = (":callback-refused", ":idempotency-key-reused")
            return not (
                kind.endswith(stateful) and failure.title == "Schema-valid request rejected"
            )

        for event in from_schema(schema).execute():
            if isinstance(event, events.ScenarioFinished):
                for nodes in event.recorder.checks.values():
                    for node in nodes:
                        if node.failure_info is not None:
                            failure = node.failure_info.failure
                            key = (str(event.label), failure.title)
                            how = f"{failure.message}\n{node.failure_info.code_sample}"
                            failures.setdefault(key, how)
            elif isinstance(event, events.NonFatalError):
                errors.append(f"{event.label}: {event.info}")
            elif isinstance(event, events.FatalError):
                errors.append(repr(event.exception))
    world.service.stop(timeout=5)
    assert errors == []
    assert failures == {}, "\n\n".join(f"{k}: {v}" for k, v in failures.items())
