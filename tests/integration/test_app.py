"""The Streamlit app's tabs and sidebar with ``AppTest`` (real model, real embedded backends)."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from fruitstream.dataset import image_files
from fruitstream.entrypoints.ui.app import PRELOAD_KEY
from tests.conftest import bad_images

APP = Path(__file__).resolve().parents[2] / "src" / "fruitstream" / "entrypoints" / "ui" / "app.py"


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[AppTest]:
    monkeypatch.setenv("FRUITSTREAM_DATA_DIR", str(tmp_path / "data"))
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    yield at
    # The cached services (and their worker thread) belong to this data dir only.
    import streamlit as st

    st.cache_resource.clear()


def _preload(app: AppTest) -> Any:
    return next(b for b in app.main.children.values() if getattr(b, "key", None) == PRELOAD_KEY)


def _shown(app: AppTest, kind: str) -> list[Any]:
    """Elements of ``kind`` but the out-of-sight copies mounted at page open (``preload_ui``)."""
    hidden = {id(e) for e in _preload(app).get(kind)}
    return [e for e in app.get(kind) if id(e) not in hidden]


@pytest.mark.model
def test_preload_is_out_of_sight_and_holds_no_results(app: AppTest) -> None:
    block = _preload(app)
    tables = block.get("dataframe")
    assert len(tables) == 1 and list(tables[0].value.columns) == ["-"]
    # Style-only HTML goes to the page's event container, outside the block it was written in.
    bodies = [e.proto.body for e in app.get("html")]
    assert f"<style>.st-key-{PRELOAD_KEY} {{display: none}}</style>" in bodies
    assert _shown(app, "dataframe") == [] and _shown(app, "metric") == []


def _photo(dataset: Path, fruit: str) -> bytes:
    return image_files(dataset / "grocery" / "val" / fruit)[0].read_bytes()


def test_upload_tab_shows_the_fruit_and_top_three(app: AppTest, dataset: Path) -> None:
    assert not app.exception
    app.file_uploader(key="upload").set_value(("b.jpg", _photo(dataset, "banana"), "image/jpeg"))
    app.run()
    assert not app.exception
    assert [s.value for s in app.main.success] == ["It is: banana"]
    [guesses] = [b for b in _html(app) if 'class="fs-guesses"' in b]
    # Read as text ("banana: 99.9%"), the bars for the eye only.
    texts = re.findall(r'<span class="fs-guess">([^<]*)</span>', guesses)
    assert len(texts) == 3 and texts[0].startswith("banana: ") and texts[0].endswith("%")
    assert guesses.count('aria-hidden="true"') == 3
    # Kept in this browser's history, named after the file.
    assert app.selectbox(key="history").value is not None
    assert (
        app.selectbox(key="history")
        .format_func(app.selectbox(key="history").value)
        .startswith("b.jpg · ")
    )


def _html(app: AppTest) -> list[str]:
    return [e.proto.body for e in app.get("html")]


def test_unknown_photo_says_so_with_the_closest_guess(app: AppTest, dataset: Path) -> None:
    photos = image_files(dataset / "not-fruit" / "val")
    for photo in photos[:5]:
        app.file_uploader(key="upload").set_value((photo.name, photo.read_bytes(), "image/jpeg"))
        app.run()
        if app.warning:
            break
    assert app.warning, "none of five not-fruit photos was called unknown"
    assert app.warning[0].value.startswith("Not one of the 15 fruits I know (closest guess: ")
    # Its small figures are explained above them.
    assert any("none of them fits" in b for b in _html(app))


def test_camera_tab_classifies_the_shot(app: AppTest, dataset: Path) -> None:
    app.camera_input(key="camera").set_value(
        ("shot.jpg", _photo(dataset, "pineapple"), "image/jpeg")
    )
    app.run()
    assert [s.value for s in app.main.success] == ["It is: pineapple"]
    # The camera's box shows the shot: not shown twice (the history's grid has it, once).
    alts = [img.proto.imgs[0].alt for img in _shown(app, "image")]
    assert not any(a.startswith("The photo: ") for a in alts), alts


@pytest.mark.model
def test_bad_upload_gets_a_message_not_a_traceback(app: AppTest) -> None:
    app.file_uploader(key="upload").set_value(
        ("broken.jpg", bad_images()["random.jpg"], "image/jpeg")
    )
    app.run()
    assert not app.exception
    assert app.error[0].value.startswith("broken.jpg: not an image")


def test_spanish_translates_texts_and_fruit_names(app: AppTest, dataset: Path) -> None:
    app.session_state["lang"] = "es"  # what a tap on "Español" sets
    app.run()
    app.file_uploader(key="upload").set_value(("p.jpg", _photo(dataset, "pineapple"), "image/jpeg"))
    app.run()
    assert [s.value for s in app.main.success] == ["Es: piña"]
    assert app.title[0].value == "fruitstream: ¿qué fruta es?"
    assert app.query_params["lang"] in ("es", ["es"])  # a reload keeps it
    assert any('"lang": "es"' in b for b in _html(app))  # the page's script sets lang="es"


@pytest.mark.model
def test_sidebar_shows_backends_and_model(app: AppTest) -> None:
    # One line for the people; the details for operators, behind an expander.
    assert [s.value for s in app.sidebar.success] == ["Everything is working"]
    [details] = app.sidebar.expander
    assert details.label == "Details for operators (in English)"
    text = " ".join(m.value for m in details.markdown)
    ok = ":green[:material/check_circle:]"
    assert f"{ok} **storage**" in text and f"{ok} **queue**" in text
    assert f"{ok} **results database**" in text
    assert "**workers**" in text
    assert "fruits15" in text
    assert any("Knows 15 fruits" in c.value for c in app.sidebar.caption)


def test_batch_tab_runs_a_batch_to_completion(app: AppTest, dataset: Path) -> None:
    files = [(f"{f}.jpg", _photo(dataset, f), "image/jpeg") for f in ("banana", "kiwi", "lemon")]
    files += [("empty.jpg", b"", "image/jpeg"), ("noise.jpg", os.urandom(500), "image/jpeg")]
    app.file_uploader(key="batch_files").set_value(files)
    app.button[0].click()  # the form's submit button
    app.run()
    assert not app.exception
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not _shown(app, "dataframe"):
        time.sleep(0.5)
        app.run()
    assert _shown(app, "dataframe"), "the results table never appeared"
    table = _shown(app, "dataframe")[0].value
    assert len(table) == 5
    assert set(table["fruit"]) >= {"banana", "kiwi", "lemon"}
    errors = [e.value for e in app.error]
    assert any(e.startswith("empty.jpg: empty file") for e in errors)
    assert any(e.startswith("noise.jpg: ") for e in errors)
    assert set(table.columns) == {"file", "fruit", "confidence", "error"}
    metrics = {m.label: m.value for m in _shown(app, "metric")}
    assert metrics["Photos"] == "5" and metrics["Errors"] == "2"
    assert metrics["Time to answer"].endswith(" s")
    # Named after its files, and chosen in the history list.
    assert app.subheader[0].value == "Batch: banana.jpg and 4 more"
    history = app.selectbox(key="history")
    assert history.format_func(history.value).startswith("banana.jpg and 4 more · ")
    assert len(_shown(app, "download_button")) == 1
    captions = [c for img in _shown(app, "image") for c in img.captions]  # type: ignore[attr-defined]
    assert len(captions) == 3  # one picture per classified photo
    assert any(c.startswith("banana ") for c in captions)
    assert any(c.startswith("kiwi ") for c in captions)


def test_database_down_leaves_a_clear_message_and_single_photos_working(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dataset: Path
) -> None:
    monkeypatch.setenv("FRUITSTREAM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FRUITSTREAM_DATABASE_URL", "postgresql+psycopg://u:pw@127.0.0.1:9/db")
    at = AppTest.from_file(str(APP), default_timeout=60)
    try:
        at.run()
        assert not at.exception
        assert any(e.value.startswith("Batches are unavailable right now") for e in at.error)
        at.file_uploader(key="upload").set_value(("b.jpg", _photo(dataset, "banana"), "image/jpeg"))
        at.run()
        assert not at.exception
        assert [s.value for s in at.success] == ["It is: banana"]
    finally:
        import streamlit as st

        st.cache_resource.clear()


def _labels(tmp_path: Path) -> list[str]:
    from fruitstream.bootstrap import build_service
    from fruitstream.config import load_settings

    service = build_service(load_settings(data_dir=tmp_path / "data"))
    return [x.label for x in service.labels()]


def test_one_tap_keeps_the_right_fruit_as_the_photos_label(
    app: AppTest, dataset: Path, tmp_path: Path
) -> None:
    app.file_uploader(key="upload").set_value(("b.jpg", _photo(dataset, "banana"), "image/jpeg"))
    app.run()
    confirm = app.button(key="upload-pick-banana")
    assert confirm.label == "banana ✓"  # the model's answer, to confirm with one tap
    assert len([b for b in app.button if b.key and b.key.startswith("upload-pick-")]) == 3
    confirm.click()
    app.run()
    assert not app.exception
    assert "Thanks: saved as banana" in [s.value for s in app.success]
    app.selectbox(key="upload-other").set_value("not-fruit")
    app.button(key="upload-save").click()
    app.run()
    assert "Thanks: saved as not a fruit" in [s.value for s in app.success]
    app.text_input(key="upload-new").set_value("Cavendish Banana")
    app.button(key="upload-save").click()
    app.run()
    assert "Thanks: saved as cavendish banana" in [s.value for s in app.success]
    assert _labels(tmp_path) == ["cavendish banana"]  # one photo: the last label wins


def _batch_done(app: AppTest, dataset: Path, fruits: tuple[str, ...]) -> None:
    """A batch of one photo per fruit submitted in the Batch tab, run until its table shows."""
    files = [(f"{f}.jpg", _photo(dataset, f), "image/jpeg") for f in fruits]
    app.file_uploader(key="batch_files").set_value(files)
    app.button[0].click()
    app.run()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not _shown(app, "dataframe"):
        time.sleep(0.5)
        app.run()


def test_any_photo_of_a_batch_can_be_corrected(app: AppTest, dataset: Path, tmp_path: Path) -> None:
    _batch_done(app, dataset, ("banana", "kiwi"))
    photo = app.selectbox(key="correct-photo")
    assert len(photo.options) == 2 and any("kiwi.jpg: " in o for o in photo.options)
    kiwi = next(i for i, o in enumerate(photo.options) if o.startswith("kiwi.jpg"))
    photo.select_index(kiwi)
    app.selectbox(key="correct-fruit").set_value("mango")
    save = next(b for b in app.button if b.label == "Save" and "correct" in str(b.id))
    save.click()
    app.run()
    assert not app.exception
    assert "Thanks: saved as mango" in [s.value for s in app.success]
    from fruitstream.bootstrap import build_service
    from fruitstream.config import load_settings

    service = build_service(load_settings(data_dir=tmp_path / "data"))
    [made] = service.labels()
    assert made.label == "mango" and made.image_id is not None
    assert service.backends.db.result(made.image_id).filename == "kiwi.jpg"


def test_each_grid_tile_picks_its_photo_for_correction(app: AppTest, dataset: Path) -> None:
    _batch_done(app, dataset, ("banana", "kiwi", "lime"))
    tiles = [b for b in app.button if b.key and b.key.startswith("tile-")]
    assert len(tiles) == 3 and {b.label for b in tiles} == {"Correct"}
    photo = app.selectbox(key="correct-photo")
    for key in reversed([str(b.key) for b in tiles]):
        app.button(key=key).click()
        app.run()
        assert not app.exception
        assert app.selectbox(key="correct-photo").value == key.removeprefix("tile-")
    assert photo.options  # the form lists every photo, the tile only chose which
