"""python -m hardware report|sample: one function per subcommand.

Exit codes: 0 done, 1 runtime failure (I/O error), 2 usage error (bad arguments, or an output that
already holds data). A bad value is one line on stderr, never a traceback, so the Ansible monitor
role shows the actual mistake.
"""

from __future__ import annotations

import argparse
import math
import sys
import threading
from pathlib import Path

from hardware import report, sampler

PROG = "python -m hardware"


class BadValue(Exception):
    """Raised by argument converters. Not an ArgumentTypeError on purpose: argparse would print
    its usage block; we want exactly one line naming the option and the value."""


def _positive_seconds(option: str):
    def convert(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise BadValue(f"{option}: {text!r} is not a number of seconds") from None
        if not math.isfinite(value) or value <= 0:
            raise BadValue(f"{option}: {text!r} must be a positive number of seconds")
        return value

    return convert


def _non_empty(option: str):
    def convert(text: str) -> str:
        if not text.strip():
            raise BadValue(f"{option}: {text!r} must not be empty")
        return text

    return convert


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Machine facts and resource sampling for scoring-lab."
    )
    sub = parser.add_subparsers(dest="command", metavar="{report,sample}")

    rep = sub.add_parser("report", help="write lshw.json/html, system.json and system.md to DIR")
    rep.add_argument(
        "--out",
        required=True,
        type=_non_empty("--out"),
        metavar="DIR",
        help="output folder; created, and refused if it exists and is not empty",
    )
    rep.add_argument(
        "--run-dir",
        type=_non_empty("--run-dir"),
        metavar="RUN_DIR",
        help="list only lab processes whose SCORING_LAB_RUN_DIR is RUN_DIR",
    )
    rep.set_defaults(func=cmd_report)

    smp = sub.add_parser("sample", help="append one JSON line of resource usage per interval")
    smp.add_argument(
        "--out",
        required=True,
        type=_non_empty("--out"),
        metavar="FILE.jsonl",
        help="output file; refused if it exists and is not empty",
    )
    smp.add_argument(
        "--interval",
        type=_positive_seconds("--interval"),
        default=1.0,
        metavar="S",
        help="seconds between samples (default 1.0)",
    )
    smp.add_argument(
        "--duration",
        type=_positive_seconds("--duration"),
        default=None,
        metavar="S",
        help="stop after S seconds (default: until SIGTERM/SIGINT)",
    )
    smp.add_argument(
        "--run-dir",
        type=_non_empty("--run-dir"),
        metavar="RUN_DIR",
        help="sample only lab processes whose SCORING_LAB_RUN_DIR is RUN_DIR",
    )
    smp.set_defaults(func=cmd_sample)
    return parser


def _fail(message: str, code: int) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return code


def cmd_report(args: argparse.Namespace) -> int:
    out = Path(args.out)
    try:
        doc = report.write_report(out, run_dir=args.run_dir)
    except report.OutputExists as exc:
        return _fail(str(exc), 2)
    except OSError as exc:
        return _fail(f"cannot write report to {out}: {exc}", 1)
    n_procs = len(doc.get("lab_processes") or [])
    print(
        f"wrote {out}/ (lshw: {doc['lshw']}, {n_procs} lab processes, "
        f"{len(doc['warnings'])} warnings)",
        file=sys.stderr,
    )
    for warning in doc["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.is_dir():
        return _fail(f"{out} is a directory; --out takes a file", 2)
    if out.exists() and out.stat().st_size > 0:
        # Raw data is immutable: a second sampler must not mix its counters into this file.
        return _fail(f"{out} is not empty; refusing to append to an existing sample file", 2)
    # Handlers go in before the (possibly slow) first sample so an early SIGTERM is clean too.
    stop = threading.Event()
    sampler.install_stop_handlers(stop)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "a", encoding="utf-8") as f:
            lines = sampler.run(
                f, args.interval, run_dir=args.run_dir, duration=args.duration, stop=stop
            )
    except OSError as exc:
        return _fail(f"cannot write samples to {out}: {exc}", 1)
    print(f"wrote {lines} samples to {out}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        parser.print_usage(sys.stderr)
        return 2
    try:
        args = parser.parse_args(argv)  # exits 2 with usage on unknown or missing arguments
    except BadValue as exc:
        return _fail(str(exc), 2)
    if args.command is None:
        parser.print_usage(sys.stderr)
        return 2
    return args.func(args)
