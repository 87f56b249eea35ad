"""The classifier core without the shipped model: bundle errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from fruitstream.errors import ModelError
from fruitstream.model.bundle import ModelBundle


def test_bundle_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no model bundle"):
        ModelBundle.load(tmp_path)
    (tmp_path / "bundle.json").write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        ModelBundle.load(tmp_path)
