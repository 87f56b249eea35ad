"""Shared fixtures: the real dataset (when present), generated bad images, the shipped model,
a SQLite results database and the pipeline over it."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from PIL import Image

from fruitstream.dataset import DATASET_DIR

if TYPE_CHECKING:
    from fruitstream.adapters.sql import SqlDatabase
    from fruitstream.pipeline import Pipeline
    from tests.fakes import MemoryObjectStore, MemoryQueue

REPO = Path(__file__).resolve().parent.parent
# The default dataset folder is relative to the repository, as the settings' default.
DATASET = Path(os.environ.get("FRUITSTREAM_DATASET", os.path.normpath(REPO / DATASET_DIR)))


# Fixtures that stand for a need: a test using one is marked with it, so that ``-m "not model"``
# leaves it out, and tests/unit refuses it (below), without anyone remembering to.
_NEEDS = {"classifier": "model", "dataset": "dataset"}
# What the unit tier (``make fast``: tests/unit, over tests/fakes.py) has not: such tests
# belong in tests/integration.
NOT_IN_UNIT = frozenset({"model", "dataset", "browser", "distributed", "slow"})
UNIT = Path(__file__).resolve().parent / "unit"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for fixture in set(getattr(item, "fixturenames", ())) & set(_NEEDS):
            item.add_marker(_NEEDS[fixture])
        if "tests/e2e/" in item.nodeid:
            item.add_marker("browser")


def needs(item: pytest.Item) -> set[str]:
    """The markers of ``item``, with those its fixtures stand for (``_NEEDS``)."""
    marks = {m.name for m in item.iter_markers()}
    return marks | {_NEEDS[f] for f in set(getattr(item, "fixturenames", ())) & set(_NEEDS)}


def unit_tier_violations(items: list[pytest.Item]) -> list[str]:
    """``nodeid (markers)`` of each test under tests/unit that needs what that tier has not."""
    found = []
    for item in items:
        if Path(item.path).resolve().is_relative_to(UNIT):
            bad = needs(item) & NOT_IN_UNIT
            if bad:
                found.append(f"{item.nodeid} ({', '.join(sorted(bad))})")
    return found


@pytest.fixture(scope="session")
def dataset() -> Path:
    """The fruits15 dataset; absent, a test that needs it says so (and fails in CI)."""
    if not (DATASET / "grocery").is_dir():
        message = f"needs the fruits15 dataset at {DATASET} (set FRUITSTREAM_DATASET)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return DATASET


@pytest.fixture(scope="session")
def classifier():  # type: ignore[no-untyped-def]
    from fruitstream.core.classifier import Classifier

    return Classifier.from_path()


@pytest.fixture
def db(tmp_path: Path) -> SqlDatabase:
    """The results database on a SQLite file of the test's own (no server)."""
    from fruitstream.adapters.sql import SqlDatabase

    return SqlDatabase.from_url(f"sqlite:///{tmp_path / 'r.db'}")


@pytest.fixture
def parts(db: SqlDatabase) -> tuple[MemoryObjectStore, MemoryQueue, SqlDatabase, Pipeline]:
    """The pipeline over the in-memory store and queue and ``db``, with a 50,000-byte limit."""
    from fruitstream.core.imaging import ImageLimits
    from fruitstream.pipeline import Pipeline
    from tests.fakes import MemoryObjectStore, MemoryQueue

    store, queue = MemoryObjectStore(), MemoryQueue()
    return store, queue, db, Pipeline(store, queue, db, db, ImageLimits(max_bytes=50_000), "m:1")


def jpeg_bytes(size: tuple[int, int] = (64, 48), color: str = "orange", mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, "JPEG")
    return buf.getvalue()


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares ``width`` x ``height`` pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def exif_rotated_jpeg() -> bytes:
    """A 60x20 landscape JPEG tagged with EXIF orientation 6 (shown rotated: 20x60 portrait)."""
    img = Image.new("RGB", (60, 20), "red")
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif.tobytes())
    return buf.getvalue()


def bad_images() -> dict[str, bytes]:
    """Named bad inputs that must each get a clear error."""
    good = jpeg_bytes((200, 200))
    return {
        "truncated.jpg": good[: len(good) // 2],
        "random.jpg": os.urandom(4096),
        "empty.jpg": b"",
        "bomb.png": png_declaring(30000, 30000),
        "text.png": b"this is not an image at all\n" * 10,
    }


def crafted_exif_jpeg() -> bytes:
    """A JPEG whose pixels are fine but whose EXIF block is crafted: XResolution retyped as
    BYTE. ``ImageOps.exif_transpose`` raises TypeError re-encoding it (a mutation fuzzer found
    the same class of file raising struct.error)."""
    img = Image.new("RGB", (60, 20), "orange")
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x011A] = (72, 1)
    raw = bytearray(exif.tobytes())
    entry = raw.find(b"\x01\x1a\x00\x05")  # big-endian tag 0x011A, type RATIONAL
    raw[entry + 2 : entry + 4] = struct.pack(">H", 1)
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=bytes(raw))
    return buf.getvalue()


def mutation_corpus(n: int, seed: int = 0) -> dict[str, bytes]:
    """``n`` files made by flipping 1-3 bytes of small JPEG, PNG and GIF files (fixed seed),
    mostly in their headers and EXIF, where decoders parse structure."""
    import random

    rng = random.Random(seed)
    img = Image.new("RGB", (48, 32), "orange")
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "Camera"
    exif[0x011A] = (72, 1)
    exif[0x0128] = 2
    seeds = []
    for fmt, extra in (("JPEG", {"exif": exif.tobytes()}), ("PNG", {}), ("GIF", {})):
        buf = io.BytesIO()
        img.save(buf, fmt, **extra)
        seeds.append((fmt.lower(), buf.getvalue()))
    corpus = {}
    for i in range(n):
        kind, base = seeds[i % len(seeds)]
        data = bytearray(base)
        for _ in range(rng.randint(1, 3)):
            pos = rng.randrange(0, min(len(data), 160))
            data[pos] = rng.randrange(256)
        corpus[f"fuzz-{i:04d}.{kind}"] = bytes(data)
    corpus["crafted-exif.jpg"] = crafted_exif_jpeg()
    return corpus
