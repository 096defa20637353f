"""Redeploy the lab from an experiment: the same ``ansible-playbook deploy.yml`` a user runs,
with the run's inventory and extra vars (variant switches, profiling). Experiments change the
lab only through the deployment, so what they measure is what a user deploys."""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from experiments.constants import ANSIBLE_DIR
from experiments.lab import topology as topology_mod
from experiments.lab.session import RunOptions, Session
from experiments.lab.verify import verify
from experiments.results import iso


class DeployError(RuntimeError):
    pass


def redeploy(options: RunOptions, extra_vars: dict[str, Any] | None = None, *,
             log: Path | None = None, timeout_s: float = 1200) -> dict[str, Any]:
    """Run deploy.yml (waits on every health check); the output goes to ``log`` when given.
    Returns a record for the manifest; raises DeployError naming the vars and the log."""
    cmd = [options.ansible_playbook, "deploy.yml"]
    if options.inventory:
        cmd += ["-i", options.inventory]
    if extra_vars:
        cmd += ["-e", json.dumps(extra_vars, sort_keys=True)]
    started = time.time()
    done = subprocess.run(cmd, cwd=ANSIBLE_DIR, capture_output=True, text=True,
                          timeout=timeout_s)
    output = f"$ {' '.join(cmd)}\n\n{done.stdout}{done.stderr}"
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(output)
    if done.returncode != 0:
        where = f"see {log}" if log is not None else output[-3000:]
        raise DeployError(f"ansible-playbook deploy.yml failed (exit {done.returncode}) with "
                          f"{json.dumps(extra_vars or {})}; {where}")
    return {"extra_vars": extra_vars or {}, "command": cmd, "started_at": iso(started),
            "seconds": round(time.time() - started, 1), "output": output}


def switch(lab: Session, options: RunOptions, extra_vars: dict[str, Any], *, log: Path,
           what: str, timeout_s: float = 1200) -> dict[str, Any]:
    """Deploy a build inside a running session: redeploy with its extra vars, reload the
    topology the deploy wrote, verify that every service answers. Returns the record for the
    manifest (the deploy's, the checks, the log's path; the output stays in the log); raises
    DeployError or VerifyError."""
    lab.progress.say(f"deploying {what} ({json.dumps(extra_vars) or 'default'})")
    record = redeploy(options, extra_vars, log=log, timeout_s=timeout_s)
    del record["output"]
    lab.topology = topology_mod.load()
    record["verify"] = [asdict(c) for c in verify(lab.topology)]
    record["log"] = lab.run.rel(log)
    return record
