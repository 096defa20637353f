"""``python -m experiments`` (also installed as ``scoring-lab``): run an experiment against the
deployed lab, or rebuild a run's report and the results index from committed folders."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from experiments import runner
from experiments.collect import CollectError
from experiments.deploy import DeployError
from experiments.experiment1 import ProfilingOff, run_experiment1
from experiments.experiment2 import run_experiment2
from experiments.experiment4 import run_experiment4
from experiments.load.remote import RemoteError
from experiments.profiling.report import write_report as write_report_exp1
from experiments.protocol import CONFIG_DIR, ProtocolError, load_protocol, profiles_of
from experiments.report import write_report
from experiments.report_exp2 import write_report as write_report_exp2
from experiments.report_exp4 import write_report as write_report_exp4
from experiments.results import headline_text, open_run_folder, update_index
from experiments.session import RunOptions
from experiments.topology import REPO_ROOT, TopologyError
from experiments.verify import VerifyError

EXPERIMENTS = {
    "1": CONFIG_DIR / "experiment1.toml",  # profiling (pyinstrument, yappi)
    "2": CONFIG_DIR / "experiment2.toml",  # timeit: N sequential calls
    "3": CONFIG_DIR / "experiment3.toml",  # Locust load tests and breaking points
    "4": CONFIG_DIR / "experiment4.toml",  # the delta decomposition: a ladder of variants
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m experiments", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run an experiment on the deployed lab")
    run.add_argument("experiment", choices=sorted(EXPERIMENTS), help="experiment number")
    run.add_argument("--profile", default=None,
                     help="protocol profile: full (the original's durations), quick, smoke")
    run.add_argument("--arrival", choices=["spread", "bursty"], default=None,
                     help="spread user phases (default) or the original's in-phase bursts")
    run.add_argument("--results-dir", type=Path,
                     default=Path(os.environ.get("RESULTS_DIR") or REPO_ROOT / "results"))
    run.add_argument("--inventory", default=None,
                     help="Ansible inventory (relative to ansible/), for collecting host data")
    report = commands.add_parser("report", help="rebuild report.md and plots of a run folder")
    report.add_argument("folder", type=Path)
    index = commands.add_parser("index", help="rebuild results/README.md from the run folders")
    index.add_argument("results_dir", type=Path, nargs="?", default=REPO_ROOT / "results")
    return parser


def cmd_run(args: argparse.Namespace) -> int:
    config = EXPERIMENTS[args.experiment]
    options = RunOptions(
        results_dir=args.results_dir,
        inventory=args.inventory,
        ansible_playbook=str(Path(sys.executable).with_name("ansible-playbook")),
    )
    try:
        if args.experiment == "3":
            if args.profile is not None and args.profile not in {"full", *profiles_of(config)}:
                print(f"error: --profile {args.profile!r} is not one of "
                      f"{', '.join(sorted({'full', *profiles_of(config)}))}", file=sys.stderr)
                return 2
            protocol = load_protocol(config, args.profile)
            folder = runner.run_experiment3(protocol, options, args.arrival or protocol.arrival)
        else:
            if args.arrival is not None:
                print(f"error: --arrival is for experiment 3; experiment {args.experiment} "
                      "sets its arrival patterns in its config", file=sys.stderr)
                return 2
            run = {"1": run_experiment1, "2": run_experiment2, "4": run_experiment4}
            folder = run[args.experiment](config, args.profile, options=options)
    except (TopologyError, VerifyError, CollectError, DeployError, ProfilingOff,
            RemoteError) as exc:
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
    if not (args.folder / "manifest.json").exists():
        print(f"error: {args.folder} is not a run folder (no manifest.json)", file=sys.stderr)
        return 2
    run = open_run_folder(args.folder)
    writers = {"experiment-1": write_report_exp1, "experiment-2": write_report_exp2,
               "experiment-4": write_report_exp4}
    out = writers.get(run.manifest.get("experiment"), write_report)(run.path)
    print(out["report"] if isinstance(out, dict) else out)
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
        return {"run": cmd_run, "report": cmd_report, "index": cmd_index}[args.command](args)
    except ProtocolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
