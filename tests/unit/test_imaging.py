"""Decoding and preprocessing: colour modes, EXIF, limits, normalization."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from fruitstream.core.imaging import (
    TEACHING_VIEWS,
    ImageLimits,
    decode_image,
    load_pixels,
    load_views,
    normalize,
    preprocess,
    resize_crop,
    teaching_views,
)
from fruitstream.errors import (
    ConfigError,
    ImageError,
    ImageTooLargeError,
    UnsupportedImageError,
)
from fruitstream.model.bundle import PreprocessConfig
from tests.conftest import bad_images, exif_rotated_jpeg, jpeg_bytes, png_bytes, png_declaring

CFG = PreprocessConfig(input_size=32)


def test_exif_orientation_is_applied() -> None:
    img = decode_image(exif_rotated_jpeg())
    assert img.size == (20, 60)


def test_cmyk_jpeg_becomes_rgb() -> None:
    img = decode_image(jpeg_bytes(mode="CMYK", color=(0, 255, 255, 0)))  # type: ignore[arg-type]
    assert img.mode == "RGB"
    r, g, b = img.getpixel((5, 5))  # type: ignore[misc]
    assert r > 200 and g < 60 and b < 60  # no cyan, full magenta and yellow: red


def test_grayscale_becomes_three_equal_channels() -> None:
    img = decode_image(png_bytes(Image.new("L", (10, 10), 77)))
    assert img.mode == "RGB"
    assert img.getpixel((0, 0)) == (77, 77, 77)


def test_alpha_is_composited_on_white() -> None:
    rgba = Image.new("RGBA", (10, 10), (255, 0, 0, 0))  # fully transparent red
    rgba.putpixel((0, 0), (0, 0, 255, 255))
    img = decode_image(png_bytes(rgba))
    assert img.getpixel((5, 5)) == (255, 255, 255)
    assert img.getpixel((0, 0)) == (0, 0, 255)


def test_sixteen_bit_grayscale_keeps_its_contrast() -> None:
    arr = np.linspace(0, 65535, 100, dtype=np.uint16).reshape(10, 10)
    img = decode_image(png_bytes(Image.fromarray(arr)))
    values = np.asarray(img)[..., 0]
    assert values.min() == 0 and values.max() == 255


@pytest.mark.parametrize(
    ("name", "error", "reason"),
    [
        ("empty.jpg", UnsupportedImageError, "empty file"),
        ("random.jpg", UnsupportedImageError, "not an image"),
        ("text.png", UnsupportedImageError, "not an image"),
        ("truncated.jpg", UnsupportedImageError, "truncated"),
        ("bomb.png", ImageTooLargeError, "900,000,000 pixels"),
    ],
)
def test_bad_input_gets_a_clear_error(name: str, error: type[Exception], reason: str) -> None:
    with pytest.raises(error, match=reason):
        decode_image(bad_images()[name])


def test_byte_limit() -> None:
    with pytest.raises(ImageTooLargeError, match="over the limit of 100 bytes"):
        decode_image(jpeg_bytes(), ImageLimits(max_bytes=100))


def test_pixel_limit_is_configurable() -> None:
    data = png_declaring(200, 200)
    with pytest.raises(ImageTooLargeError, match="40,000 pixels"):
        decode_image(data, ImageLimits(max_pixels=10_000))


def test_unsupported_format_is_refused() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buf, "ICO")
    with pytest.raises(UnsupportedImageError, match="unsupported image format ICO"):
        decode_image(buf.getvalue())


def test_resize_crop_takes_the_centre_square() -> None:
    img = Image.new("RGB", (300, 100), "black")
    img.paste((255, 255, 255), (100, 0, 200, 100))  # white centre third
    out = resize_crop(img, CFG)
    assert out.size == (32, 32)
    assert np.asarray(out).mean() > 250


def test_preprocess_gives_pixels_of_the_input_size() -> None:
    out = preprocess(Image.new("RGB", (50, 70), (10, 20, 30)), CFG)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    assert (out == (10, 20, 30)).all()


def test_normalize_maps_to_minus_one_one_as_nchw() -> None:
    pixels = np.stack(
        [
            preprocess(Image.new("RGB", (50, 70), "white"), CFG),
            preprocess(Image.new("RGB", (50, 70), "black"), CFG),
        ]
    )
    out = normalize(pixels, CFG)
    assert out.shape == (2, 3, 32, 32) and out.dtype == np.float32
    assert np.allclose(out[0], 1.0) and np.allclose(out[1], -1.0)


def test_large_jpeg_is_decoded_in_draft_mode_with_the_same_result() -> None:
    data = jpeg_bytes((2000, 1600), color="green")
    fast = load_pixels(data, PreprocessConfig(input_size=64)).astype(int)
    full = preprocess(Image.open(io.BytesIO(data)), PreprocessConfig(input_size=64)).astype(int)
    assert np.abs(fast - full).max() <= 6


FAST = PreprocessConfig(input_size=32, interpolation="box-bilinear")


def _gradient(w: int, h: int) -> Image.Image:
    """A smooth picture: resizes that agree on it differ only in filtering."""
    x = np.linspace(0, 255, w)[None, :, None]
    y = np.linspace(0, 255, h)[:, None, None]
    rgb = np.concatenate([np.broadcast_to(x, (h, w, 1)), np.broadcast_to(y, (h, w, 1)),
                          np.full((h, w, 1), 90.0)], axis=2)  # fmt: skip
    return Image.fromarray(rgb.astype(np.uint8))


@pytest.mark.parametrize("size", [(50, 70), (48, 32), (300, 100), (1000, 3000)])
def test_box_bilinear_matches_pillows_resize_on_a_smooth_picture(size: tuple[int, int]) -> None:
    img = _gradient(*size)
    fast = preprocess(img, FAST)
    slow = preprocess(img, CFG)
    assert fast.shape == (32, 32, 3) and fast.dtype == np.uint8
    # Same centre square, same orientation: only the filter differs, by a few levels.
    assert np.abs(fast.astype(int) - slow.astype(int)).mean() < 3


def test_box_bilinear_takes_the_centre_square_of_a_large_image() -> None:
    img = Image.new("RGB", (3000, 1000), "black")
    img.paste((255, 255, 255), (1000, 0, 2000, 1000))  # white centre third
    out = preprocess(img, FAST)
    assert out.shape == (32, 32, 3)
    assert out.min() > 250
    assert np.asarray(resize_crop(img, FAST)).min() > 250


def test_box_bilinear_averages_when_it_shrinks_a_lot() -> None:
    """A fine checkerboard shrunk 31x: the box step averages it to grey, where bilinear
    sampling alone would alias it into black and white patches."""
    board = ((np.indices((1000, 1000)).sum(axis=0) % 2) * 255).astype(np.uint8)
    out = preprocess(Image.fromarray(board).convert("RGB"), FAST).astype(int)
    assert np.abs(out - 127).max() < 10


def test_an_unknown_interpolation_is_a_clear_error() -> None:
    cfg = PreprocessConfig(input_size=32, interpolation="sinc")
    with pytest.raises(ConfigError, match="unknown interpolation 'sinc'"):
        preprocess(Image.new("RGB", (40, 40)), cfg)


def _quadrants() -> Image.Image:
    """60 x 40 px, four colours: red top-left, green top-right, blue bottom-left, white."""
    arr = np.zeros((40, 60, 3), np.uint8)
    arr[:20, :30] = (255, 0, 0)
    arr[:20, 30:] = (0, 255, 0)
    arr[20:, :30] = (0, 0, 255)
    arr[20:, 30:] = (255, 255, 255)
    return Image.fromarray(arr)


def test_teaching_views_are_the_named_views_of_the_photo() -> None:
    img = _quadrants()
    views = dict(zip(TEACHING_VIEWS, teaching_views(img, len(TEACHING_VIEWS)), strict=True))
    assert len(views) == 18
    mirror = np.asarray(views["mirror"])
    assert tuple(mirror[0, 0]) == (0, 255, 0) and tuple(mirror[0, -1]) == (255, 0, 0)
    assert views["crop-80-0"].size == (48, 32)  # the centre, 80% of each side
    assert tuple(np.asarray(views["crop-60-1"])[0, 0]) == (255, 0, 0)  # top-left corner
    assert tuple(np.asarray(views["crop-60-4"])[-1, -1]) == (255, 255, 255)  # bottom-right
    assert views["padded"].size == (60, 60)
    assert views["turn-90"].size == (40, 60)
    assert np.asarray(views["dim"]).max() < 255 and np.asarray(views["pale"]).shape == (40, 60, 3)
    assert len(teaching_views(img, 3)) == 3 and teaching_views(img, 0) == []


def test_load_views_gives_the_photo_as_load_pixels_does_then_its_views() -> None:
    cfg = PreprocessConfig(input_size=32, crop_pct=0.9)
    data = png_bytes(_quadrants().resize((300, 200)))
    stacked = load_views(data, cfg, 5)
    assert stacked.shape == (6, 32, 32, 3) and stacked.dtype == np.uint8
    assert np.array_equal(stacked[0], load_pixels(data, cfg))
    assert not np.array_equal(stacked[1], stacked[0])  # the mirror
    assert load_views(data, cfg, 0).shape == (1, 32, 32, 3)
    with pytest.raises(ImageError):
        load_views(b"not an image", cfg, 5)


def test_views_can_be_asked_for_by_name() -> None:
    img = _quadrants()
    every = dict(zip(TEACHING_VIEWS, teaching_views(img, len(TEACHING_VIEWS)), strict=True))
    picked = teaching_views(img, ("padded", "mirror"))
    assert [v.tobytes() for v in picked] == [every["padded"].tobytes(), every["mirror"].tobytes()]
    with pytest.raises(ValueError, match="unknown views"):
        teaching_views(img, ("mirror", "upside-down"))
    cfg = PreprocessConfig(input_size=32)
    data = png_bytes(img.resize((300, 200)))
    by_name = load_views(data, cfg, ("mirror",))
    assert np.array_equal(by_name, load_views(data, cfg, 1))
    with pytest.raises(ValueError, match="unknown views"):
        load_views(data, cfg, ("sideways",))
