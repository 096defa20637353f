"""``python -m experiments`` (also installed as ``scoring-lab``): list the experiments and their
profiles, run one against the deployed lab, or rebuild a run's report and the results index from
committed folders. Every experiment comes from one table (experiments/registry.py)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from experiments.compare import AGREE_TOLERANCE, CompareError, compare_runs, render
from experiments.config import ConfigError
from experiments.constants import ARRIVALS, REPO_ROOT
from experiments.lab.collect import CollectError
from experiments.lab.deploy import DeployError
from experiments.lab.session import RunOptions
from experiments.lab.topology import TopologyError
from experiments.lab.verify import VerifyError
from experiments.load.remote import RemoteError
from experiments.registry import BY_NAME, EXPERIMENTS
from experiments.results import open_run_folder
from experiments.results_index import headline_text, run_folders, update_index
from services.settings import SettingsError

# A lab that is not there or not right: one line, no traceback.
LAB_ERRORS = (TopologyError, VerifyError, CollectError, DeployError, RemoteError)


def _experiment_number(value: str) -> str:
    # checked here, not with `choices`: Python 3.11's argparse refuses an empty `nargs="*"`
    # list against choices
    if value not in EXPERIMENTS:
        raise argparse.ArgumentTypeError(
            f"no experiment {value!r} (have: {', '.join(sorted(EXPERIMENTS, key=int))})")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m experiments", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser(
        "list", help="each experiment, its profiles (default marked) and their planned load time")
    listing.add_argument("experiments", nargs="*", type=_experiment_number,
                         metavar="experiment", help="only these (default: all)")
    run = commands.add_parser("run", help="run an experiment on the deployed lab")
    run.add_argument("experiment", choices=sorted(EXPERIMENTS),
                     help="; ".join(f"{n}: {e.summary}" for n, e in sorted(EXPERIMENTS.items())))
    run.add_argument("--profile", default=None,
                     help="protocol profile (default: the experiment's default_profile; "
                          "`list` shows every experiment's profiles)")
    run.add_argument("--arrival", choices=ARRIVALS, default=None,
                     help="spread user phases (default) or the original's in-phase bursts "
                          "(experiments whose config has an arrival)")
    run.add_argument("--results-dir", type=Path,
                     default=Path(os.environ.get("RESULTS_DIR") or REPO_ROOT / "results"))
    run.add_argument("--supersedes", action="append", default=[], metavar="RUN",
                     help="a committed run folder (its name) this run re-records: the results "
                          "index marks it superseded by this one (repeatable)")
    run.add_argument("--inventory", default=None,
                     help="Ansible inventory (relative to ansible/), for collecting host data")
    report = commands.add_parser(
        "report", help="rebuild report.md, report.json, plots and the manifest's headline of a "
                       "run folder (or, with --all, of every run folder) and the results index")
    report.add_argument("folder", type=Path, nargs="?",
                        help="a run folder; with --all, the results directory (default results/)")
    report.add_argument("--all", action="store_true",
                        help="rebuild every run folder of the results directory, then its index")
    compare = commands.add_parser(
        "compare", help="compare two run folders figure by figure (ratio, significance, and "
                        "whether the same build agrees)")
    compare.add_argument("a", type=Path, help="run folder A (the baseline)")
    compare.add_argument("b", type=Path, help="run folder B")
    compare.add_argument("--json", action="store_true", help="print the comparison as JSON")
    compare.add_argument("--across-protocols", action="store_true",
                         help="compare runs whose protocols differ (refused by default), each "
                              "difference printed as a warning")
    compare.add_argument("--tolerance", type=float, default=AGREE_TOLERANCE,
                         help="two runs agree on a figure when B/A is within 1 +- this "
                              f"(default {AGREE_TOLERANCE:g}) or their repeats' ranges overlap")
    index = commands.add_parser("index", help="rebuild results/README.md from the run folders")
    index.add_argument("results_dir", type=Path, nargs="?", default=REPO_ROOT / "results")
    return parser


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 120 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def cmd_list(args: argparse.Namespace) -> int:
    for number in args.experiments or sorted(EXPERIMENTS, key=int):
        e = EXPERIMENTS[number]
        default = e.default_profile()
        print(f"{number}  {e.name}: {e.summary}")
        for profile in e.profiles():
            mark = "(default)" if profile == default else ""
            print(f"     {profile:<10} {mark:<9}  {_duration(e.planned_s(profile)):>8}")
    print("\nPlanned load time: what the run plans to spend sending load at most (each capacity "
          "search at its\ntime budget, or its step and hold budget; its progress line counts "
          "down from it).\nDeploys, verification, Locust start-up and recovery waits come on top. "
          "Choose a profile\nwith `make experiment-N PROFILE=...` or `python -m experiments run "
          "N --profile ...`.")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    for name in args.supersedes:
        if not (args.results_dir / name / "manifest.json").is_file():
            print(f"error: --supersedes {name}: no run folder of that name in "
                  f"{args.results_dir}", file=sys.stderr)
            return 2
    options = RunOptions(
        results_dir=args.results_dir,
        inventory=args.inventory,
        ansible_playbook=str(Path(sys.executable).with_name("ansible-playbook")),
        supersedes=tuple(args.supersedes),
    )
    try:
        folder = EXPERIMENTS[args.experiment].execute(args.profile, options, args.arrival)
    except LAB_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: the result folder is kept and marked incomplete", file=sys.stderr)
        return 130
    manifest = json.loads((folder / "manifest.json").read_text())
    print(f"\nresult folder: {folder}")
    print(f"report:        {folder / 'report.md'}")
    validity = manifest["validity"]
    if not validity["valid"]:
        print("\n*** THIS RUN IS INVALID: its numbers are not the system's ***")
        for reason in validity["reasons"]:
            print(f"  - {reason}")
    print("\n" + headline_text(manifest.get("headline") or {}))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    if args.all:
        return _report_all(args.folder or REPO_ROOT / "results")
    if args.folder is None:
        print("error: report needs a run folder (or --all)", file=sys.stderr)
        return 2
    if not (args.folder / "manifest.json").exists():
        print(f"error: {args.folder} is not a run folder (no manifest.json)", file=sys.stderr)
        return 2
    name = open_run_folder(args.folder).manifest.get("experiment")
    if name not in BY_NAME:
        print(f"error: {args.folder}: experiment {name!r} is not one of "
              f"{', '.join(sorted(BY_NAME))}", file=sys.stderr)
        return 2
    print(BY_NAME[name].rebuild(args.folder).markdown)
    if (args.folder.parent / "README.md").exists():  # the results index the folder is in
        update_index(args.folder.parent)
    return 0


def _report_all(results_dir: Path) -> int:
    """Every run folder's report rebuilt from its raw data by its experiment's code, one line
    each; then the index once, from the manifests' new headlines. A folder that fails is
    named and the others still rebuild (exit 1)."""
    if not results_dir.is_dir():
        print(f"error: {results_dir} is not a directory", file=sys.stderr)
        return 2
    failed = []
    for folder in run_folders(results_dir):
        name = open_run_folder(folder).manifest.get("experiment")
        if name not in BY_NAME:
            failed.append(folder.name)
            print(f"{folder.name}: experiment {name!r} is not one of "
                  f"{', '.join(sorted(BY_NAME))}", file=sys.stderr)
            continue
        try:
            BY_NAME[name].rebuild(folder)
        except Exception as exc:  # noqa: BLE001 - one folder's failure must not stop the rest
            failed.append(folder.name)
            print(f"{folder.name}: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        headline = open_run_folder(folder).manifest.get("headline") or {}
        print(f"{folder.name}: {headline_text(headline)}")
    print(f"index: {update_index(results_dir)}")
    if failed:
        print(f"error: {len(failed)} folder(s) not rebuilt: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    try:
        if not 0 <= args.tolerance < 1:
            raise CompareError(f"--tolerance {args.tolerance:g}: expected a fraction in [0, 1)")
        result = compare_runs(args.a, args.b, across_protocols=args.across_protocols,
                              tolerance=args.tolerance)
    except CompareError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result.to_dict(), indent=2) if args.json else render(result))
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    if not args.results_dir.is_dir():
        print(f"error: {args.results_dir} is not a directory", file=sys.stderr)
        return 2
    print(update_index(args.results_dir))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return {"list": cmd_list, "run": cmd_run, "report": cmd_report, "compare": cmd_compare,
                "index": cmd_index}[args.command](args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SettingsError as exc:  # a recorded variant env the services would refuse
        print(f"error: {exc}", file=sys.stderr)
        return 2
