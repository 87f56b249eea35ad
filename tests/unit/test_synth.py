"""Synthetic scenes: cut-outs keep the fruit and drop the studio background; scenes are seeded."""

from __future__ import annotations

import random

import numpy as np
from PIL import Image, ImageDraw

from fruitstream.training import synth


def studio_frame(colour: tuple[int, int, int] = (200, 30, 30)) -> Image.Image:
    """A Fruits-360-like frame: a fruit (a disc with a white highlight) on white."""
    img = Image.new("RGB", (100, 100), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    draw.ellipse((20, 20, 80, 80), fill=colour)
    draw.ellipse((40, 35, 48, 43), fill=(255, 255, 255))  # specular highlight inside
    return img


def test_cutout_keeps_the_fruit_and_drops_the_white_background() -> None:
    alpha = np.asarray(synth.cutout(studio_frame()).getchannel("A"))
    yy, xx = np.mgrid[:100, :100]
    r = np.hypot(xx - 50, yy - 50)
    assert (alpha[r < 26] > 240).all()  # the fruit, highlight included, is opaque
    assert (alpha[r > 34] == 0).all()  # the studio background is gone


def test_background_replacement_keeps_the_fruit_pixels() -> None:
    sprite = synth.cutout(studio_frame())
    canvas = Image.new("RGBA", (200, 200), (20, 40, 200, 255))
    synth._paste(canvas, sprite, synth.Placement(100, 100, 100))
    arr = np.asarray(canvas.convert("RGB")).astype(int)
    centre = arr[100:115, 95:115]  # inside the fruit (centred at 100, 100), below the highlight
    assert (abs(centre - [200, 30, 30]).max(axis=2) < 12).all()
    corner = arr[:20, :20]  # the new background, untouched by the old white
    assert (abs(corner - [20, 40, 200]).max(axis=2) < 3).all()
    # No white fringe: nothing near-white anywhere on the new scene but the highlight.
    whites = (arr.min(axis=2) > 230).sum()
    assert whites <= 9 * 9  # the highlight alone


def test_recolour_changes_hue_and_keeps_shape() -> None:
    sprite = synth.cutout(studio_frame((60, 120, 40)))  # a green mango
    yellow = synth.recolour(sprite, (50, 50), 200, 210)
    assert np.array_equal(np.asarray(yellow.getchannel("A")), np.asarray(sprite.getchannel("A")))
    hsv = np.asarray(yellow.convert("RGB").convert("HSV")).astype(float)
    inside = np.asarray(sprite.getchannel("A")) == 255
    hue_deg = hsv[..., 0][inside].mean() * 360 / 255
    assert 40 < hue_deg < 60
    assert abs(hsv[..., 2][inside].mean() - 210) < 15


def test_red_blend_does_not_sweep_the_colour_wheel() -> None:
    sprite = synth.cutout(studio_frame((60, 120, 40)))
    blush = synth.recolour(sprite, (-10, 45), 200, 200)
    hsv = np.asarray(blush.convert("RGB").convert("HSV")).astype(float)
    inside = np.asarray(sprite.getchannel("A")) == 255
    hue_deg = hsv[..., 0][inside] * 360 / 255
    assert ((hue_deg < 60) | (hue_deg > 340)).all()  # reds to yellows, never green or blue


def test_scenes_are_seeded_and_photo_sized() -> None:
    sprites = [synth.cutout(studio_frame())]
    for cls in ("grape", "cherry", "strawberry", "apple", "other:plum"):
        a = synth.scene(sprites, cls, random.Random(7), size=160)
        b = synth.scene(sprites, cls, random.Random(7), size=160)
        assert a.size == (160, 160) and a.mode == "RGB"
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_a_grape_bunch_is_many_berries_narrowing_downward() -> None:
    berries, stems = synth.bunch_layout(random.Random(3), 320)
    assert len(berries) >= 10 and stems
    ys = sorted({round(b.y) for b in berries})
    top = [b.x for b in berries if b.y < ys[len(ys) // 3]]
    bottom = [b.x for b in berries if b.y > ys[2 * len(ys) // 3]]
    assert max(top) - min(top) > max(bottom) - min(bottom)


def test_contact_sheet_tiles_every_image() -> None:
    imgs = [Image.new("RGB", (50, 30), (i * 20, 0, 0)) for i in range(10)]
    sheet = synth.contact_sheet(imgs, cols=4, tile=32)
    assert sheet.size == (128, 96)
