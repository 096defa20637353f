"""Before anything is timed, every endpoint must answer correctly (TechEmpower's verify step):
health checks, a model prediction per architecture within the configured sleep range, a
scoring request per architecture that found the seeded features and, where the lab runs the job
queue's workers, a job per architecture submitted and polled to done. Otherwise the run stops."""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from experiments.constants import ARCHS
from experiments.lab.topology import Topology
from services import jobs
from services.describe import HEALTH_PATH, predict_path
from services.settings import Arch

PAYLOAD = b"[5.1,3.5,1.4,0.2]"
# The BentoML model server's service name in the topology (ansible role model_bentoml).
BENTOML = "model-bentoml"


class VerifyError(RuntimeError):
    pass


@dataclass(frozen=True)
class Check:
    what: str
    url: str
    ok: bool
    detail: str


def _call(url: str, body: bytes | None, timeout: float) -> tuple[int, object]:
    request = urllib.request.Request(
        url, data=body, method="POST" if body is not None else "GET",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, error.read()[:200]
    except (OSError, ValueError) as error:
        return 0, str(error)


def _prediction(status: int, body: object) -> float | None:
    if status != 200 or not isinstance(body, dict):
        return None
    value = body.get("detail")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def run_checks(topology: Topology, timeout: float = 10.0) -> list[Check]:
    checks = []
    for name in ("model-sync", "model-async", "scoring-sync", "scoring-async"):
        url = topology.url(name) + HEALTH_PATH
        status, body = _call(url, None, timeout)
        checks.append(Check(f"{name} health", url, status == 200 and body == {"status": "OK"},
                            f"HTTP {status} {body!r}"))
    for arch in ARCHS:
        for role in ("model", "scoring"):
            url = topology.url(f"{role}-{arch}") + predict_path(arch)
            status, body = _call(url, PAYLOAD, timeout)
            value = _prediction(status, body)
            # A prediction is a sleep in seconds; the scoring handler's is the mean of two.
            ok = value is not None and 0 < value < 60
            checks.append(Check(f"{role}-{arch} prediction", url, ok, f"HTTP {status} {body!r}"))
    for arch in ARCHS:
        if f"queue-{arch}" in topology.services:  # a lab deployed with the job queue's workers
            checks.append(_job_check(topology.scoring_url(arch), arch, timeout))
    if BENTOML in topology.services:  # deployed only when the inventory enables it
        checks += _bentoml_checks(topology.url(BENTOML), timeout)
    return checks


def _bentoml_checks(base: str, timeout: float) -> list[Check]:
    """The BentoML model server: its health check and a prediction on each architecture's path
    (a scoring handler of either may target it)."""
    status, body = _call(base + HEALTH_PATH, None, timeout)
    checks = [Check(f"{BENTOML} health", base + HEALTH_PATH,
                    status == 200 and body == {"status": "OK"}, f"HTTP {status} {body!r}")]
    for arch in ARCHS:
        url = base + predict_path(arch)
        status, body = _call(url, PAYLOAD, timeout)
        value = _prediction(status, body)
        ok = value is not None and 0 < value < 60
        checks.append(Check(f"{BENTOML} prediction ({arch} path)", url, ok,
                            f"HTTP {status} {body!r}"))
    return checks


def _job_check(base: str, arch: str, timeout: float) -> Check:
    """Submit a job through the scoring handler and poll it (every 0.1 s, within ``timeout``)
    until a worker has done it with a prediction."""
    url = base + jobs.jobs_path(Arch(arch))
    status, body = _call(url, PAYLOAD, timeout)
    if status != 202 or not isinstance(body, dict) or not isinstance(body.get("id"), str):
        return Check(f"queue-{arch} job submitted", url, False, f"HTTP {status} {body!r}")
    url = base + jobs.job_path(Arch(arch), body["id"])
    deadline = time.monotonic() + timeout
    while True:
        status, body = _call(url, None, timeout)
        pending = status == 200 and isinstance(body, dict) and body.get("status") == jobs.PENDING
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    done = isinstance(body, dict) and body.get("status") == jobs.DONE
    ok = done and _prediction(status, body.get("result")) is not None
    return Check(f"queue-{arch} job done", url, ok, f"HTTP {status} {body!r}")


def verify(topology: Topology) -> list[Check]:
    checks = run_checks(topology)
    failed = [c for c in checks if not c.ok]
    if failed:
        lines = "\n".join(f"  - {c.what}: {c.url} -> {c.detail}" for c in failed)
        raise VerifyError(f"the lab does not answer correctly, nothing was measured:\n{lines}")
    return checks
