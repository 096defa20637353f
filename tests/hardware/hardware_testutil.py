"""Helpers for the hardware tests: labelled child processes and the CLI as a subprocess."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SLEEP = "import time; time.sleep(30)"
BUSY = "import time\nend = time.time() + 30\nwhile time.time() < end: pass"


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without lab labels (the suite itself may run under one)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCORING_LAB_")}
    env.update(extra)
    return env


@contextlib.contextmanager
def lab_child(
    code: str, service: str, run_dir: Path, cpus: set[int] | None = None, **popen_kwargs
) -> Iterator[subprocess.Popen]:
    """A python child labelled as a lab service of run_dir; always killed on exit."""
    env = clean_env(SCORING_LAB_SERVICE=service, SCORING_LAB_RUN_DIR=str(run_dir))
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, **popen_kwargs)
    try:
        if cpus is not None:
            os.sched_setaffinity(proc.pid, cpus)
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=10)


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60):
    return subprocess.run(
        [sys.executable, "-m", "hardware", *args],
        cwd=ROOT,
        env=env if env is not None else clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def popen_cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "hardware", *args],
        cwd=ROOT,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
