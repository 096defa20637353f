"""Numbers of one Locust run (a scenario x architecture directory), from its exact
per-request timings, and of resource samples cut to the run's window.

The measured window drops the first `warmup_s` seconds and the last, partial second.
Requests/s there is successful completions per second (the mean of the per-second
counts); latency percentiles are over the successful requests completed in the window;
failures are counted over the same window.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from experiments.analysis.history import PerSecond, Requests, load_run_dir
from experiments.analysis.stats import mean_ci, percentiles, stability_warning
from hardware import tcplog
from hardware.summary import load_samples, service_usage


@dataclass(frozen=True)
class RunNumbers:
    scenario: str
    arch: str
    started_at: float | None
    ended_at: float | None
    t0: float
    window: tuple[float, float]  # unix [start, end) of the measured window
    seconds: int
    requests: int  # completed in the window, ok or not
    failures: int
    rps: float  # successful completions per second
    rps_ci_low: float
    rps_ci_high: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    total_requests: int  # the whole run, warm-up included
    total_failures: int
    max_users: int
    stability: str | None
    valid: bool
    reasons: tuple[str, ...]
    # Open-model runs: the percentiles above are response times (from each request's scheduled
    # send, queueing in the generator included); these are the service times (from the send).
    open_model: bool = False
    service_p50_ms: float | None = None
    service_p99_ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["reasons"] = list(self.reasons)
        d["window"] = list(self.window)
        if not self.open_model:  # closed-loop runs keep the fields they always had
            for key in ("open_model", "service_p50_ms", "service_p99_ms"):
                d.pop(key)
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}


@dataclass(frozen=True)
class RunData:
    numbers: RunNumbers
    requests: Requests
    series: PerSecond
    window_rt_ms: np.ndarray  # successful requests in the window
    window_rps: np.ndarray  # per-second successful completions in the window


def _scenario_doc(locust_dir: Path) -> dict[str, Any]:
    p = locust_dir / "scenario.json"
    return json.loads(p.read_text()) if p.exists() else {}


def _result_doc(locust_dir: Path) -> dict[str, Any]:
    p = locust_dir / "result.json"
    return json.loads(p.read_text()) if p.exists() else {}


def analyse_run_dir(
    locust_dir: str | Path,
    *,
    warmup_s: float = 5.0,
    lag_s: float = 1.0,
    scenario: str | None = None,
    arch: str | None = None,
) -> RunData:
    """Numbers of one Locust output directory (see the module doc for the definitions)."""
    locust_dir = Path(locust_dir)
    sdoc, rdoc = _scenario_doc(locust_dir), _result_doc(locust_dir)
    pacing = float(sdoc.get("pacing_s") or 1.0)
    requests, _, series = load_run_dir(locust_dir, pacing_s=pacing, lag_s=lag_s)
    n = len(series)
    skip = min(int(math.ceil(warmup_s)), max(0, n - 1)) if n else 0
    w0, w1 = series.t0 + skip, series.t0 + n
    in_win = requests.completed_between(w0, w1)
    ok_rt = in_win.response_ms[in_win.ok]  # the service time for closed-loop requests
    service = percentiles(in_win.service_ms[in_win.ok], (50, 99))
    per_sec = series.achieved_rps[skip:]
    ci = mean_ci(per_sec)
    pct = percentiles(ok_rt, (50, 95, 99))
    numbers = RunNumbers(
        scenario=scenario or sdoc.get("scenario", {}).get("name") or locust_dir.parent.name,
        arch=arch or rdoc.get("arch") or locust_dir.name,
        started_at=rdoc.get("started_at"),
        ended_at=rdoc.get("ended_at"),
        t0=series.t0,
        window=(w0, w1),
        seconds=n - skip,
        requests=len(in_win),
        failures=in_win.failures,
        rps=float(per_sec.mean()) if len(per_sec) else math.nan,
        rps_ci_low=ci.low,
        rps_ci_high=ci.high,
        p50_ms=pct["p50"],
        p95_ms=pct["p95"],
        p99_ms=pct["p99"],
        mean_ms=float(ok_rt.mean()) if len(ok_rt) else math.nan,
        total_requests=len(requests),
        total_failures=requests.failures,
        max_users=int(series.users.max()) if n else 0,
        stability=stability_warning(per_sec),
        valid=bool(rdoc.get("valid", False)),
        reasons=tuple(
            rdoc.get("reasons", []) if rdoc else ["no result.json: the Locust run did not finish"]
        ),
        open_model=requests.open_model,
        service_p50_ms=service["p50"],
        service_p99_ms=service["p99"],
    )
    return RunData(numbers, requests, series, ok_rt, per_sec)


# ----------------------------------------------------------------------- resources


def load_resource_samples(resources_dir: str | Path) -> dict[str, list[dict]]:
    """{source: samples} for every raw/resources/<source>.csv (or .jsonl, as runs before the
    CSV form stored them); source = file stem, e.g. a host. A <source>.tcp.jsonl is no source:
    load_samples puts its connection records back into <source>.csv's samples."""
    resources_dir = Path(resources_dir)
    files = [p for p in sorted(resources_dir.iterdir())
             if p.suffix in (".csv", ".jsonl") and not p.name.endswith(tcplog.SUFFIX)] \
        if resources_dir.is_dir() else []
    return {p.stem: load_samples(p) for p in files}


def resource_usage(sources: dict[str, list[dict]], start: float, end: float) -> dict[str, dict]:
    """Per service (prefixed "<source>/" when several sample files exist): cpu_total_s,
    cpu_user_s, cpu_system_s, rss_peak_bytes in [start, end]."""
    out = {}
    for source, samples in sources.items():
        for name, u in service_usage(samples, start, end).items():
            out[f"{source}/{name}" if len(sources) > 1 else name] = u
    return out


def cpu_series(sources: dict[str, list[dict]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per service: (times, CPU percent of one core) from consecutive cumulative samples."""
    out = {}
    for source, samples in sources.items():
        names = sorted({n for s in samples for n in s.get("services", {})})
        for name in names:
            pts = [
                (
                    s["t"],
                    s["services"][name].get("cpu_user_s", 0)
                    + s["services"][name].get("cpu_system_s", 0),
                )
                for s in samples
                if name in s.get("services", {})
            ]
            if len(pts) < 2:
                continue
            t, c = np.array(pts).T
            dt = np.diff(t)
            pct = np.where(dt > 0, np.clip(np.diff(c), 0, None) / np.where(dt > 0, dt, 1) * 100, 0)
            out[f"{source}/{name}" if len(sources) > 1 else name] = (t[1:], pct)
    return out
