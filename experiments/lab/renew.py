"""Renew, between two repeats, the state that decides a load effect: restart the model API
and scoring handler of both architectures, so every pooled keep-alive connection reconnects
and is assigned to a worker afresh (the 12-vs-22 req/s default/sync spread of issue 13).

The restart goes through the deployment a user runs (experiments/lab/deploy.py): deploy.yml
with a run-unique token in both services' environment. supervisord restarts a program whose
configuration changed (`supervisorctl update`), and the apps ignore unknown SCORING_LAB_*
variables (services/settings.py), so the token changes nothing but the processes."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from experiments.lab import topology as topology_mod
from experiments.lab.deploy import redeploy
from experiments.lab.session import RunOptions, Session
from experiments.lab.verify import verify
from experiments.results import iso

RESTART_VAR = "SCORING_LAB_RESTART_TOKEN"
ENV_VARS = ("model_api_env", "scoring_handler_env")


def restart_vars(base: dict[str, Any], token: str) -> dict[str, Any]:
    """`base` deploy vars (a variant's, {} for the default build) plus the restart token in
    both services' environment."""
    out = dict(base)
    for key in ENV_VARS:
        out[key] = {**(base.get(key) or {}), RESTART_VAR: token}
    return out


RESTARTED = ("model API and scoring handler processes of every architecture restarted "
             "(supervisorctl update on a changed environment): every pooled keep-alive "
             "connection reconnects and is assigned to a worker afresh")


def renew(lab: Session, options: RunOptions, repeat: int, base_vars: dict[str, Any],
          log: Path) -> dict[str, Any]:
    """Restart the services before `repeat` by redeploying with a new token, reload the
    topology and verify every endpoint; returns the manifest record (what, when, how long)."""
    lab.progress.say(f"repeat {repeat}: restarting the model APIs and scoring handlers")
    return {**_restart(lab, options, base_vars, f"{lab.run.path.name}-r{repeat}", log),
            "repeat": repeat}


def restart_stuck(lab: Session, why: str) -> dict[str, Any]:
    """Restart the deployment in place (lab.deploy_vars) when a capacity step's recovery wait
    ran out (experiments/lab/recovery.py): the record says why; the log lands beside the
    other deploy logs."""
    if lab.options is None:
        raise RuntimeError("restart_stuck needs the session's RunOptions")
    n = len(list((lab.run.raw / "deploy").glob("stuck-*.log"))) + 1
    lab.progress.say(f"restarting the services: {why}")
    return {**_restart(lab, lab.options, lab.deploy_vars, f"{lab.run.path.name}-stuck{n}",
                       lab.run.raw / "deploy" / f"stuck-{n}.log"), "why": why}


def _restart(lab: Session, options: RunOptions, base_vars: dict[str, Any], token: str,
             log: Path) -> dict[str, Any]:
    extra = restart_vars(base_vars, token)
    lab.progress.say(f"redeploying with {json.dumps(extra)}")
    started = time.time()
    record = redeploy(options, extra, log=log)
    del record["output"]  # kept in the log file
    before = _pids(lab.topology)
    lab.topology = topology_mod.load()
    record.update(
        pids={"before": before, "after": _pids(lab.topology)}, renewed=RESTARTED,
        token=token, at=iso(started), log=lab.run.rel(log),
        verify=[asdict(c) for c in verify(lab.topology)])
    return record


def _pids(topology: topology_mod.Topology) -> dict[str, Any]:
    """The main pid of every model API and scoring handler (what a restart changes)."""
    return {name: s.get("pids") for name, s in topology.services.items()
            if name.startswith(("model-", "scoring-"))}
