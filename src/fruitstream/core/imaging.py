"""Bytes to model input: decode safely (limits, EXIF, colour modes), resize, crop, normalize."""

from __future__ import annotations

import functools
import io
import re
import threading
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import ExifTags, Image, UnidentifiedImageError

from fruitstream.domain import ImageLimits, check_size
from fruitstream.errors import (
    ConfigError,
    CorruptImageError,
    ImageError,
    ModelError,
    TooManyPixelsError,
    UnsupportedFormatError,
    UnsupportedImageError,
)
from fruitstream.model.bundle import BOX_BILINEAR, PreprocessConfig

# The domain's, re-exported where images are read; the bundle's name of the OpenCV resize.
__all__ = ["BOX_BILINEAR", "ImageLimits", "check_size"]

SUPPORTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "BMP", "GIF", "TIFF"})
# OpenCV's faster resize (``_box_bilinear``, ``BOX_BILINEAR``), and Pillow's filters
# (antialiased when shrinking).
_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


# Decoded images above this many pixels are "large": decoded one at a time and shrunk at once.
LARGE_PIXELS = 12_000_000
_LARGE_DECODES = threading.BoundedSemaphore(1)


def decode_image(
    data: bytes,
    limits: ImageLimits = ImageLimits(),
    draft_size: int | None = None,
    background: tuple[int, int, int] = (255, 255, 255),
) -> Image.Image:
    """Decode ``data`` into an upright RGB image, or raise an ``ImageError`` saying why not.

    ``draft_size`` lets JPEG decoding skip detail the model will never see: a 12 MP phone
    photo decodes at 1/8 scale in a fraction of the time.
    """
    check_size(len(data), limits)
    try:
        with warnings.catch_warnings():
            # Our own pixel limit below is the one that counts.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if img.format not in SUPPORTED_FORMATS:
                raise UnsupportedFormatError(f"unsupported image format {img.format}")
            pixels = img.width * img.height
            if pixels > limits.max_pixels:
                raise TooManyPixelsError(
                    f"image is {img.width}x{img.height} = {pixels:,} pixels, "
                    f"over the limit of {limits.max_pixels:,}"
                )
            if draft_size and img.format in {"JPEG", "MPO"}:
                img.draft(None, (draft_size, draft_size))
            if pixels > LARGE_PIXELS:
                # A format without draft decodes at full size: one such decode at a time per
                # process, shrunk at once, keeps memory bounded whatever the batch holds.
                with _LARGE_DECODES:
                    img.load()
                    upright = _upright(_shrink(img, draft_size))
            else:
                img.load()
                upright = _upright(img)
    except UnidentifiedImageError as exc:
        raise UnsupportedImageError("not an image, or an unsupported format") from exc
    except Image.DecompressionBombError as exc:
        # Pillow refuses such headers inside open(), before the size can be asked for.
        found = re.search(r"\((\d+) pixels\)", str(exc))
        count = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
        raise TooManyPixelsError(
            f"image is {count}, over the limit of {limits.max_pixels:,}"
        ) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise CorruptImageError(f"corrupt or truncated image: {exc}") from exc
    except ImageError:
        raise
    except Exception as exc:
        # Decoders of crafted files raise anything (struct.error, TypeError, ...): it is still
        # this one file's problem, and must read as such.
        raise CorruptImageError(f"cannot decode the image ({type(exc).__name__}: {exc})") from exc
    return to_rgb(upright, background)


# Modes ``reduce`` averages in place. With alpha it first makes a premultiplied copy of the
# whole image (measured: a 49 MP RGBA PNG peaks at 392 MB instead of 204 MB).
_REDUCIBLE = frozenset({"L", "RGB", "I", "F", "CMYK", "YCbCr"})


@functools.cache
def return_big_buffers_to_the_os() -> bool:
    """Make freed image buffers go back to the system at once (glibc only; idempotent).

    glibc serves big allocations with mmap, but after the first one is freed it raises that
    threshold to the freed size, so later image buffers come from per-thread heaps that never
    shrink: a worker's memory then grows by one decoded image per lane. Measured with eight
    lanes and 16 images near the pixel limit: peak RSS 1,100 MB by default, 425 MB with the
    threshold fixed at 4 MB.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, 4 * 1024 * 1024))
    except (OSError, AttributeError):
        return False


_M_MMAP_THRESHOLD = -3


def _shrink(img: Image.Image, draft_size: int | None) -> Image.Image:
    """A large decoded image reduced by a whole factor toward ``draft_size`` (twice it on the
    short side, so the model's resize still has detail to work with), before any conversion
    copies it at full size."""
    if not draft_size:
        return img
    factor = min(img.size) // (2 * draft_size)
    if factor < 2:
        return img
    if img.mode in _REDUCIBLE:
        return img.reduce(factor)
    # Alpha, palette, 16-bit and bilevel images: every factor-th pixel will do for a picture
    # that is still twice the model's input, and needs no full-size copy.
    return img.resize((img.width // factor, img.height // factor), Image.Resampling.NEAREST)


_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _upright(img: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation says; unreadable EXIF counts as upright.

    Not ``ImageOps.exif_transpose``: it re-encodes the EXIF block, and a crafted block makes
    that raise (struct.error, TypeError) on pixels that are perfectly readable. It also copies
    the image when there is nothing to turn.
    """
    try:
        orientation = int(img.getexif().get(ExifTags.Base.Orientation, 1))
    except Exception:
        return img
    step = _TRANSPOSE.get(orientation)
    return img if step is None else img.transpose(step)


def to_rgb(img: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Any Pillow mode to RGB; transparency is composited onto ``background``."""
    if img.mode == "RGB":
        return img
    has_alpha = img.mode in {"RGBA", "LA", "PA"} or (img.mode == "P" and "transparency" in img.info)
    if has_alpha:
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    if img.mode in {"I;16", "I;16B", "I;16L", "I"}:
        # 16-bit greyscale: scale into 8 bits before the RGB conversion clips it.
        arr = np.asarray(img, dtype=np.float32)
        peak = float(arr.max()) or 1.0
        img = Image.fromarray((arr * (255.0 / peak)).astype(np.uint8), mode="L")
    return img.convert("RGB")


def resize_crop(img: Image.Image, cfg: PreprocessConfig) -> Image.Image:
    """Resize the shorter side to ``cfg.resize_to`` and take the centred square crop."""
    return Image.fromarray(_resize_crop(img, cfg))


def _resize_crop(img: Image.Image, cfg: PreprocessConfig) -> NDArray[np.uint8]:
    """``resize_crop`` as the model's input pixels, by the bundle's interpolation."""
    if cfg.interpolation == BOX_BILINEAR:
        return _box_bilinear(img, cfg)
    if cfg.interpolation not in _RESAMPLE:
        raise ConfigError(f"unknown interpolation {cfg.interpolation!r} in the model bundle")
    w, h = img.size
    scale = cfg.resize_to / min(w, h)
    # The crop box in source coordinates, so one resize call does both steps.
    side = min(cfg.input_size / scale, w, h)
    left = max(0.0, (w - side) / 2)
    top = max(0.0, (h - side) / 2)
    box = (left, top, left + side, top + side)
    resized = img.resize(
        (cfg.input_size, cfg.input_size),
        _RESAMPLE[cfg.interpolation],
        box=box,
        reducing_gap=3.0,
    )
    return np.asarray(resized)


@functools.lru_cache(maxsize=8)
def affine(cfg: PreprocessConfig) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Per-channel ``scale`` and ``shift`` with ``x * scale - shift == (x / 255 - mean) / std``,
    shaped to broadcast over NCHW batches. The model graph holds the same two constants."""
    std = np.asarray(cfg.std, dtype=np.float32)
    scale = (1.0 / (255.0 * std)).reshape(1, 3, 1, 1).astype(np.float32)
    shift = (np.asarray(cfg.mean, dtype=np.float32) / std).reshape(1, 3, 1, 1).astype(np.float32)
    return scale, shift


def normalize(pixels: NDArray[np.uint8], cfg: PreprocessConfig) -> NDArray[np.float32]:
    """A batch of NHWC pixels to normalized NCHW float32: what the model graph does first.

    Only a model whose graph takes float input (an older bundle) needs it at run time.
    """
    scale, shift = affine(cfg)
    out = np.ascontiguousarray(pixels.transpose(0, 3, 1, 2)).astype(np.float32)
    out *= scale
    out -= shift
    return out


def preprocess(img: Image.Image, cfg: PreprocessConfig) -> NDArray[np.uint8]:
    """The single preprocessing path of training, the CLI, the UI and Spark: an RGB image to
    the model's input pixels, ``input_size`` x ``input_size`` x 3 uint8.

    Normalization is the first step of the model graph, so no float pass runs in Python.
    """
    return _resize_crop(to_rgb(img, cfg.background), cfg)


@functools.cache
def _cv2() -> Any:
    try:
        import cv2
    except ImportError as exc:  # a core dependency: only a broken install lacks it
        raise ModelError(
            f"the model's {BOX_BILINEAR} resize needs opencv-python-headless, a dependency of"
            " fruitstream: reinstall it (pip install fruitstream)"
        ) from exc
    # Photos are resized inside the classifier's lanes, one per core already.
    cv2.setNumThreads(1)
    return cv2


def _box_bilinear(img: Image.Image, cfg: PreprocessConfig) -> NDArray[np.uint8]:
    """``box-bilinear``: the centred square reduced by a whole factor with a box filter while
    it is at least twice the target, then resized bilinearly (OpenCV, no antialiasing).

    It measured 0.15 ms against 1.0-1.2 ms for Pillow's antialiased bilinear resize of a
    348 px photo to 260 px, a sixth of a photo's whole cost to the int8 model; the box step
    keeps what is left of a downscale under 2x, where skipping antialiasing loses nothing
    the model notices (same top-1 on every held-out set within one photo).
    """
    w, h = img.size
    side = min(round(cfg.input_size * min(w, h) / cfg.resize_to), w, h)
    left, top = (w - side) // 2, (h - side) // 2
    box = (left, top, left + side, top + side)
    factor = side // cfg.input_size
    square = img.reduce(factor, box) if factor >= 2 else img.crop(box)
    cv2 = _cv2()
    out: NDArray[np.uint8] = cv2.resize(
        np.asarray(square), (cfg.input_size, cfg.input_size), interpolation=cv2.INTER_LINEAR
    )
    return out


def load_pixels(
    data: bytes, cfg: PreprocessConfig, limits: ImageLimits = ImageLimits()
) -> NDArray[np.uint8]:
    """Bytes straight to the model's input pixels for one image."""
    img = decode_image(data, limits, draft_size=cfg.resize_to, background=cfg.background)
    try:
        return preprocess(img, cfg)
    except Exception as exc:  # an odd mode or size that decoded but will not convert
        raise UnsupportedImageError(
            f"cannot prepare the image ({type(exc).__name__}: {exc})"
        ) from exc


# The views a labelled photo teaches besides itself, most useful first (``adapt`` takes the
# first few when a fruit has many photos): a mirror, crops of 80% and 60% of each side
# (centre, then corners), the whole photo padded square, quarter turns, colour and light.
# With them, ten labelled photos per fruit lifted the worst wild fruit (mango) from 65.8-80.5%
# (median 71.1%) to 76.3-81.4% (median 78.9%) and wild top-1 from 90.3-91.9% to 91.3-93.4%,
# grocery and studio as before (``fruitstream bench --adapt --methods mix``, seeds 0-4).
_CORNERS = ((0.5, 0.5), (0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0))
TEACHING_VIEWS: tuple[str, ...] = (
    "mirror",
    *(f"crop-80-{i}" for i in range(len(_CORNERS))),
    *(f"crop-60-{i}" for i in range(len(_CORNERS))),
    "padded", "turn-90", "turn-270", "turn-180", "pale", "bright", "dim",
)  # fmt: skip
_SMALLEST_CROP = 0.6  # of each side: the views' photo is decoded that much finer


Views = int | Sequence[str]  # the first n of TEACHING_VIEWS, or some of them by name


def view_names(views: Views) -> tuple[str, ...]:
    """The names ``views`` stands for; an unknown name is a ValueError."""
    if isinstance(views, int):
        return TEACHING_VIEWS[:views]
    unknown = [v for v in views if v not in TEACHING_VIEWS]
    if unknown:
        raise ValueError(f"unknown views {unknown}; choose among {', '.join(TEACHING_VIEWS)}")
    return tuple(views)


def teaching_views(img: Image.Image, views: Views) -> list[Image.Image]:
    """The first ``views`` of ``TEACHING_VIEWS`` of an RGB image, or the ones it names."""
    from PIL import ImageEnhance, ImageOps

    w, h = img.size
    out: list[Image.Image] = []
    for name in view_names(views):
        if name == "mirror":
            out.append(ImageOps.mirror(img))
        elif name.startswith("crop-"):
            _, size, where = name.split("-")
            scale = int(size) / 100
            fx, fy = _CORNERS[int(where)]
            cw, ch = max(1, round(w * scale)), max(1, round(h * scale))
            left, top = round((w - cw) * fx), round((h - ch) * fy)
            out.append(img.crop((left, top, left + cw, top + ch)))
        elif name == "padded":
            side = max(w, h)
            square = Image.new("RGB", (side, side), (128, 128, 128))
            square.paste(img, ((side - w) // 2, (side - h) // 2))
            out.append(square)
        elif name.startswith("turn-"):
            out.append(img.rotate(int(name.removeprefix("turn-")), expand=True))
        elif name == "pale":
            out.append(ImageEnhance.Color(img).enhance(0.6))
        else:
            out.append(ImageEnhance.Brightness(img).enhance(1.25 if name == "bright" else 0.8))
    return out


def load_views(
    data: bytes, cfg: PreprocessConfig, n: Views, limits: ImageLimits = ImageLimits()
) -> NDArray[np.uint8]:
    """A photo's model input pixels (exactly as ``load_pixels`` gives them) and those of its
    first ``n`` teaching views (or the views ``n`` names), stacked."""
    names = view_names(n)  # a wrong name is the caller's error, not the photo's
    photo = load_pixels(data, cfg, limits)
    if not names:
        return photo[None]
    # Decoded again, finer, so that the smallest crop keeps the detail of a whole photo.
    draft = round(cfg.resize_to / _SMALLEST_CROP)
    img = to_rgb(decode_image(data, limits, draft_size=draft, background=cfg.background))
    try:
        return np.stack([photo, *(preprocess(v, cfg) for v in teaching_views(img, names))])
    except Exception as exc:  # an odd mode or size that decoded but will not convert
        raise UnsupportedImageError(
            f"cannot prepare the image ({type(exc).__name__}: {exc})"
        ) from exc
