"""The worker with the shipped model, over the in-memory store and queue and a SQLite results
file."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from fruitstream.core.classifier import Classifier
from fruitstream.core.imaging import ImageLimits
from fruitstream.dataset import image_files
from fruitstream.domain import ImageMessage, utcnow
from fruitstream.pipeline import Upload
from fruitstream.ports import Delivery
from fruitstream.worker import Worker, process_batch
from tests.conftest import bad_images


def test_worker_classifies_upserts_and_acks(parts, classifier: Classifier, dataset: Path) -> None:  # type: ignore[no-untyped-def]
    store, queue, db, pipeline = parts
    pipeline.limits = ImageLimits()
    photos = [image_files(dataset / "grocery" / "val" / f)[0] for f in ("banana", "kiwi")]
    uploads = [Upload(p.name, p.read_bytes()) for p in photos] + [
        Upload(n, d) for n, d in bad_images().items() if d
    ]
    report = pipeline.submit(uploads)
    worker = Worker(queue, store, db, classifier, heartbeats=db, batch_size=3)
    while worker.run_once():
        pass
    assert queue.depth() == 0
    rows = {r.filename: r for r in db.results(report.session_id)}
    assert len(rows) == len(uploads)
    for photo in photos:
        expected = classifier.classify(photo.read_bytes())
        assert rows[photo.name].label == expected.label
        assert rows[photo.name].confidence == pytest.approx(expected.confidence, abs=1e-5)
        assert rows[photo.name].status == "ok"
        assert rows[photo.name].model_version.endswith(f":{classifier.bundle.version}")
        assert len(rows[photo.name].top_k) == 3
    assert "pixels" in (rows["bomb.png"].error or "")
    assert rows["random.jpg"].status == "error"
    assert db.progress(report.session_id).complete


def test_poison_messages(parts, classifier: Classifier) -> None:  # type: ignore[no-untyped-def]
    store, _, _, _ = parts
    good = ImageMessage(str(uuid.uuid4()), "s", "k/missing.jpg", "missing.jpg", "0", utcnow())
    wrong_schema = json.loads(good.to_json())
    wrong_schema.update(schema=99, image_id=str(uuid.uuid4()))
    store.put("k/corrupt.jpg", b"\xff\xd8garbage")
    corrupt = ImageMessage(str(uuid.uuid4()), "s", "k/corrupt.jpg", "corrupt.jpg", "0", utcnow())
    deliveries = [
        Delivery(b"{not json", 1),
        Delivery(json.dumps(wrong_schema).encode(), 2),
        Delivery(good.to_json(), 3),
        Delivery(corrupt.to_json(), 4),
    ]
    out = process_batch(deliveries, store, classifier)
    rows, skipped = out.rows, out.skipped
    assert len(skipped) == 1 and "not valid JSON" in skipped[0]
    by_id = {r.image_id: r for r in rows}
    assert "unsupported message schema 99" in (by_id[wrong_schema["image_id"]].error or "")
    assert "does not exist" in (by_id[good.image_id].error or "")
    assert by_id[corrupt.image_id].status == "error"
    assert all(r.status == "error" for r in rows)
