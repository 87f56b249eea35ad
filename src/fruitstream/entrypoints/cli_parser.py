"""The command line's grammar: every command, argument and help text of ``fruitstream``."""

from __future__ import annotations

import argparse

from fruitstream import __version__
from fruitstream.dataset import DATASET_DIR
from fruitstream.domain import ADAPT_METHODS, MIN_NEW_CLASS_PHOTOS
from fruitstream.model.bundle import PRECISIONS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fruitstream", description="Recognize fruit in photos, one or thousands."
    )
    parser.add_argument("--version", action="version", version=f"fruitstream {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("classify", help="classify image files or folders at once, in process")
    p.add_argument("paths", nargs="+", help="image files or folders (searched recursively)")
    p.add_argument("--top-k", type=int, default=3, help="how many guesses to list (default 3)")
    p.add_argument("--json", action="store_true", help="print one JSON array")
    p.add_argument("--model", help="model bundle folder (default: the shipped model)")
    p.add_argument("--precision", choices=PRECISIONS, help="graph to run (default: the bundle's)")

    p = sub.add_parser(
        "evaluate",
        help="top-1/top-3, per-fruit recall and precision, confusions, rejection, calibration",
    )
    p.add_argument(
        "dir",
        help="folder of <fruit>/ folders, with negatives in its not-fruit/ or in a sibling"
        " <dir>-other/ (wild/val + wild/val-other); or a flat folder of negatives",
    )
    p.add_argument("--not-fruit", help="folder of photos that are none of the fruits")
    p.add_argument("--json", action="store_true")
    p.add_argument("--model")
    p.add_argument("--precision", choices=PRECISIONS, help="graph to run (default: the bundle's)")
    p.add_argument("--min-accuracy", type=float, help="exit 1 when top-1 is below this")
    p.add_argument("--min-rejection", type=float, help="exit 1 when not-fruit rejection is below")
    p.add_argument(
        "--max-fruit-rejection", type=float, help="exit 1 when more fruit photos are rejected"
    )
    p.add_argument(
        "--min-balanced-accuracy", type=float, help="exit 1 when mean recall is below this"
    )
    p.add_argument(
        "--min-class-recall", type=float, help="exit 1 when any fruit's recall is below this"
    )

    p = sub.add_parser(
        "quality",
        help="quality gate: evaluate the model on every held-out set against its gate"
        " (the table in fruitstream/heldout.py); exit 1 when any gate fails",
    )
    p.add_argument(
        "data",
        nargs="?",
        help=f"fruits15 folder (default: FRUITSTREAM_DATASET_DIR, else {DATASET_DIR})",
    )
    p.add_argument("--json", action="store_true", help="print every report as one JSON object")
    p.add_argument("--model", help="model bundle folder (default: the shipped model)")
    p.add_argument("--precision", choices=PRECISIONS, help="graph to run (default: the bundle's)")

    p = sub.add_parser("train", help="fine-tune the classifier (needs the 'train' extra)")
    from fruitstream.training.options import add_train_arguments

    add_train_arguments(p)

    p = sub.add_parser("bench", help="benchmark the model: raw throughput, load, end to end")
    p.add_argument("images", nargs="*", help="real image files or folders for end to end")
    p.add_argument("--model")
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="graph measured in detail (default: the bundle's); both are always compared",
    )
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--max-files", type=int, default=50)
    p.add_argument(
        "--pipeline", type=int, metavar="N", help="benchmark the embedded pipeline with N photos"
    )
    p.add_argument(
        "--distributed",
        type=int,
        metavar="N",
        help="benchmark the configured Kafka + Spark stack with N photos",
    )
    p.add_argument(
        "--memory-images", type=int, default=5000, help="photos for the worker memory check"
    )
    p.add_argument(
        "--http",
        type=int,
        metavar="N",
        help="the HTTP API against in process: one photo, and a batch submit of N photos",
    )
    p.add_argument(
        "--http-load",
        type=int,
        metavar="N",
        help="N classify requests from --clients concurrent clients against a served API",
    )
    p.add_argument("--clients", type=int, default=8, help="concurrent clients for --http-load")
    p.add_argument(
        "--near-limit",
        type=int,
        metavar="N",
        help="worker peak memory on the given photos mixed with N images near the pixel limit",
    )
    p.add_argument(
        "--adapt",
        action="store_true",
        help="adapting to labels: k wild photos per fruit taught, the rest measured"
        " (FRUITSTREAM_DATASET_DIR: the fruits15 folder)",
    )
    p.add_argument("--draws", type=int, default=5, help="seeded draws per k for --adapt")
    p.add_argument("--seed", type=int, default=0, help="the draws' seed for --adapt")
    p.add_argument(
        "--methods",
        default="prior,prior:no-anchors,prototypes,mix",
        help="methods compared by --adapt",
    )
    p.add_argument(
        "--adapt-labels", type=int, default=1000, help="labels for --adapt's speed run (0: none)"
    )
    p.add_argument(
        "--open-set",
        action="store_true",
        help="the unknown answer: five open-set scores on the held-out sets, each at its"
        " operating point (FRUITSTREAM_DATASET_DIR: the fruits15 folder)",
    )
    p.add_argument("--plot", metavar="PNG", help="with --open-set: draw the trade-off curves")
    p.add_argument(
        "--tta",
        action="store_true",
        help="test-time views (mirror, centre crop, padded) against the photo alone",
    )
    p.add_argument("--json", action="store_true")

    p = sub.add_parser(
        "submit",
        help="send photos through the batch pipeline",
        description="Store each photo and queue it for classification; prints the session id."
        " With the embedded queue and no worker running, submit classifies the photos itself"
        " and returns when they are done (--queue-only leaves them for a worker). With Kafka,"
        " the Spark job classifies them. Inside folders, links and hidden files are skipped"
        " (each one reported).",
    )
    p.add_argument("paths", nargs="+", help="image files or folders")
    p.add_argument("--wait", action="store_true", help="show progress until done, then a summary")
    p.add_argument(
        "--timeout",
        type=float,
        metavar="S",
        help="with --wait: give up waiting after S seconds (exit 1; the session goes on)",
    )
    p.add_argument(
        "--queue-only",
        action="store_true",
        help="only queue the photos, never classify in this process (embedded queue)",
    )
    p.add_argument("--name", help="a name for the session")

    p = sub.add_parser(
        "repair",
        help="finish submits that were interrupted half way (workers also do it every 30 s)",
    )
    p.add_argument(
        "--older-than",
        type=float,
        default=60.0,
        metavar="S",
        help="only submits that have not moved for S seconds (default 60)",
    )

    p = sub.add_parser("worker", help="classify queued photos until stopped (embedded queue)")

    p = sub.add_parser("results", help="the results of one session")
    p.add_argument("session")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--json", action="store_true")
    group.add_argument("--csv", metavar="FILE")

    p = sub.add_parser("label", help="say what a batch photo shows (correct or confirm it)")
    p.add_argument("image_id", help="the image id of its result row (results --json)")
    p.add_argument("label", help="a fruit, 'not-fruit', or a new fruit's name")

    p = sub.add_parser("teach", help="label every photo of DIR/<label>/ with its folder's name")
    p.add_argument("dir", help="one folder per label: DIR/mango/*.jpg, DIR/not-fruit/*")

    p = sub.add_parser("labels", help="each labelled photo's current label, newest first")
    p.add_argument("--limit", type=int, default=1000)
    group = p.add_mutually_exclusive_group()
    group.add_argument("--json", action="store_true")
    group.add_argument("--csv", metavar="FILE")

    p = sub.add_parser(
        "adapt",
        help="a new model version from every label, live once the guard passes it",
        description="Refits the model's last layer on every labelled photo (new fruits from"
        f" {MIN_NEW_CLASS_PHOTOS} photos on), then measures it against the live version on the"
        " held-out sets and a held-out fifth of the labels: a loss of more than one point on"
        " any of them keeps the version but does not activate it (--force does).",
    )
    p.add_argument("--method", choices=ADAPT_METHODS, default="mix")
    p.add_argument("--force", action="store_true", help="activate even if the guard refuses")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("models", help="model versions; 'activate V' or 'rollback' to switch")
    p.add_argument("action", nargs="?", choices=("list", "activate", "rollback"), default="list")
    p.add_argument("version", nargs="?", help="for activate: a version, or 'base'")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("sessions", help="past sessions, newest first")
    p.add_argument("--limit", type=int, default=50)

    p = sub.add_parser("status", help="each backend: reachable or not, queue depth, workers")

    p = sub.add_parser("spark-job", help="run the Spark Structured Streaming job (Kafka)")
    p.add_argument(
        "--stop-after-idle", type=float, metavar="S", help="stop after S seconds without input"
    )

    p = sub.add_parser("ui", help="start the Streamlit app")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8501)

    p = sub.add_parser("serve", help="start the HTTP API (OpenAPI docs at /docs)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)

    p = sub.add_parser("config", help="print the effective configuration, secrets masked")
    return parser
