"""``python -m tests.fuzz --cases N --out DIR``: the fuzz suite as a command (``make fuzz``).

Starts Redis and the four services, sends N generated cases to each role (each case to the
sync and the async service), prints the status histogram per endpoint and writes it, with
every failing case, to DIR/fuzz-<seed>.json. Exit 1 when any case failed or a worker died
(other than by the documented, uncontained chunked-trailer defect of meinheld).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

from tests.fuzz.run import JOB_ROLE, ROLES, report, run_role, stacks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__)
    parser.add_argument("--cases", type=int, default=10_000, help="cases per role (default 10000)")
    parser.add_argument("--seed", type=int, default=1, help="generator seed (default 1)")
    parser.add_argument("--out", type=Path, default=Path("build/fuzz"),
                        help="where the histogram and failures go (default build/fuzz)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--role", choices=[*ROLES, JOB_ROLE], action="append",
                        help="only this role (repeatable; default all: the model and scoring "
                        "endpoints, and the scoring services' job endpoints)")
    args = parser.parse_args(argv)
    if args.cases < 1:
        parser.error(f"--cases must be >= 1, got {args.cases}")
    args.out.mkdir(parents=True, exist_ok=True)
    # A SIGTERM (make interrupted, a CI timeout) unwinds like Ctrl-C: the servers it started
    # run in their own sessions and are stopped only by stacks()'s cleanup.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()
    roles = args.role or [*ROLES, JOB_ROLE]
    with stacks(args.out / "logs", queue_workers=JOB_ROLE in roles) as stack:
        results = [run_role(stack, role, args.seed, args.cases, args.concurrency)
                   for role in roles]
    text = report(results)
    print(text)
    print(f"({time.monotonic() - started:.0f} s)")
    out = args.out / f"fuzz-{args.seed}.json"
    out.write_text(json.dumps({
        "seed": args.seed, "cases_per_role": args.cases,
        "histogram": {f"{r.role}-{arch}": dict(r.histogram[arch]) for r in results
                      for arch in r.histogram},
        "by_kind": {f"{r.role}:{kind}": dict(c) for r in results for kind, c in r.by_kind.items()},
        "failures_by_kind": {r.role: dict(r.failures_by_kind) for r in results},
        "failures_by_cause": {r.role: dict(r.failures_by_cause) for r in results},
        "failures": {r.role: r.failures for r in results},
        "workers_gone": {"-".join(k): sorted(v) for r in results for k, v in r.died.items()},
        "killed_by_documented_trailer_defect": {
            f"{r.role}:{'-'.join(k)}": len(v) for r in results
            for k, v in r.killed_by_documented.items()},
    }, indent=1))
    print(f"written: {out}")
    failed = any(r.failures or any(r.died.values()) for r in results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
