"""The model server's batch counters around one Locust run, kept beside its raw data.

The model APIs count per worker process (``GET /api/v1/debug/model``: the answering worker's
pid, its device holds and busy seconds, the micro-batcher's batch sizes, the model it runs), so
one GET sees one worker. Before and after the run the endpoint is asked until every worker the
topology expects has answered (each GET a new connection, which the kernel hands to any of
them), at most MAX_POLLS times; the analysis counts only workers seen both times
(experiments/exp7_batching/batches.py) and says when one was missed.

    with model_counters(lab, out_dir, arch, url):   # a Session step hook
        ...the Locust run...
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from experiments.analysis.ceiling import workers_in_effect
from services.describe import DEBUG_MODEL_PATH

COUNTERS_FILE = "model_counters.json"
MAX_POLLS = 40
MAX_FAILING = 3  # polls failing in a row before giving up
TIMEOUT_S = 2.0


def _get(url: str) -> dict[str, Any]:
    request = urllib.request.Request(url, headers={"Connection": "close"})
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
        return json.loads(response.read())


def snapshot(base_url: str, workers: int | None, max_polls: int = MAX_POLLS,
             get=_get) -> dict[str, Any]:
    """Every worker's counters that answered within max_polls GETs (all `workers` of them, or
    as many as answered when the count is unknown), stopping after MAX_FAILING failed GETs in
    a row: {"at", "polls", "workers": {pid: body}, "errors"}."""
    seen: dict[str, dict] = {}
    errors: list[str] = []
    polls = failing = 0
    # a server that does not answer costs at most MAX_FAILING timeouts, not max_polls of them
    while (polls < max_polls and failing < MAX_FAILING
           and (workers is None or len(seen) < workers)):
        polls += 1
        try:
            body = get(base_url + DEBUG_MODEL_PATH)
        except (OSError, ValueError) as exc:
            errors.append(f"{type(exc).__name__}: {exc}"[:200])
            failing += 1
            continue
        failing = 0
        if isinstance(body, dict) and "pid" in body:
            seen[str(body["pid"])] = body
    return {"at": time.time(), "polls": polls, "workers": seen, "errors": errors[:5]}


def model_target(services: dict[str, dict], deploy_vars: dict[str, Any], arch: str,
                 url: str | None) -> tuple[str, str | None, int | None]:
    """(base URL, service name, workers expected) of the model server a run of `arch` loads:
    the run's own target when it is a model server (the model probe), else the one the
    deployed scoring handler calls (a build's scoring_handler_model_urls, else model-<arch>)."""
    urls = deploy_vars.get("scoring_handler_model_urls") or {}
    target = url or urls.get(arch) or (services.get(f"model-{arch}") or {}).get("url")
    if not target:
        raise ValueError(f"no model server known for {arch} (topology: {sorted(services)})")
    target = target.rstrip("/")
    for name, s in services.items():
        if (s.get("url") or "").rstrip("/") == target:
            flavour = name.rsplit("-", 1)[-1]
            if flavour in ("sync", "async"):
                return target, name, workers_in_effect(flavour, len(s.get("cpus") or []),
                                                       s.get("workers"))
            return target, name, s.get("workers")
    return target, None, None


@contextmanager
def model_counters(lab, out_dir: Path, arch: str, url: str | None) -> Iterator[None]:
    """A Session step hook: out_dir/COUNTERS_FILE with the counters before and after the run."""
    target, service, workers = model_target(lab.topology.services, lab.deploy_vars, arch, url)
    record: dict[str, Any] = {"model_url": target, "service": service,
                              "workers_expected": workers, "before": snapshot(target, workers)}
    try:
        yield
    finally:
        record["after"] = snapshot(target, workers)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / COUNTERS_FILE).write_text(json.dumps(record, indent=1, sort_keys=True))
