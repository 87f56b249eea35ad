"""Labels from the command line, on the real model and the embedded set-up: a batch photo
corrected by its image id, a folder taught, the labels listed as text, JSON and CSV."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from tests.helpers import photos, run_cli, run_json


def test_label_teach_and_list(tmp_path: Path, dataset: Path) -> None:
    env = {"FRUITSTREAM_DATA_DIR": str(tmp_path / "data")}
    folder = photos(dataset, 3, tmp_path / "in", source="grocery/val")
    submitted = run_cli("submit", str(folder), "--wait", env=env)
    assert submitted.returncode == 0, submitted.stderr
    session = submitted.stdout.splitlines()[0].strip()
    _, rows = run_json("results", session, "--json", env=env)
    first = rows[0]
    said = run_cli("label", first["image_id"], "Passion Fruit", env=env)
    assert said.returncode == 0, said.stderr
    assert "passion fruit" in said.stdout and "model: " in said.stdout
    refused = run_cli("label", first["image_id"], "<script>", env=env)
    assert refused.returncode == 2 and "a label is" in refused.stderr
    assert "Traceback" not in refused.stderr
    teach = tmp_path / "teach"
    photos(dataset, 2, teach / "papaya", source="other-fruit/test")
    photos(dataset, 1, teach / "not-fruit", source="not-fruit/val")
    taught = run_cli("teach", str(teach), env=env)
    assert taught.returncode == 0, taught.stderr
    assert "papaya: 2 photos" in taught.stdout and "not-fruit: 1 photos" in taught.stdout
    code, labels = run_json("labels", "--json", env=env)
    assert code == 0
    assert sorted(x["label"] for x in labels) == ["not-fruit", "papaya", "papaya", "passion fruit"]
    corrected = next(x for x in labels if x["label"] == "passion fruit")
    assert corrected["image_id"] == first["image_id"]
    assert (corrected["model_label"], corrected["model_known"]) == (first["label"], first["known"])
    assert {x["source"] for x in labels} == {"cli", "teach"}
    out = tmp_path / "labels.csv"
    assert run_cli("labels", "--csv", str(out), env=env).returncode == 0
    table = list(csv.DictReader(io.StringIO(out.read_text())))
    assert len(table) == 4 and {"label", "model_label", "content_sha256"} <= set(table[0])
