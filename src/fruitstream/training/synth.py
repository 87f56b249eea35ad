"""Synthetic training scenes: studio fruits cut out of their white background and composited.

Fruits-360 shows one fruit on white; people photograph bunches, piles, pairs and punnets on
tables, plates, shelves and trees. A scene here pastes several cut-out studio frames of one
class onto a real or drawn background, arranged the way that fruit is usually seen (grape
berries packed into a bunch on a stem, cherries in stalked pairs, strawberries in a punnet),
recolours varieties the studio set lacks (yellow and red mangoes, dark limes), then degrades the
photo (light, white balance, blur, JPEG). Everything is drawn from a seeded ``random.Random``.
"""

from __future__ import annotations

import io
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageOps

# Bumped whenever a change alters generated scenes: training caches its features by it.
VERSION = 3
# A pixel counts as studio background when every channel is at least this bright.
WHITE_LEVEL = 232
SCENE_SIZE = 320


def cutout(img: Image.Image, white_level: int = WHITE_LEVEL) -> Image.Image:
    """The fruit of a white-background frame as RGBA: opaque fruit, transparent background.

    Bright specular highlights inside the fruit are kept: the mask is closed (holes filled)
    after small specks of background noise are opened away, then feathered by one pixel.
    """
    rgb = img.convert("RGB")
    arr = np.asarray(rgb)
    fg = (arr.min(axis=2) < white_level).astype(np.uint8) * 255
    mask = Image.fromarray(fg, mode="L")
    mask = mask.filter(ImageFilter.MinFilter(3)).filter(ImageFilter.MaxFilter(3))  # open
    mask = mask.filter(ImageFilter.MaxFilter(7)).filter(ImageFilter.MinFilter(7))  # close
    # Eroded by two pixels so that no white fringe of the studio background comes along.
    mask = _fill_holes(mask).filter(ImageFilter.MinFilter(5))
    # The frame's outermost pixels are background even where the fruit touches the edge.
    edge = np.asarray(mask).copy()
    edge[:2, :] = edge[-2:, :] = 0
    edge[:, :2] = edge[:, -2:] = 0
    mask = Image.fromarray(edge, mode="L")
    mask = mask.filter(ImageFilter.GaussianBlur(0.8))
    out = rgb.convert("RGBA")
    out.putalpha(mask)
    return out


def _fill_holes(mask: Image.Image) -> Image.Image:
    """Background reachable from the border stays background; every enclosed hole is fruit."""
    w, h = mask.size
    padded = Image.new("L", (w + 2, h + 2), 0)
    padded.paste(mask, (1, 1))
    ImageDraw.floodfill(padded, (0, 0), 128)
    arr = np.asarray(padded)[1:-1, 1:-1]
    return Image.fromarray(np.where(arr == 128, 0, 255).astype(np.uint8), mode="L")


def crop_to_alpha(sprite: Image.Image) -> Image.Image:
    box = sprite.getchannel("A").point(lambda a: 255 if a > 16 else 0).getbbox()
    return sprite.crop(box) if box else sprite


# ---------------------------------------------------------------------------------------------
# colour


def recolour(sprite: Image.Image, hues: tuple[float, float], sat: float, val: float) -> Image.Image:
    """Paint a sprite's hue as a vertical blend from ``hues[0]`` (top) to ``hues[1]`` (bottom),
    in degrees (negative for reds, so that the blend does not sweep the colour wheel), keeping
    its shading; ``sat`` and ``val`` are the mean saturation and brightness
    (0-255) the fruit gets, so a dark green studio mango can become a bright yellow one."""
    alpha = sprite.getchannel("A")
    hsv = np.asarray(sprite.convert("RGB").convert("HSV"), dtype=np.float32)
    inside = np.asarray(alpha) > 128
    if not inside.any():
        return sprite
    h = hsv.shape[0]
    ramp = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
    hue = (hues[0] + (hues[1] - hues[0]) * ramp) % 360.0
    hsv[..., 0] = hue * (255.0 / 360.0)
    for channel, target in ((1, sat), (2, val)):
        mean = float(hsv[..., channel][inside].mean()) or 1.0
        hsv[..., channel] = np.clip(hsv[..., channel] * (target / mean), 0, 255)
    out = Image.fromarray(hsv.astype(np.uint8), mode="HSV").convert("RGBA")
    out.putalpha(alpha)
    return out


# Varieties the studio frames lack, as (top hue, bottom hue) ranges in degrees, saturation and
# brightness factors: ripe mangoes run from yellow to orange and red-blushed, limes are often
# dark green, grapes range from green through red to purple-black.
VARIETIES: dict[str, list[tuple[tuple[float, float], tuple[float, float], float, float]]] = {
    "mango": [
        ((44, 54), (44, 54), 200, 215),  # yellow
        ((28, 38), (38, 50), 215, 215),  # orange-yellow
        ((-10, 5), (35, 50), 190, 200),  # red blush over yellow
        ((70, 85), (38, 48), 170, 190),  # green turning yellow
    ],
    "lime": [
        ((95, 110), (95, 110), 200, 120),  # dark green
        ((80, 95), (80, 95), 190, 170),  # bright green
    ],
    "grape": [
        ((265, 290), (265, 290), 120, 70),  # purple-black
        ((-30, -10), (-30, -10), 140, 110),  # red
        ((65, 80), (65, 80), 120, 180),  # green
    ],
    "cherry": [
        ((-8, 4), (-8, 4), 220, 170),  # bright red
        ((-15, -2), (-15, -2), 200, 90),  # dark red
    ],
}
# How often a sprite of these classes is recoloured (others: 0.65 of the time).
RECOLOUR_SHARE = {"mango": 0.85, "lime": 0.8, "cherry": 0.6}


def vary(sprite: Image.Image, cls: str, rng: random.Random) -> Image.Image:
    """Maybe recolour ``sprite`` into a variety of ``cls`` that the studio frames lack."""
    options = VARIETIES.get(cls)
    if not options or rng.random() >= RECOLOUR_SHARE.get(cls, 0.65):
        return sprite
    top, bottom, sat, val = rng.choice(options)
    return recolour(
        sprite,
        (rng.uniform(*top), rng.uniform(*bottom)),
        sat * rng.uniform(0.9, 1.1),
        val * rng.uniform(0.9, 1.1),
    )


# ---------------------------------------------------------------------------------------------
# backgrounds


def _plain(rng: random.Random, size: int) -> Image.Image:
    """A table top, wall or cloth: a colour, a soft gradient and some grain."""
    base = rng.choice(
        [(245, 245, 245), (230, 225, 215), (200, 170, 130), (150, 110, 70), (90, 60, 40),
         (120, 120, 125), (40, 40, 40), (210, 220, 230), (235, 215, 190), (60, 90, 60)]
    )  # fmt: skip
    base_arr = np.array(base, dtype=np.float32) * rng.uniform(0.8, 1.1)
    yy = np.linspace(-1, 1, size, dtype=np.float32)[:, None, None]
    grad = 1 + rng.uniform(-0.25, 0.25) * yy
    grain = np.random.default_rng(rng.getrandbits(32)).normal(0, rng.uniform(2, 8), (size, size, 1))
    arr = np.clip(base_arr[None, None, :] * grad + grain, 0, 255).astype(np.uint8)
    img = Image.fromarray(arr)
    if rng.random() < 0.4:  # a plate or bowl
        draw = ImageDraw.Draw(img)
        r = rng.uniform(0.35, 0.55) * size
        cx, cy = rng.uniform(0.35, 0.65) * size, rng.uniform(0.35, 0.65) * size
        rim = rng.choice([(250, 250, 250), (235, 235, 240), (200, 60, 40), (60, 90, 160)])
        draw.ellipse((cx - r, cy - r * 0.8, cx + r, cy + r * 0.8), fill=rim)
        inner = tuple(max(0, c - 15) for c in rim)
        draw.ellipse((cx - r * 0.75, cy - r * 0.6, cx + r * 0.75, cy + r * 0.6), fill=inner)
    return img


def _foliage(rng: random.Random, size: int) -> Image.Image:
    """A tree or vine: sky or shade behind many overlapping leaves of varied greens."""
    sky = rng.choice([(170, 200, 235), (220, 230, 235), (40, 60, 40), (90, 120, 80)])
    img = Image.new("RGB", (size, size), sky)
    draw = ImageDraw.Draw(img)
    for _ in range(rng.randint(40, 140)):
        g = rng.randint(70, 190)
        colour = (rng.randint(20, g // 2), g, rng.randint(10, g // 3))
        cx, cy = rng.uniform(0, size), rng.uniform(0, size)
        length, width = rng.uniform(0.06, 0.2) * size, rng.uniform(0.03, 0.08) * size
        angle = rng.uniform(0, math.pi)
        pts = [
            (
                cx + math.cos(angle) * length * math.cos(t) - math.sin(angle) * width * math.sin(t),
                cy + math.sin(angle) * length * math.cos(t) + math.cos(angle) * width * math.sin(t),
            )
            for t in np.linspace(0, 2 * math.pi, 12)
        ]
        draw.polygon(pts, fill=colour)
    return img.filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.5)))


def _photo(rng: random.Random, size: int, photos: Sequence[Image.Image]) -> Image.Image:
    """A crop of a real photo with nothing of the fruits in it, often out of focus."""
    src = rng.choice(photos)
    w, h = src.size
    side = int(min(w, h) * rng.uniform(0.5, 1.0))
    left, top = rng.randint(0, w - side), rng.randint(0, h - side)
    img = src.crop((left, top, left + side, top + side)).resize((size, size))
    if rng.random() < 0.6:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(1, 6)))
    return img


def background(rng: random.Random, size: int, photos: Sequence[Image.Image]) -> Image.Image:
    kind = rng.random()
    if photos and kind < 0.4:
        return _photo(rng, size, photos)
    if kind < 0.55:
        return _foliage(rng, size)
    return _plain(rng, size)


# ---------------------------------------------------------------------------------------------
# arrangements: where sprites go


@dataclass(frozen=True)
class Placement:
    x: float  # centre, in canvas pixels
    y: float
    size: float  # longer side, in canvas pixels
    angle: float = 0.0


def _paste(canvas: Image.Image, sprite: Image.Image, p: Placement, shade: float = 1.0) -> None:
    # Resampled premultiplied: transparent pixels still hold the studio's white, which straight
    # alpha would smear into a white fringe around the fruit.
    s = sprite.convert("RGBa")
    scale = p.size / max(s.size)
    s = s.resize((max(2, round(s.width * scale)), max(2, round(s.height * scale))))
    if p.angle:
        s = s.rotate(p.angle, resample=Image.Resampling.BILINEAR, expand=True)
    s = s.convert("RGBA")
    if shade != 1.0:
        alpha = s.getchannel("A")
        s = ImageEnhance.Brightness(s.convert("RGB")).enhance(shade).convert("RGBA")
        s.putalpha(alpha)
    # A soft shadow under the fruit grounds it on the surface.
    shadow = Image.new("RGBA", s.size, (0, 0, 0, 0))
    shadow.putalpha(s.getchannel("A").point(lambda a: a * 0.35))
    shadow = shadow.filter(ImageFilter.GaussianBlur(max(1, p.size / 20)))
    off = round(p.size * 0.06)
    x, y = round(p.x - s.width / 2), round(p.y - s.height / 2)
    canvas.alpha_composite(shadow, (max(0, x + off), max(0, y + off)))
    _composite(canvas, s, x, y)


def _composite(canvas: Image.Image, s: Image.Image, x: int, y: int) -> None:
    """``s`` onto ``canvas`` at ``(x, y)``, the part above or left of the canvas cut off."""
    left, top = max(0, -x), max(0, -y)
    if left >= s.width or top >= s.height:
        return
    canvas.alpha_composite(s.crop((left, top, s.width, s.height)), (x + left, y + top))


def single(rng: random.Random, size: int) -> list[Placement]:
    return [
        Placement(
            rng.uniform(0.35, 0.65) * size,
            rng.uniform(0.35, 0.65) * size,
            rng.uniform(0.45, 0.95) * size,
            rng.uniform(-40, 40),
        )
    ]


def group(rng: random.Random, size: int) -> list[Placement]:
    n = rng.randint(2, 6)
    s = rng.uniform(0.25, 0.45) * size
    return [
        Placement(rng.uniform(0.2, 0.8) * size, rng.uniform(0.2, 0.8) * size,
                  s * rng.uniform(0.85, 1.15), rng.uniform(-180, 180))
        for _ in range(n)
    ]  # fmt: skip


def pile(rng: random.Random, size: int) -> list[Placement]:
    """Many fruits filling the frame, back rows first and smaller, like a market display."""
    s = rng.uniform(0.12, 0.25) * size
    out = []
    y = -0.2 * s
    while y < size + s * 0.3:
        row = s * (0.8 + 0.4 * y / size)
        x = rng.uniform(-0.5, 0.2) * row
        while x < size + row * 0.3:
            out.append(
                Placement(x, y + rng.uniform(-0.15, 0.15) * row, row * rng.uniform(0.9, 1.1),
                          rng.uniform(-180, 180))
            )  # fmt: skip
            x += row * rng.uniform(0.7, 0.95)
        y += row * rng.uniform(0.55, 0.8)
    return out


def bunch_layout(rng: random.Random, size: int) -> tuple[list[Placement], list[tuple[float, ...]]]:
    """Grape berries packed into a cone hanging from a stem: rows widest at the top."""
    height = rng.uniform(0.5, 1.1) * size
    width = height * rng.uniform(0.55, 0.95)
    cx, top = rng.uniform(0.35, 0.65) * size, (size - height) / 2 + rng.uniform(-0.1, 0.1) * size
    # Real bunches hold dozens of berries: from a few large ones to many small ones.
    berry = width / rng.uniform(4.0, 10.0)
    berries = []
    rows = max(3, int(height / (berry * 0.75)))
    for r in range(rows):
        frac = r / max(1, rows - 1)
        row_w = width * (1 - rng.uniform(0.5, 0.85) * frac) * rng.uniform(0.85, 1.1)
        n = max(1, round(row_w / (berry * 0.85)))
        y = top + berry * 0.5 + r * berry * 0.75
        for i in range(n):
            x = cx - row_w / 2 + (i + 0.5) * row_w / n + rng.uniform(-0.12, 0.12) * berry
            berries.append(
                Placement(x, y + rng.uniform(-0.1, 0.1) * berry, berry * rng.uniform(0.85, 1.1),
                          rng.uniform(-180, 180))
            )  # fmt: skip
    stem: tuple[float, ...] = (
        cx, top - berry * 0.8, cx + rng.uniform(-0.3, 0.3) * berry, top + berry * 1.5
    )  # fmt: skip
    return berries, [stem]


def pairs_layout(rng: random.Random, size: int) -> tuple[list[Placement], list[tuple[float, ...]]]:
    """Cherries hanging in pairs (or alone) on long stalks joined at the top."""
    placements: list[Placement] = []
    stems: list[tuple[float, ...]] = []
    s = rng.uniform(0.1, 0.22) * size
    for _ in range(rng.randint(1, 5)):
        jx, jy = rng.uniform(0.15, 0.85) * size, rng.uniform(0.05, 0.5) * size
        for _ in range(rng.choice([1, 2, 2, 2, 3])):
            x, y = jx + rng.uniform(-1.0, 1.0) * s, jy + rng.uniform(1.5, 2.5) * s
            placements.append(Placement(x, y, s * rng.uniform(0.9, 1.1), rng.uniform(-20, 20)))
            stems.append((jx, jy, x, y - s * 0.4))
    return placements, stems


def punnet_layout(rng: random.Random, size: int, canvas: Image.Image) -> list[Placement]:
    """Draw a punnet (a box seen from above at an angle) and fill it with a pile."""
    draw = ImageDraw.Draw(canvas)
    colour = rng.choice([(40, 120, 60, 255), (235, 235, 235, 255), (200, 200, 210, 180),
                         (120, 80, 50, 255)])  # fmt: skip
    x0, y0 = rng.uniform(0.02, 0.15) * size, rng.uniform(0.1, 0.25) * size
    x1, y1 = size - rng.uniform(0.02, 0.15) * size, size - rng.uniform(0.02, 0.1) * size
    draw.rectangle((x0, y0, x1, y1), fill=colour)
    s = rng.uniform(0.16, 0.26) * size
    out = []
    y = y0 + s * 0.4
    while y < y1 - s * 0.2:
        x = x0 + s * 0.5
        while x < x1 - s * 0.3:
            out.append(Placement(x + rng.uniform(-0.1, 0.1) * s, y, s * rng.uniform(0.9, 1.1),
                                 rng.uniform(-180, 180)))  # fmt: skip
            x += s * rng.uniform(0.7, 0.9)
        y += s * rng.uniform(0.6, 0.8)
    return out


Layout = Callable[[random.Random, int], list[Placement]]
LAYOUTS: dict[str, Layout] = {"single": single, "group": group, "pile": pile}
# How each class is arranged, with weights; classes not listed use DEFAULT_STYLES.
DEFAULT_STYLES = {"single": 0.35, "group": 0.35, "pile": 0.3}
# Negatives ("other:<variety>") come in every arrangement, so that none of them means a fruit.
NEGATIVE_STYLES = {"single": 0.3, "group": 0.3, "pile": 0.25, "bunch": 0.08, "pairs": 0.07}
STYLES: dict[str, dict[str, float]] = {
    "grape": {"bunch": 0.7, "pile": 0.15, "group": 0.15},
    "cherry": {"pairs": 0.5, "pile": 0.3, "group": 0.2},
    "strawberry": {"punnet": 0.3, "pile": 0.25, "group": 0.25, "single": 0.2},
}


# ---------------------------------------------------------------------------------------------
# the photo after the scene: camera and compression


def photographic(img: Image.Image, rng: random.Random) -> Image.Image:
    """Light, white balance, focus, noise and JPEG quality of an ordinary photo."""
    img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.7, 1.25))
    img = ImageEnhance.Contrast(img).enhance(rng.uniform(0.75, 1.3))
    img = ImageEnhance.Color(img).enhance(rng.uniform(0.7, 1.3))
    gains = np.array([rng.uniform(0.88, 1.12) for _ in range(3)], dtype=np.float32)
    arr = np.asarray(img, dtype=np.float32) * gains
    if rng.random() < 0.3:
        noise_rng = np.random.default_rng(rng.getrandbits(32))
        arr += noise_rng.normal(0, rng.uniform(2, 8), arr.shape)
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.8)))
    if rng.random() < 0.5:
        img = ImageOps.mirror(img)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=rng.randint(35, 95))
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


# ---------------------------------------------------------------------------------------------
# a scene


def _stalk(draw: ImageDraw.ImageDraw, line: tuple[float, ...], width: float) -> None:
    colour = (90 + int(width) % 30, 110, 50)
    draw.line(line, fill=colour, width=max(1, round(width)))


def scene(
    sprites: Sequence[Image.Image],
    cls: str,
    rng: random.Random,
    photos: Sequence[Image.Image] = (),
    size: int = SCENE_SIZE,
) -> Image.Image:
    """One synthetic photo of fruit of class ``cls`` made of cut-out ``sprites`` (RGBA)."""
    styles = NEGATIVE_STYLES if cls.startswith("other:") else STYLES.get(cls, DEFAULT_STYLES)
    style = rng.choices(list(styles), weights=list(styles.values()))[0]
    canvas = background(rng, size, photos).convert("RGBA")
    stems: list[tuple[float, ...]] = []
    if style == "bunch":
        placements, stems = bunch_layout(rng, size)
    elif style == "pairs":
        placements, stems = pairs_layout(rng, size)
    elif style == "punnet":
        placements = punnet_layout(rng, size, canvas)
    else:
        placements = LAYOUTS[style](rng, size)
    # One bunch or punnet is one variety; a pile or group may mix a few frames of it.
    pool = [vary(crop_to_alpha(rng.choice(sprites)), cls, rng) for _ in range(rng.randint(1, 3))]
    if style in {"bunch", "pairs"}:
        pool = pool[:1]
    draw = ImageDraw.Draw(canvas)
    if style == "bunch":
        for line in stems:
            _stalk(draw, line, size * 0.012)
    for p in placements:
        _paste(canvas, rng.choice(pool), p, shade=rng.uniform(0.75, 1.05))
    if style == "pairs":
        for line in stems:
            _stalk(draw, line, size * 0.008)
    return photographic(canvas.convert("RGB"), rng)


def contact_sheet(images: Sequence[Image.Image], cols: int = 8, tile: int = 128) -> Image.Image:
    """Thumbnails in a grid, to check generated scenes by eye before training on them."""
    rows = max(1, math.ceil(len(images) / cols))
    sheet = Image.new("RGB", (cols * tile, rows * tile), (128, 128, 128))
    for i, img in enumerate(images):
        thumb = img.copy()
        thumb.thumbnail((tile, tile))
        sheet.paste(thumb, ((i % cols) * tile, (i // cols) * tile))
    return sheet
