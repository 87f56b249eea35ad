"""The Streamlit app's views without the model: sidebar figures, crafted names, odd image modes."""

from __future__ import annotations


def test_distributed_figures_in_the_sidebar() -> None:
    from fruitstream.entrypoints.ui.views import health_figures, health_line
    from fruitstream.ports import Health
    from fruitstream.service.health import figures

    extra: dict[str, object] = {"lag": 12, "input_rate": 3.0, "processed_rate": 4.5}
    h = Health("workers", True, "1 alive (spark)", extra, figures(extra))
    assert health_figures(h) == ["lag 12 messages", "input 3.0 rows/s", "processed 4.5 rows/s"]
    assert health_line(Health("queue", False, "Kafka down")).startswith(":red[")


def test_crafted_names_and_odd_image_modes_are_shown_safely() -> None:
    import io

    import numpy as np
    from PIL import Image

    from fruitstream.entrypoints.ui.views import escape_markdown, thumbnail
    from fruitstream.stats import csv_safe

    name = "[click](http://evil.example) :red[boom] **x**.jpg"
    escaped = escape_markdown(name)
    assert "](" not in escaped.replace("\\]", "").replace("\\(", "")
    assert escaped.startswith("\\[click\\]") and "\\:red\\[boom\\]" in escaped
    assert escape_markdown("- list.jpg").startswith("\\-")
    assert csv_safe("=HYPERLINK(1)") == "'=HYPERLINK(1)" and csv_safe("@x") == "'@x"
    assert csv_safe("apple.jpg") == "apple.jpg" and csv_safe(0.5) == 0.5
    for img in (
        Image.fromarray(np.linspace(0, 1, 64 * 48, dtype=np.float32).reshape(48, 64), "F"),
        Image.fromarray((np.arange(64 * 48, dtype=np.uint16) * 20).reshape(48, 64)),
    ):
        buf = io.BytesIO()
        img.save(buf, "TIFF")
        small = thumbnail(buf.getvalue())
        assert small is not None
        assert Image.open(io.BytesIO(small)).mode == "RGB"
