"""Shared fixtures: the real dataset (when present), generated bad images, the shipped model."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
DATASET = Path(
    os.environ.get("FRUITSTREAM_DATASET", REPO.parent / "shared" / "datasets" / "fruits15")
)


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
    from fruitstream.classifier import Classifier

    return Classifier.from_path()


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
