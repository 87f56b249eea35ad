"""The tiers by folder: no test under tests/unit needs the model file, the dataset, a browser,
the stack or minutes (``tests/unit/conftest.py`` fails the collection of one that does)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import NOT_IN_UNIT, UNIT, unit_tier_violations
from tests.unit import conftest as unit_conftest

TESTS = UNIT.parent


@dataclass
class Item:
    """What the rule reads of a collected test."""

    path: Path
    marks: tuple[str, ...] = ()
    fixturenames: tuple[str, ...] = ()
    nodeid: str = field(init=False)

    def __post_init__(self) -> None:
        self.nodeid = f"{self.path.relative_to(TESTS.parent)}::test_x"

    def iter_markers(self) -> Iterator[pytest.Mark]:
        return iter(getattr(pytest.mark, name).mark for name in self.marks)


def test_every_marker_of_another_tier_is_refused_under_tests_unit() -> None:
    here = UNIT / "test_x.py"
    for name in sorted(NOT_IN_UNIT):
        assert unit_tier_violations([Item(here, (name,))]) == [
            f"tests/unit/test_x.py::test_x ({name})"
        ]
    assert unit_tier_violations([Item(here, ("parametrize", "timeout"))]) == []
    assert unit_tier_violations([Item(here)]) == []


def test_the_model_and_dataset_fixtures_count_as_their_markers() -> None:
    item = Item(UNIT / "test_x.py", fixturenames=("tmp_path", "classifier", "dataset"))
    assert unit_tier_violations([item]) == ["tests/unit/test_x.py::test_x (dataset, model)"]


def test_the_other_tiers_may_need_anything() -> None:
    for tier in ("integration", "faults", "e2e"):
        item = Item(TESTS / tier / "test_x.py", tuple(NOT_IN_UNIT), ("classifier",))
        assert unit_tier_violations([item]) == []


def test_collecting_one_stops_the_run_naming_it() -> None:
    item = Item(UNIT / "test_x.py", ("slow",))
    with pytest.raises(pytest.UsageError, match=r"move these tests to tests/integration") as err:
        unit_conftest.pytest_collection_modifyitems([item])
    assert "tests/unit/test_x.py::test_x (slow)" in str(err.value)


def test_this_run_collected_none(request: pytest.FixtureRequest) -> None:
    items = request.session.items
    assert any(Path(i.path).is_relative_to(UNIT) for i in items)
    assert unit_tier_violations(items) == []
