"""Command line: parse arguments, call the services, turn domain errors into exit codes."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from fruitstream import __version__
from fruitstream.errors import FruitstreamError
from fruitstream.model.bundle import PRECISIONS

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_USAGE = 2


def _settings() -> Any:
    from fruitstream.config import load_settings

    return load_settings()


def _classifier(args: argparse.Namespace) -> Any:
    from fruitstream.bootstrap import build_classifier

    return build_classifier(
        _settings(),
        model_dir=getattr(args, "model", None),
        precision=getattr(args, "precision", None),
    )


def _service(args: argparse.Namespace | None = None) -> Any:
    """The application service; ``--model`` / ``--precision`` choose its classifier."""
    from fruitstream.service import FruitService

    service = FruitService.create(_settings())
    if args is not None and (getattr(args, "model", None) or getattr(args, "precision", None)):
        service = FruitService(service.settings, service.backends, lambda: _classifier(args))
    return service


def _progress(total: int, desc: str) -> Any:
    """A progress bar on a terminal for long runs, nothing otherwise."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=total < 10 or not sys.stderr.isatty())


# --- classify --------------------------------------------------------------------------------


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def clean(text: object) -> str:
    """Text safe to print on a terminal: control characters (escape sequences in a crafted
    file name) shown as ``?``."""
    return _CONTROL.sub("?", str(text))


def _report_skipped(skipped: Sequence[tuple[Path, str]]) -> None:
    for path, why in skipped:
        print(f"{clean(path)}: skipped: {why}", file=sys.stderr)


def _describe(path: str, rec: dict[str, Any]) -> str:
    path = clean(path)
    if rec["error"]:
        return f"{path}: error: {clean(rec['error'])}"
    pct = f"{rec['confidence'] * 100:.1f}%"
    if not rec["known"]:
        return f"{path}: not one of the known fruits (closest: {rec['label']} {pct})"
    return f"{path}: {rec['label']} {pct}"


def cmd_classify(args: argparse.Namespace) -> int:
    service = _service(args)
    records = []
    skipped: list[tuple[Path, str]] = []
    with _progress(0, "classifying") as bar:
        paths = [Path(p) for p in args.paths]
        for rec in service.classify_files(paths, top_k=args.top_k, bar=bar, skipped=skipped):
            records.append(rec)
            if not args.json:
                bar.write(_describe(rec["path"], rec), file=sys.stdout)
    _report_skipped(skipped)
    if args.json:
        json.dump(records, sys.stdout, indent=2)
        sys.stdout.write("\n")
    if not records:
        print("no files to classify", file=sys.stderr)
        return EXIT_SOME_FAILED
    return EXIT_SOME_FAILED if any(r["error"] for r in records) else EXIT_OK


# --- evaluate ---------------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "   -  " if value is None else f"{100 * value:5.1f}%"


def _format_report(r: dict[str, Any]) -> Iterator[str]:
    yield f"model: {r['model']}"
    if "accuracy" in r:
        yield f"fruit photos: {r['n']} (failed to read: {r['failed']})"
        yield f"top-1: {r['accuracy']:.4f}   top-3: {r['top3']:.4f}"
        yield f"balanced accuracy (mean recall over fruits): {r['balanced_accuracy']:.4f}"
        yield f"fruit photos rejected (called unknown): {r['rejection_rate']:.4f}"
        yield f"expected calibration error: {r['ece']:.4f}"
        yield "per fruit:      recall  precision  photos"
        for label, pc in r["per_class"].items():
            if pc["n"]:
                yield f"  {label:<12} {_pct(pc['recall'])}  {_pct(pc['precision'])}   {pc['n']:5d}"
        pairs = r["confusion_pairs"][:10]
        if pairs:
            yield "most frequent confusions (truth -> answer):"
            for pair in pairs:
                yield f"  {pair['truth']:<12} -> {pair['predicted']:<12} {pair['n']}"
    if "not_fruit" in r:
        nf = r["not_fruit"]
        yield (
            f"negatives (none of the fruits): {nf['n']}, rejected (known=false):"
            f" {nf['rejection_rate']:.4f}"
        )
        if nf["called"]:
            named = ", ".join(f"{k} {v}" for k, v in list(nf["called"].items())[:8])
            yield f"  named as a fruit: {named}"


def cmd_evaluate(args: argparse.Namespace) -> int:
    from fruitstream.evaluation import evaluate

    clf = _classifier(args)
    with _progress(0, "evaluating") as bar:
        report = evaluate(
            clf,
            Path(args.dir),
            Path(args.not_fruit) if args.not_fruit else None,
            progress=bar.update,
        )
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print("\n".join(_format_report(report)))
    failures = []
    if args.min_accuracy is not None and report.get("accuracy", 0.0) < args.min_accuracy:
        failures.append(f"accuracy {report.get('accuracy', 0.0):.4f} < {args.min_accuracy}")
    if args.min_rejection is not None:
        rej = report.get("not_fruit", {}).get("rejection_rate", 0.0)
        if rej < args.min_rejection:
            failures.append(f"not-fruit rejection {rej:.4f} < {args.min_rejection}")
    if args.max_fruit_rejection is not None:
        rej = report.get("rejection_rate", 0.0)
        if rej > args.max_fruit_rejection:
            failures.append(f"fruit rejection {rej:.4f} > {args.max_fruit_rejection}")
    if args.min_balanced_accuracy is not None:
        bal = report.get("balanced_accuracy", 0.0)
        if bal < args.min_balanced_accuracy:
            failures.append(f"balanced accuracy {bal:.4f} < {args.min_balanced_accuracy}")
    if args.min_class_recall is not None:
        for label, pc in report.get("per_class", {}).items():
            if pc["recall"] is not None and pc["recall"] < args.min_class_recall:
                failures.append(f"{label} recall {pc['recall']:.4f} < {args.min_class_recall}")
    for failure in failures:
        print(f"quality gate failed: {failure}", file=sys.stderr)
    return EXIT_SOME_FAILED if failures else EXIT_OK


# --- train ------------------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    from fruitstream.training.cli import run_training

    run_training(args)
    return EXIT_OK


# --- bench ------------------------------------------------------------------------------------


def cmd_bench(args: argparse.Namespace) -> int:
    from fruitstream.bench import classifier_benchmark, format_classifier_benchmark
    from fruitstream.bootstrap import load_bundle
    from fruitstream.dataset import image_files

    settings = _settings()
    bundle = load_bundle(settings, args.model, args.precision)
    files: list[Path] = []
    for p in args.images or []:
        files.extend(image_files(Path(p)) if Path(p).is_dir() else [Path(p)])
    if args.distributed:
        from fruitstream.bench import distributed_benchmark, format_distributed_benchmark

        result = distributed_benchmark(files, args.distributed)
        print(json.dumps(result, indent=2) if args.json else format_distributed_benchmark(result))
        return EXIT_OK
    if args.http is not None:
        import tempfile

        from fruitstream.bench import format_http_benchmark, http_benchmark

        with tempfile.TemporaryDirectory() as tmp:
            result = http_benchmark(files[: args.max_files], args.http, args.repeats, Path(tmp))
        print(json.dumps(result, indent=2) if args.json else format_http_benchmark(result))
        return EXIT_OK
    if args.near_limit is not None:
        import tempfile

        from fruitstream.bench import format_worker_memory_benchmark, worker_memory_benchmark

        with tempfile.TemporaryDirectory() as tmp:
            result = worker_memory_benchmark(files[: args.max_files], args.near_limit, Path(tmp))
        print(json.dumps(result, indent=2) if args.json else format_worker_memory_benchmark(result))
        return EXIT_OK
    if args.pipeline:
        import tempfile

        from fruitstream.bench import format_pipeline_benchmark, pipeline_benchmark

        with tempfile.TemporaryDirectory() as tmp:
            result = pipeline_benchmark(files, args.pipeline, args.memory_images, Path(tmp))
        print(json.dumps(result, indent=2) if args.json else format_pipeline_benchmark(result))
        return EXIT_OK
    files = files[: args.max_files]
    result = classifier_benchmark(bundle, files, repeats=args.repeats, threads=settings.threads)
    print(json.dumps(result, indent=2) if args.json else format_classifier_benchmark(result))
    return EXIT_OK


# --- pipeline -------------------------------------------------------------------------------


def _uploads(paths: Sequence[str]) -> tuple[list[Any], list[tuple[Path, str]]]:
    """The files to submit, read only when their turn comes, and the paths left out."""
    from fruitstream.dataset import expand_paths
    from fruitstream.pipeline import Upload

    skipped: list[tuple[Path, str]] = []
    uploads = [Upload(p.name, p) for p in expand_paths((Path(p) for p in paths), skipped)]
    return uploads, skipped


def cmd_submit(args: argparse.Namespace) -> int:
    service = _service()
    uploads, skipped = _uploads(args.paths)
    _report_skipped(skipped)
    if not uploads:
        print("fruitstream: error: no files to submit", file=sys.stderr)
        return EXIT_USAGE
    report = service.submit(uploads, name=args.name or "")
    print(report.session_id)
    for name, reason in {**report.rejected, **report.not_sent}.items():
        print(f"{clean(name)}: {clean(reason)}", file=sys.stderr)
    failed = EXIT_SOME_FAILED if report.rejected or report.not_sent else EXIT_OK
    here = not args.queue_only and service.can_consume_here()
    done = lambda: service.progress(report.session_id).complete  # noqa: E731
    if here and not service.consumer_alive():
        print("no worker is running: classifying the photos in this process", file=sys.stderr)
        service.ensure_consumer(until=done)
    elif not args.wait:
        return failed

    def no_consumer() -> None:
        what = "fruitstream spark-job" if not service.can_consume_here() else "fruitstream worker"
        print(f"no consumer is running: start `{what}`; waiting", file=sys.stderr)

    def on_progress(progress: Any) -> None:
        bar.n = progress.done
        bar.refresh()

    try:
        with _progress(report.submitted, "classifying") as bar:
            progress = service.wait(
                report.session_id,
                timeout=args.timeout,
                on_progress=on_progress,
                on_no_consumer=no_consumer if args.queue_only or not here else None,
                take_over=here,
            )
    finally:
        service.stop()
    if not progress.complete:
        print(
            f"timed out after {args.timeout:g} s: {progress.done} of {progress.submitted} done;"
            f" the session goes on (fruitstream results {report.session_id})",
            file=sys.stderr,
        )
        return EXIT_SOME_FAILED
    if args.wait:
        _print_summary(service.results(report.session_id))
    return failed


def _print_summary(rows: Sequence[Any]) -> None:
    from fruitstream.stats import session_stats

    stats = session_stats(rows)
    print(
        f"{stats.total} photos: {stats.ok} classified, {stats.unknown} not a known fruit, "
        f"{stats.errors} errors"
    )
    for label, count in stats.per_label.items():
        print(f"  {label:<12} {count}")


def cmd_repair(args: argparse.Namespace) -> int:
    settled = _service().repair(older_than=args.older_than)
    for session_id, n in settled.items():
        print(f"{session_id}: {n} photos settled")
    if not settled:
        print("nothing to repair")
    return EXIT_OK


def cmd_worker(args: argparse.Namespace) -> int:
    import logging
    import signal
    import threading

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    service = _service()
    stop = threading.Event()

    def _stop(signum: int, _frame: Any) -> None:
        print(f"worker: signal {signum}, finishing the batch in hand", file=sys.stderr)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    stats = service.run_worker(
        stop, started=lambda name: print(f"worker {name} running; Ctrl-C to stop", file=sys.stderr)
    )
    print(f"worker stopped: {stats.processed} photos, {stats.errors} errors", file=sys.stderr)
    return EXIT_OK


def cmd_results(args: argparse.Namespace) -> int:
    from fruitstream.stats import csv_bytes

    rows = _service().results(args.session)
    if args.json:
        print(json.dumps([r.to_dict() for r in rows], indent=2))
    elif args.csv:
        Path(args.csv).write_bytes(csv_bytes(rows))
        print(f"{len(rows)} rows written to {args.csv}")
    else:
        for r in rows:
            if r.status == "error":
                print(f"{clean(r.filename)}: error: {clean(r.error)}")
            else:
                note = "" if r.known else " (not one of the known fruits)"
                print(f"{clean(r.filename)}: {r.label} {r.confidence * 100:.1f}%{note}")
        _print_summary(rows)
    return EXIT_OK


def cmd_sessions(args: argparse.Namespace) -> int:
    for summary in _service().sessions(limit=args.limit):
        s, p = summary.session, summary.progress
        print(
            f"{s.session_id}  {s.created_at:%Y-%m-%d %H:%M:%S}  {p.done}/{s.submitted} done"
            f"  {p.errors} errors  {clean(s.name)}"
        )
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    ready, checks = _service().ready()
    for h in checks:
        print(f"{'ok  ' if h.ok else 'DOWN'}  {h.name:<18} {h.detail}")
    return EXIT_OK if ready else EXIT_SOME_FAILED


# --- spark ------------------------------------------------------------------------------------


def cmd_spark_job(args: argparse.Namespace) -> int:
    import logging

    from fruitstream.spark_job import run

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    run(_settings(), stop_after_idle=args.stop_after_idle)
    return EXIT_OK


# --- ui ---------------------------------------------------------------------------------------


def cmd_ui(args: argparse.Namespace) -> int:
    import importlib.util
    import os

    if importlib.util.find_spec("streamlit") is None:
        from fruitstream.errors import MissingDependencyError

        raise MissingDependencyError("streamlit", "ui")
    settings = _settings()
    app = Path(__file__).resolve().parent / "ui" / "app.py"
    command = [
        sys.executable, "-m", "streamlit", "run", str(app),
        "--server.address", args.host, "--server.port", str(args.port),
        "--server.headless", "true", "--server.maxUploadSize", str(settings.max_upload_mb),
        "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
        "--client.toolbarMode", "minimal",
        # A full collection after every rerun walks the model's and pandas' heap while
        # holding the GIL: a hundred milliseconds and more before a photo's answer.
        "--runner.postScriptGC", "false",
    ]  # fmt: skip
    print(f"fruitstream UI at http://{args.host}:{args.port}", flush=True)
    # Become the server: signals sent to this process reach Streamlit, no orphan is left.
    os.execv(sys.executable, command)
    return EXIT_OK  # pragma: no cover - execv does not return


# --- serve ------------------------------------------------------------------------------------


LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def cmd_serve(args: argparse.Namespace) -> int:
    import importlib.util

    if importlib.util.find_spec("fastapi") is None or importlib.util.find_spec("uvicorn") is None:
        from fruitstream.errors import MissingDependencyError

        raise MissingDependencyError("fastapi and uvicorn", "api")
    import uvicorn

    from fruitstream.api import create_app

    settings = _settings()
    host = args.host
    if not settings.api_token_list and host not in LOOPBACK:
        print(
            f"no FRUITSTREAM_API_TOKENS configured: binding to 127.0.0.1, not {host}",
            file=sys.stderr,
        )
        host = "127.0.0.1"
    auth = "bearer tokens required" if settings.api_token_list else "no authentication"
    print(f"fruitstream API at http://{host}:{args.port} ({auth}); docs at /docs", flush=True)
    uvicorn.run(create_app(), host=host, port=args.port, log_level="warning", access_log=False)
    return EXIT_OK


# --- config -----------------------------------------------------------------------------------


def cmd_config(args: argparse.Namespace) -> int:
    for key, value in _settings().masked().items():
        print(f"FRUITSTREAM_{key.upper()}={'' if value is None else value}")
    return EXIT_OK


# --- parser -----------------------------------------------------------------------------------


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
    p.set_defaults(func=cmd_classify)

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
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("train", help="fine-tune the classifier (needs the 'train' extra)")
    from fruitstream.training.options import add_train_arguments

    add_train_arguments(p)
    p.set_defaults(func=cmd_train)

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
        "--near-limit",
        type=int,
        metavar="N",
        help="worker peak memory on the given photos mixed with N images near the pixel limit",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench)

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
    p.set_defaults(func=cmd_submit)

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
    p.set_defaults(func=cmd_repair)

    p = sub.add_parser("worker", help="classify queued photos until stopped (embedded queue)")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("results", help="the results of one session")
    p.add_argument("session")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--json", action="store_true")
    group.add_argument("--csv", metavar="FILE")
    p.set_defaults(func=cmd_results)

    p = sub.add_parser("sessions", help="past sessions, newest first")
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(func=cmd_sessions)

    p = sub.add_parser("status", help="each backend: reachable or not, queue depth, workers")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("spark-job", help="run the Spark Structured Streaming job (Kafka)")
    p.add_argument(
        "--stop-after-idle", type=float, metavar="S", help="stop after S seconds without input"
    )
    p.set_defaults(func=cmd_spark_job)

    p = sub.add_parser("ui", help="start the Streamlit app")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8501)
    p.set_defaults(func=cmd_ui)

    p = sub.add_parser("serve", help="start the HTTP API (OpenAPI docs at /docs)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("config", help="print the effective configuration, secrets masked")
    p.set_defaults(func=cmd_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except FruitstreamError as exc:
        print(f"fruitstream: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("fruitstream: interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
