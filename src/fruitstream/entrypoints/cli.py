"""Command line: parse arguments, call the services, turn domain errors into exit codes."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Never

if TYPE_CHECKING:  # loaded by the commands that need them, so that --help stays instant
    from tqdm import tqdm

    from fruitstream.config import Settings
    from fruitstream.core.classifier import Classifier
    from fruitstream.domain import Progress
    from fruitstream.pipeline import Upload
    from fruitstream.service import FruitService

from fruitstream.domain import OPERATOR
from fruitstream.entrypoints.cli_output import (
    adapt_lines,
    clean,
    config_lines,
    describe,
    health_lines,
    label_line,
    model_lines,
    print_summary,
    report_skipped,
    result_line,
)
from fruitstream.entrypoints.cli_parser import build_parser
from fruitstream.errors import FruitstreamError

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_USAGE = 2


def _settings() -> Settings:
    from fruitstream.config import load_settings

    return load_settings()


def _classifier(args: argparse.Namespace) -> Classifier:
    from fruitstream.bootstrap import build_classifier

    return build_classifier(
        _settings(),
        model_dir=getattr(args, "model", None),
        precision=getattr(args, "precision", None),
    )


def _service(args: argparse.Namespace | None = None) -> FruitService:
    """The application service; ``--model`` / ``--precision`` choose its classifier."""
    from fruitstream.bootstrap import build_service
    from fruitstream.service import FruitService

    service = build_service(_settings())
    if args is not None and (getattr(args, "model", None) or getattr(args, "precision", None)):
        service = FruitService(service.settings, service.backends, lambda: _classifier(args))
    return service


def _progress(total: int, desc: str) -> tqdm[Never]:
    """A progress bar on a terminal for long runs, nothing otherwise."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=total < 10 or not sys.stderr.isatty())


# --- classify --------------------------------------------------------------------------------


def cmd_classify(args: argparse.Namespace) -> int:
    service = _service(args)
    results = []
    skipped: list[tuple[Path, str]] = []
    with _progress(0, "classifying") as bar:
        paths = [Path(p) for p in args.paths]
        for result in service.classify_files(paths, top_k=args.top_k, bar=bar, skipped=skipped):
            results.append(result)
            if not args.json:
                bar.write(describe(result), file=sys.stdout)
    report_skipped(skipped)
    if args.json:
        json.dump([r.to_dict() for r in results], sys.stdout, indent=2)
        sys.stdout.write("\n")
    if not results:
        print("no files to classify", file=sys.stderr)
        return EXIT_SOME_FAILED
    return EXIT_SOME_FAILED if any(r.error for r in results) else EXIT_OK


# --- evaluate ---------------------------------------------------------------------------------


def cmd_evaluate(args: argparse.Namespace) -> int:
    from fruitstream.core.evaluation import evaluate, format_report, gate_failures

    clf = _classifier(args)
    with _progress(0, "evaluating") as bar:

        def advance(n: int) -> None:
            bar.update(n)

        report = evaluate(
            clf,
            Path(args.dir),
            Path(args.not_fruit) if args.not_fruit else None,
            progress=advance,
        )
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print("\n".join(format_report(report)))
    failures = gate_failures(
        report,
        min_accuracy=args.min_accuracy,
        min_rejection=args.min_rejection,
        max_fruit_rejection=args.max_fruit_rejection,
        min_balanced_accuracy=args.min_balanced_accuracy,
        min_class_recall=args.min_class_recall,
    )
    for failure in failures:
        print(f"quality gate failed: {failure}", file=sys.stderr)
    return EXIT_SOME_FAILED if failures else EXIT_OK


def cmd_quality(args: argparse.Namespace) -> int:
    """Every held-out set of ``heldout.HELD_OUT`` that has a gate, evaluated against it; exit 1
    when any of them fails (``make quality``)."""
    from fruitstream.core.evaluation import evaluate, format_report, gate_failures
    from fruitstream.heldout import HELD_OUT

    clf = _classifier(args)
    root = Path(args.data) if args.data else _settings().dataset_dir
    reports: dict[str, object] = {}
    failures: list[str] = []
    for held in HELD_OUT:
        thresholds = held.gate.thresholds()
        if all(v is None for v in thresholds.values()):
            continue
        with _progress(0, f"evaluating {held.folder}") as bar:

            def advance(n: int) -> None:
                bar.update(n)

            negatives = root / held.negatives if held.negatives else None
            report = evaluate(clf, held.path(root), negatives, progress=advance)
        reports[held.folder] = report
        if not args.json:
            print(f"== {held.folder} ==")
            print("\n".join(format_report(report)))
        failures += [f"{held.folder}: {f}" for f in gate_failures(report, **thresholds)]
    if args.json:
        print(json.dumps(reports, indent=2))
    for failure in failures:
        print(f"quality gate failed: {failure}", file=sys.stderr)
    return EXIT_SOME_FAILED if failures else EXIT_OK


def cmd_train(args: argparse.Namespace) -> int:
    from fruitstream.training.cli import run_training

    run_training(args)
    return EXIT_OK


# --- bench ------------------------------------------------------------------------------------


def cmd_bench(args: argparse.Namespace) -> int:
    from fruitstream.bench import BenchRequest, run_bench

    fields = BenchRequest.__dataclass_fields__
    print(
        run_bench(BenchRequest(**{k: v for k, v in vars(args).items() if k in fields}), _settings())
    )
    return EXIT_OK


# --- pipeline -------------------------------------------------------------------------------


def _uploads(paths: Sequence[str]) -> tuple[list[Upload], list[tuple[Path, str]]]:
    """The files to submit, read only when their turn comes, and the paths left out."""
    from fruitstream.dataset import expand_paths
    from fruitstream.pipeline import Upload

    skipped: list[tuple[Path, str]] = []
    uploads = [Upload(p.name, p) for p in expand_paths((Path(p) for p in paths), skipped)]
    return uploads, skipped


def cmd_submit(args: argparse.Namespace) -> int:
    service = _service()
    uploads, skipped = _uploads(args.paths)
    report_skipped(skipped)
    if not uploads:
        print("fruitstream: error: no files to submit", file=sys.stderr)
        return EXIT_USAGE
    # The command line is the machine's operator: its batches are everyone's to see.
    report = service.submit(
        uploads, name=args.name or "", queue_only=args.queue_only, caller=OPERATOR
    )
    print(report.session_id)
    for photo in report.photos:
        if photo.reason is not None:
            print(f"{clean(photo.filename)}: {clean(photo.reason)}", file=sys.stderr)
    failed = EXIT_SOME_FAILED if report.rejected or report.not_sent else EXIT_OK
    if report.classified_here:
        print("no worker is running: classifying the photos in this process", file=sys.stderr)
    elif not args.wait:
        return failed

    def no_worker() -> None:
        what = "fruitstream worker" if service.can_classify_here() else "fruitstream spark-job"
        print(f"no consumer is running: start `{what}`; waiting", file=sys.stderr)

    def on_progress(progress: Progress) -> None:
        bar.n = progress.done
        bar.refresh()

    try:
        with _progress(report.submitted, "classifying") as bar:
            progress = service.wait(
                report.session_id,
                timeout=args.timeout,
                on_progress=on_progress,
                on_no_worker=no_worker,
                queue_only=args.queue_only,
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
        print_summary(service.results(report.session_id, caller=OPERATOR))
    return failed


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

    def _stop(signum: int, _frame: FrameType | None) -> None:
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
            print(result_line(r))
        print_summary(rows)
    return EXIT_OK


def cmd_label(args: argparse.Namespace) -> int:
    made = _service().label(args.label, image_id=args.image_id, source="cli")
    print(label_line(made))
    return EXIT_OK


def cmd_teach(args: argparse.Namespace) -> int:
    report = _service().teach(Path(args.dir))
    report_skipped(report.skipped)
    for label, count in Counter(x.label for x in report.labels).most_common():
        print(f"{clean(label)}: {count} photos")
    return EXIT_SOME_FAILED if report.skipped else EXIT_OK


def cmd_labels(args: argparse.Namespace) -> int:
    found = _service().labels(limit=args.limit)
    if args.json:
        print(json.dumps([x.to_dict() for x in found], indent=2))
    elif args.csv:
        from fruitstream.stats import labels_csv

        Path(args.csv).write_bytes(labels_csv(found))
        print(f"{len(found)} labels written to {args.csv}")
    else:
        for x in found:
            print(label_line(x))
    return EXIT_OK


def cmd_adapt(args: argparse.Namespace) -> int:
    report = _service().adapt(method=args.method, force=args.force)
    if args.json:
        extra = {"active": report.active, "waiting": report.waiting}
        print(json.dumps({**report.version.to_dict(), **extra}, indent=2))
    else:
        print("\n".join(adapt_lines(report)))
    return EXIT_OK if report.active else EXIT_SOME_FAILED


def cmd_models(args: argparse.Namespace) -> int:
    service = _service()
    if args.action == "activate":
        if not args.version:
            print("fruitstream: error: models activate needs a version", file=sys.stderr)
            return EXIT_USAGE
        print(f"live now: {clean(service.activate(args.version))}")
        return EXIT_OK
    if args.action == "rollback":
        print(f"rolled back; live now: {service.rollback()}")
        return EXIT_OK
    versions, live = service.models()
    if args.json:
        print(json.dumps({"live": live, "versions": [v.to_dict() for v in versions]}, indent=2))
    else:
        print("\n".join(model_lines(versions, live)))
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
    print("\n".join(health_lines(checks)))
    return EXIT_OK if ready else EXIT_SOME_FAILED


def cmd_spark_job(args: argparse.Namespace) -> int:
    import logging

    from fruitstream.entrypoints.spark_job import run

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
    from fruitstream.entrypoints.ui.launch import streamlit_command

    command = streamlit_command(_settings(), args.host, args.port)
    print(f"fruitstream UI at http://{args.host}:{args.port}", flush=True)
    # Become the server: signals sent to this process reach Streamlit, no orphan is left.
    os.execv(sys.executable, command)
    return EXIT_OK  # pragma: no cover - execv does not return


# --- serve ------------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    import importlib.util

    if importlib.util.find_spec("fastapi") is None or importlib.util.find_spec("uvicorn") is None:
        from fruitstream.errors import MissingDependencyError

        raise MissingDependencyError("fastapi and uvicorn", "api")
    from fruitstream.entrypoints.api import serve

    serve(_settings(), args.host, args.port)
    return EXIT_OK


def cmd_config(args: argparse.Namespace) -> int:
    from fruitstream.bootstrap import load_bundle, settings_parts
    from fruitstream.entrypoints.api.settings import ApiSettings
    from fruitstream.entrypoints.spark_job import SparkSettings

    settings = _settings()
    parts = [*settings_parts(settings), ApiSettings.of(settings), SparkSettings.of(settings)]
    masked = {k: v for part in parts for k, v in part.masked().items()}
    print("\n".join(config_lines(masked, load_bundle(settings))))
    return EXIT_OK


COMMANDS = {
    "classify": cmd_classify,
    "evaluate": cmd_evaluate,
    "quality": cmd_quality,
    "train": cmd_train,
    "bench": cmd_bench,
    "submit": cmd_submit,
    "repair": cmd_repair,
    "worker": cmd_worker,
    "results": cmd_results,
    "label": cmd_label,
    "teach": cmd_teach,
    "labels": cmd_labels,
    "adapt": cmd_adapt,
    "models": cmd_models,
    "sessions": cmd_sessions,
    "status": cmd_status,
    "spark-job": cmd_spark_job,
    "ui": cmd_ui,
    "serve": cmd_serve,
    "config": cmd_config,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = COMMANDS[args.command](args)
    except FruitstreamError as exc:
        print(f"fruitstream: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("fruitstream: interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
