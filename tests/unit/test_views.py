"""What the app shows, computed without Streamlit: answers, close calls, history, health, sharing,
and the page's script (over the fakes: no model, no browser)."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from PIL import Image

from fruitstream.domain import Caller, Prediction, ResultRow, SessionRecord, Status, TopK
from fruitstream.entrypoints.ui.page import BROWSER_COOKIE, LANG_COOKIE, page_script
from fruitstream.entrypoints.ui.views import (
    PredictionView,
    answer_kind,
    batch_name,
    caption,
    guesses_html,
    health_summary,
    prediction_view,
    session_label,
    share_card,
    share_json,
    stats,
    table_rows,
)
from fruitstream.i18n import TEXTS, WIDGET_TEXTS, translator
from fruitstream.ports import Health
from fruitstream.service import SessionSummary
from tests.conftest import jpeg_bytes
from tests.fakes import fake_world

EN, ES = translator("en"), translator("es")


def _pred(known: bool, *guesses: tuple[str, float]) -> Prediction:
    top = tuple(TopK(label, confidence) for label, confidence in guesses)
    return Prediction(top[0].label, top[0].confidence, known, top)


def test_a_close_call_between_two_fruits_is_asked_not_called_unknown() -> None:
    # The wild mango of the finding: apple 48.2%, mango 48.2%, rejected by the threshold.
    tie = _pred(False, ("apple", 0.482), ("mango", 0.482), ("pear", 0.01))
    assert answer_kind(tie) == "close"
    view = prediction_view(tie, EN, "en", fruits=15)
    assert view.headline == "apple or mango? Too close to tell." and not view.known
    assert prediction_view(tie, ES, "es", fruits=15).headline.startswith("¿manzana o mango?")
    # Most of the probability on one fruit, no second contender: "maybe".
    alone = _pred(False, ("kiwi", 0.45), ("lime", 0.08), ("pear", 0.02))
    assert prediction_view(alone, EN, "en", fruits=15).headline == "Maybe kiwi? I am not sure."
    # Little on any fruit: none of them.
    none = _pred(False, ("apple", 0.08), ("banana", 0.06), ("kiwi", 0.04))
    assert answer_kind(none) == "unknown"
    assert prediction_view(none, EN, "en", fruits=15).headline.startswith(
        "Not one of the 15 fruits I know"
    )
    known = _pred(True, ("banana", 0.97), ("pear", 0.02))
    assert prediction_view(known, EN, "en", fruits=15).headline == "It is: banana"


def test_guesses_are_text_for_screen_readers_and_explained_for_an_unknown() -> None:
    none = prediction_view(_pred(False, ("apple", 0.08), ("kiwi", 0.06)), EN, "en", fruits=15)
    out = guesses_html(none, EN)
    assert "apple: 8.0%" in out and "kiwi: 6.0%" in out
    assert "none of them fits" in out  # the low figures explained
    assert out.count('aria-hidden="true"') == 2  # the bars are for the eye only
    assert "progress" not in out
    crafted = PredictionView("x", True, [("<b>fig</b>", 0.5)], 1.0, kind="known")
    assert "<b>fig</b>" not in guesses_html(crafted, EN)


def test_health_is_one_line_for_people() -> None:
    ok = [Health("storage", True, "local folder /srv/data"), Health("model", True, "v3")]
    assert health_summary(ok, EN) == (True, "Everything is working")
    down = [*ok, Health("results database", False, "connection refused at 10.0.0.5")]
    good, line = health_summary(down, ES)
    assert not good and line == "No funciona ahora: base de datos"
    assert "10.0.0.5" not in line  # the operator's details stay in the expander


def _row(status: Status = Status.OK, **kw: Any) -> ResultRow:
    now = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    fields: dict[str, Any] = {
        "image_id": "i",
        "session_id": "s",
        "filename": "a.jpg",
        "object_key": "k",
        "label": "cherry",
        "confidence": 0.004,
        "known": False,
        "status": status,
        "model_version": "v",
        "submitted_at": now,
        "processed_at": now + timedelta(seconds=2),
    }
    return ResultRow(**{**fields, **kw})


def test_batch_rows_say_unknowns_and_errors_in_words_and_the_chart_counts_them() -> None:
    unknown = _row()
    banana = _row(image_id="b", label="banana", confidence=0.9982, known=True)
    broken = _row(image_id="c", status=Status.ERROR, error="not an image", label=None)
    assert caption(unknown, EN, "en") == "unknown (closest: cherry)"  # no "0%" of a non-cherry
    assert caption(banana, EN, "en") == "banana 100%"
    rows = table_rows([unknown, banana, broken], EN, "en")
    assert [r["fruit"] for r in rows] == [
        "unknown (closest: cherry)",
        "banana",
        "could not be classified",
    ]
    assert rows[1]["confidence"] == 0.9982 and rows[2]["confidence"] is None
    assert rows[2]["error"] == "not an image"
    summary, chart = stats([unknown, banana, broken], EN, "en")
    assert chart == {"banana": 1, "unknown": 1, "Errors": 1}
    assert summary.seconds == 2.0


class _Named:
    def __init__(self, name: str) -> None:
        self.name = name


def test_batches_are_named() -> None:
    files: Any = [_Named("kiwi.jpg"), _Named("lime.jpg"), _Named("pear.jpg")]
    assert batch_name("  market  ", files, EN) == "market"
    assert batch_name("", files, EN) == "kiwi.jpg and 2 more"
    assert batch_name("", files[:1], ES) == "kiwi.jpg"
    record = SessionRecord("s", datetime(2026, 11, 30, 9, 5, tzinfo=UTC), 3, "", "o")
    summary: Any = SessionSummary(record, None)  # type: ignore[arg-type]
    assert session_label(summary, EN) == "3 photos · 2026-11-30 09:05 · 3 photos"
    one: Any = SessionSummary(SessionRecord("s", record.created_at, 1, "x.jpg"), None)  # type: ignore[arg-type]
    assert session_label(one, ES) == "x.jpg · 2026-11-30 09:05 · 1 foto"


def test_an_answer_saved_as_json_and_as_a_card() -> None:
    view = prediction_view(_pred(True, ("banana", 0.97), ("pear", 0.02)), EN, "en", fruits=15)
    record = json.loads(share_json("b.jpg", view, "fruits15 v3.2"))
    assert record["label"] == "banana" and record["file"] == "b.jpg"
    assert record["answer"] == "It is: banana" and record["model"] == "fruits15 v3.2"
    assert [k["label"] for k in record["top_k"]] == ["banana", "pear"]
    card = Image.open(io.BytesIO(share_card(jpeg_bytes((400, 300)), view, EN)))
    assert card.format == "PNG" and card.size == (720, 360)
    # The photo is in its place on the card; without a readable photo, still a card.
    assert card.getpixel((190, 180)) != (255, 255, 255)
    assert Image.open(io.BytesIO(share_card(b"not a photo", view, EN))).size == (720, 360)


def test_the_page_script_carries_language_cookies_and_widget_texts_safely() -> None:
    script = page_script("es", "</script><b>")
    assert script.startswith("<script>") and script.count("</script>") == 1
    config = json.loads(script.split("const cfg = ", 1)[1].split(";\n", 1)[0].replace("<\\/", "</"))
    assert config["lang"] == "es"
    assert config["cookies"] == {BROWSER_COOKIE: "</script><b>", LANG_COOKIE: "es"}
    assert config["texts"]["Take Photo"] == "Hacer la foto"
    assert (
        json.loads(page_script("en", "x").split("const cfg = ", 1)[1].split(";\n")[0])["texts"]
        == {}
    )


def test_every_text_has_both_languages() -> None:
    assert all({"en", "es"} <= set(entry) for entry in TEXTS.values())
    assert all(value.strip() for value in WIDGET_TEXTS["es"].values())


def test_a_single_photo_is_kept_in_its_owners_history(tmp_path: Path) -> None:
    world = fake_world(tmp_path)
    service = world.service
    pred = service.classify_one(b"fruit:banana")
    session_id = service.keep("b.jpg", b"fruit:banana", pred, caller=Caller("browser:a"))
    [mine] = service.sessions(caller=Caller("browser:a"))
    assert mine.session.session_id == session_id and mine.session.name == "b.jpg"
    assert mine.progress.complete and mine.progress.submitted == 1
    [row] = service.results(session_id, caller=Caller("browser:a"))
    assert row.label == "banana" and row.status == Status.OK and row.filename == "b.jpg"
    assert service.photo(row.object_key) == b"fruit:banana"
    assert service.sessions(caller=Caller("browser:b")) == []  # another browser sees none of it
    # Finished: nothing for the worker or the repair of stalled submits to do.
    assert world.queue.take(10, timeout=0) == []
    assert service.pipeline().repair(older_than=0) == {}
