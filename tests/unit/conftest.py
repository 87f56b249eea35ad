"""The unit tier runs over the fakes only: collecting a test here that needs the model file,
the dataset, a browser, the stack or minutes (its markers, or the fixtures that stand for
them) fails the run, naming the test."""

from __future__ import annotations

import pytest

from tests.conftest import NOT_IN_UNIT, unit_tier_violations


# First: before ``-m`` deselects any, so that a marked test is caught whatever the selection.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    found = unit_tier_violations(items)
    if found:
        raise pytest.UsageError(
            f"tests/unit runs over tests/fakes.py only (no {'/'.join(sorted(NOT_IN_UNIT))}); "
            "move these tests to tests/integration:\n  " + "\n  ".join(found)
        )
