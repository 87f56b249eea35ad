"""Step 2a: the training images and their views: studio frames, real photos, negatives, scenes."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageEnhance, ImageOps

from fruitstream.core.imaging import decode_image, preprocess
from fruitstream.dataset import image_files, labelled_images
from fruitstream.errors import ConfigError
from fruitstream.model.bundle import PreprocessConfig
from fruitstream.training import synth
from fruitstream.training.config import OTHER, REAL, SCENE, STUDIO, TrainConfig, log

FIELD_PREFIX = "field:"  # how a field photo's group starts: "field:<fruit>:<photo>"


@dataclass(frozen=True)
class Source:
    """One training image: a file on disk, or a synthetic scene of ``scene_of``'s sprites."""

    target: int
    kind: int
    path: Path | None = None
    scene_of: str = ""  # a fruit class, or "other:<variety>" for a negative scene
    seed: int = 0
    # Part of the photo (left, top, right, bottom, as fractions of its sides): a field crop.
    crop: tuple[float, float, float, float] | None = None
    # The photo it was made from, when several sources share one (tiles, crops, augmented
    # copies): they form one group, so a held-out split never puts one photo on both sides.
    photo: str = ""

    def key(self) -> tuple[Any, ...]:
        return (self.target, self.kind, str(self.path), self.scene_of, self.seed, self.crop)

    def group_key(self) -> str:
        return self.photo or f"{self.kind}:{self.path}:{self.scene_of}:{self.seed}:{self.crop}"


def augment(img: Image.Image, rng: random.Random) -> Image.Image:
    """A random view of a real photo: crop, flip, small rotation, light and colour."""
    w, h = img.size
    scale = rng.uniform(0.6, 1.0)
    cw, ch = int(w * scale), int(h * scale)
    left, top = rng.randint(0, w - cw), rng.randint(0, h - ch)
    img = img.crop((left, top, left + cw, top + ch))
    if rng.random() < 0.5:
        img = ImageOps.mirror(img)
    img = img.rotate(rng.uniform(-15, 15), resample=Image.Resampling.BILINEAR, fillcolor=(0, 0, 0))
    img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.75, 1.25))
    img = ImageEnhance.Contrast(img).enhance(rng.uniform(0.75, 1.25))
    return ImageEnhance.Color(img).enhance(rng.uniform(0.75, 1.25))


def sample_up_to(items: list[Any], cap: int | None, rng: random.Random) -> list[Any]:
    return items if cap is None or len(items) <= cap else rng.sample(items, cap)


def _by_class(items: list[tuple[Path, str]]) -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {}
    for path, cls in items:
        out.setdefault(cls, []).append(path)
    return out


def variety(path: Path) -> str:
    """The other-fruit variety a Fruits-360 frame shows: ``plum-2_12_100.jpg`` -> ``plum-2``."""
    return path.name.split("_", 1)[0]


def studio_frames(cfg: TrainConfig) -> dict[str, list[Path]]:
    """Studio frames by fruit class, and other-fruit frames by ``other:<variety>``: what
    studio sources are sampled from and what the scenes' sprites are cut out of."""
    frames = _by_class(labelled_images(cfg.data_dir / "studio" / "train", cfg.classes))
    for p in image_files(cfg.data_dir / "other-fruit" / "train"):
        frames.setdefault(f"other:{variety(p)}", []).append(p)
    return frames


def training_sources(cfg: TrainConfig, frames: dict[str, list[Path]]) -> list[Source]:
    """Every training image; the target of a negative is ``len(classes)``."""
    rng = random.Random(cfg.seed)
    reject = len(cfg.classes)
    grocery = _by_class(labelled_images(cfg.data_dir / "grocery" / "train", cfg.classes))
    studio = {c: frames[c] for c in cfg.classes if c in frames}
    if not studio and not grocery:
        raise ConfigError(f"no training images for {cfg.classes} under {cfg.data_dir}")
    sources: list[Source] = []
    for idx, cls in enumerate(cfg.classes):
        picked = sample_up_to(studio.get(cls, []), cfg.capped(cfg.studio_per_class), rng)
        sources += [Source(idx, STUDIO, p) for p in picked]
        sources += [
            Source(idx, REAL, p) for p in sample_up_to(grocery.get(cls, []), cfg.max_per_class, rng)
        ]
        if studio.get(cls):
            n = cfg.capped(dict(cfg.extra_scenes).get(cls, cfg.scenes_per_class))
            sources += [
                Source(idx, SCENE, scene_of=cls, seed=rng.getrandbits(32)) for _ in range(n)
            ]
    if cfg.field:
        sources += field_sources(cfg, rng)
    not_fruit = image_files(cfg.data_dir / "not-fruit" / "train")
    sources += [Source(reject, REAL, p) for p in sample_up_to(not_fruit, cfg.max_per_class, rng)]
    # Varieties in the order their files sort (``plum-2_...`` before ``plum_...``).
    varieties = [name for name in frames if name.startswith("other:")]
    for name in varieties:
        sources += [
            Source(reject, OTHER, p) for p in sample_up_to(frames[name], cfg.max_per_class, rng)
        ]
    if varieties:
        names = sorted(varieties)
        n = cfg.capped(cfg.negative_scenes)
        sources += [
            Source(reject, SCENE, scene_of=rng.choice(names), seed=rng.getrandbits(32))
            for _ in range(n)
        ]
    return sources


def field_photo(path: Path) -> str:
    """The photo a field/ file comes from: IAGI copies share the name before their last ``-``,
    AppleBBCH81 tiles the name before their last ``_``."""
    stem = path.stem
    if stem.startswith("lathort-"):
        return stem.rsplit("_", 1)[0]
    return stem.rsplit("-", 1)[0]


def read_boxes(path: Path) -> list[tuple[float, float, float, float]]:
    """YOLO boxes (class cx cy w h, relative) as (left, top, right, bottom) fractions."""
    if not path.is_file():
        return []
    boxes = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) != 5:
            continue
        cx, cy, w, h = (float(v) for v in parts[1:])
        boxes.append((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
    return boxes


def box_crops(
    boxes: list[tuple[float, float, float, float]], n: int, rng: random.Random
) -> list[tuple[float, float, float, float]]:
    """``n`` square-ish crops of a tile, each around one fruit or a few neighbouring ones, at a
    random scale: fruit the size people frame it, with the leaves and sky around it."""
    out: list[tuple[float, float, float, float]] = []
    for _ in range(n if boxes else 0):
        x0, y0, x1, y1 = rng.choice(boxes)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        near = sorted(
            boxes, key=lambda o: ((o[0] + o[2]) / 2 - cx) ** 2 + ((o[1] + o[3]) / 2 - cy) ** 2
        )
        group = near[: rng.randint(1, 4)]
        gl, gt = min(o[0] for o in group), min(o[1] for o in group)
        gr, gb = max(o[2] for o in group), max(o[3] for o in group)
        side = min(1.0, max(0.2, max(gr - gl, gb - gt) * rng.uniform(1.4, 2.8)))
        mx, my = (gl + gr) / 2, (gt + gb) / 2
        left = min(max(0.0, mx - side / 2), 1.0 - side)
        top = min(max(0.0, my - side / 2), 1.0 - side)
        out.append((left, top, left + side, top + side))
    return out


def field_sources(cfg: TrainConfig, rng: random.Random) -> list[Source]:
    """Real photos of fruit where it grows (``field/train``; at most ``field_per_fruit`` of a
    fruit): each photo whole (unless ``field_whole`` is off and it has crops), and for photos
    with boxes ``field_crops`` crops around its fruit; every source of one photo is one group."""
    sources: list[Source] = []
    root = cfg.data_dir / "field"
    if not (root / "train").is_dir():
        log(f"   no {root / 'train'}: training without field photos")
        return sources
    caps = [c for c in (cfg.max_per_class, cfg.field_per_fruit) if c is not None]
    for cls, paths in _by_class(labelled_images(root / "train", cfg.classes)).items():
        for path in sorted(sample_up_to(paths, min(caps, default=None), rng)):
            sources += _field_photo_sources(cfg, root, path, cls, rng)
    return sources


def _field_photo_sources(
    cfg: TrainConfig, root: Path, path: Path, cls: str, rng: random.Random
) -> list[Source]:
    target = cfg.classes.index(cls)
    photo = f"{FIELD_PREFIX}{cls}:{field_photo(path)}"
    boxes = read_boxes(root / "boxes" / cls / f"{path.stem}.txt")
    crops = box_crops(boxes, cfg.field_crops, rng)
    whole = [Source(target, REAL, path, photo=photo)] if cfg.field_whole or not crops else []
    return whole + [Source(target, REAL, path, crop=c, photo=photo) for c in crops]


class SpriteBank:
    """Cut-out studio frames per fruit class or other-fruit variety, made on first use."""

    def __init__(self, cfg: TrainConfig, frames: dict[str, list[Path]]) -> None:
        self.cfg = cfg
        self._sprites: dict[str, list[Image.Image]] = {}
        self._files = frames
        # Backgrounds: real photos with none of the fruits in them.
        self.backgrounds = [
            decode_image(p.read_bytes())
            for p in image_files(cfg.data_dir / "not-fruit" / "train")[: cfg.capped(400)]
        ]

    def sprites(self, name: str) -> list[Image.Image]:
        if name not in self._sprites:
            rng = random.Random(f"{self.cfg.seed}:{name}")
            files = sample_up_to(sorted(self._files[name]), self.cfg.sprites_per_class, rng)
            self._sprites[name] = [synth.cutout(decode_image(p.read_bytes())) for p in files]
        return self._sprites[name]

    def scene(self, source: Source) -> Image.Image:
        rng = random.Random(source.seed)
        return synth.scene(self.sprites(source.scene_of), source.scene_of, rng, self.backgrounds)


def group_ids(sources: list[Source]) -> list[int]:
    """A group id per source, numbered in order of first appearance: the sources of one photo
    (tiles, crops, copies) share theirs."""
    ids: dict[str, int] = {}
    return [ids.setdefault(src.group_key(), len(ids)) for src in sources]


def training_views(
    sources: list[Source], bank: SpriteBank, cfg: TrainConfig, pre: PreprocessConfig
) -> Iterator[tuple[NDArray[np.uint8], Source, int]]:
    """``(pixels, source, group)`` for every view of every training image."""
    rng = random.Random(cfg.seed)
    for src, group in zip(sources, group_ids(sources), strict=True):
        if src.kind == SCENE:
            yield preprocess(bank.scene(src), pre), src, group
            continue
        assert src.path is not None
        img = decode_image(src.path.read_bytes(), background=pre.background)
        if src.crop is not None:
            w, h = img.size
            x0, y0, x1, y1 = src.crop
            img = img.crop((round(x0 * w), round(y0 * h), round(x1 * w), round(y1 * h)))
        views = [img]
        if src.kind == REAL:
            views += [augment(img, rng) for _ in range(cfg.real_views - 1)]
        for view in views:
            yield preprocess(view, pre), src, group


def scene_contact_sheet(cfg: TrainConfig, path: Path, per_class: int = 6) -> Path:
    """A grid of generated scenes, a row per class and the negatives last, to check by eye."""
    frames = studio_frames(cfg)
    sources = [s for s in training_sources(cfg, frames) if s.kind == SCENE]
    bank = SpriteBank(cfg, frames)
    n = min(per_class, cfg.capped(cfg.scenes_per_class), cfg.capped(cfg.negative_scenes))
    picked: list[Source] = []
    for target in range(len(cfg.classes) + 1):
        picked += [s for s in sources if s.target == target][:n]
    synth.contact_sheet([bank.scene(s) for s in picked], cols=n, tile=160).save(path)
    return path
