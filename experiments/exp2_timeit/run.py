"""Experiment 2: timeit, as the original did it and then properly. For each N in a range, the
wall time of N sequential scoring calls over one keep-alive connection, sync and async,
repeated R times; the two architectures alternate which goes first so machine noise hits both.
Every sample goes to raw/timeit/timings.csv; the report (report.py beside this module) gives
means with confidence intervals, the improvement of async over sync per N and overall, a
significance test and pyperf's stability warning.

    EXPERIMENT.execute("quick", options)     # experiments/exp2_timeit/__init__.py
"""

from __future__ import annotations

import csv
import http.client
import json
import time
import urllib.parse
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, Strict

from experiments.config import (
    Float,
    Int,
    Str,
    Table,
    parse,
    read,
)
from experiments.constants import ARCHS
from experiments.experiment import Finish
from experiments.lab.session import RunOptions, session
from experiments.protocol import DEFAULT_PAYLOAD, Arch, GuardParams
from services.describe import predict_path

CSV_FIELDS = ("repeat", "n", "arch", "order", "started_at_unix", "seconds", "calls_ok",
              "calls_failed")
_TOP = {"ns", "repeats", "warmup_calls", "pause_s", "timeout_s", "entity",
                     "architectures", "request", "analysis"}
_PROFILE = {"ns", "repeats", "warmup_calls", "pause_s", "timeout_s", "entity", "request",
            "analysis"}
_ANALYSIS = {"confidence", "alpha", "min_effect", "stability_limit"}


class Timeit(Table):
    experiment: Str
    profile: Str
    description: Str = ""
    ns: tuple[Annotated[int, Strict(), Field(ge=1)], ...] = Field(min_length=1)
    repeats: Int = Field(ge=2)
    warmup_calls: Int = Field(0, ge=0)
    pause_s: Float = Field(0.0, ge=0)
    timeout_s: Float = Field(10.0, gt=0)
    entity: Str = "0"
    architectures: tuple[Arch, ...] = Field(ARCHS, min_length=1)
    payload: tuple[Float, ...] = tuple(DEFAULT_PAYLOAD)
    confidence: Float = Field(0.95, gt=0, le=0.999)
    alpha: Float = Field(0.05, gt=0, le=0.5)
    min_effect: Float = Field(0.02, ge=0)
    stability_limit: Float = Field(0.10, gt=0)
    source: Str = ""

    @property
    def paths(self) -> dict[str, str]:
        """Architecture -> the scoring path (services.describe owns it)."""
        return {arch: predict_path(arch) for arch in self.architectures}

    @property
    def calls(self) -> int:
        """Timed calls in all (both architectures)."""
        return sum(self.ns) * self.repeats * len(self.paths)

    @property
    def planned_s(self) -> float:
        """A rough length: 100 ms per call (the sync path's two sequential model calls)."""
        return self.calls * 0.1 + self.repeats * len(self.ns) * len(self.paths) * self.pause_s

    def to_dict(self) -> dict[str, Any]:
        d = self.model_dump(exclude={"architectures"})
        d["ns"], d["payload"] = list(self.ns), list(self.payload)
        d["paths"] = self.paths  # the report reads the architectures from it
        return d


def parse_timeit(data: dict, profile: str | None = None, *,
                 source: str = "<experiment2>") -> Timeit:
    # [analysis] sits flat in the model (and so in the manifest the report reads).
    return parse(Timeit, data, profile, source=source, top=_TOP, allowed=_PROFILE,
                 flat={"request": {"payload"}, "analysis": _ANALYSIS})


def load_timeit(path: str | Path, profile: str | None = None) -> Timeit:
    return parse_timeit(read(path), profile, source=str(path))


class KeepAliveClient:
    """One HTTP/1.1 keep-alive connection (the standard library's, identical for both
    architectures); reconnects after an error. Every call is bounded by timeout_s."""

    def __init__(self, base_url: str, path: str, entity: str, payload: bytes, timeout_s: float):
        url = urllib.parse.urlsplit(base_url)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        self.target = f"{path}?{urllib.parse.urlencode({'entity': entity})}"
        self.payload, self.timeout_s = payload, timeout_s
        self.conn: http.client.HTTPConnection | None = None

    def call(self) -> bool:
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port,
                                                       timeout=self.timeout_s)
            self.conn.request("POST", self.target, body=self.payload,
                              headers={"Content-Type": "application/json"})
            response = self.conn.getresponse()
            body = response.read()
            return response.status == 200 and b"detail" in body
        except (OSError, http.client.HTTPException):
            self.close()
            return False

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def time_calls(client: KeepAliveClient, n: int) -> tuple[float, int]:
    """Wall seconds of n sequential calls, and how many succeeded."""
    ok = 0
    t0 = time.perf_counter()
    for _ in range(n):
        ok += client.call()
    return time.perf_counter() - t0, ok


def schedule(timeit: Timeit) -> list[tuple[int, int, str, int]]:
    """(repeat, n, arch, order) in run order: for each repeat and N, both architectures back
    to back, the first one alternating so neither always runs first."""
    out = []
    archs = list(timeit.architectures)
    for r in range(timeit.repeats):
        for i, n in enumerate(timeit.ns):
            order = archs if (r + i) % 2 == 0 else archs[::-1]
            out += [(r, n, arch, k) for k, arch in enumerate(order)]
    return out


def run(timeit: Timeit, options: RunOptions, finish: Finish) -> Path:
    """Warm up, then every (repeat, N, arch) of the schedule into raw/timeit/timings.csv."""
    with session(timeit.experiment, options, planned_s=timeit.planned_s, steps=timeit.repeats,
                 guard=GuardParams(), finish=finish, profile=timeit.profile,
                 protocol=timeit.to_dict(), arrival="sequential") as lab:
        run, progress = lab.run, lab.progress
        payload = json.dumps(list(timeit.payload)).encode()
        clients = {arch: KeepAliveClient(lab.topology.scoring_url(arch), path, timeit.entity,
                                         payload, timeit.timeout_s)
                   for arch, path in timeit.paths.items()}
        out = run.raw / "timeit"
        out.mkdir(parents=True, exist_ok=True)
        csv_path = out / "timings.csv"
        calls = {arch: 0 for arch in clients}
        warm_failed = 0
        for client in clients.values():
            for _ in range(timeit.warmup_calls):
                warm_failed += not client.call()
        started = time.time()
        try:
            with csv_path.open("w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(CSV_FIELDS)
                last_repeat = -1
                for r, n, arch, order in schedule(timeit):
                    if r != last_repeat:
                        progress.say(f"repeat {r + 1}/{timeit.repeats}")
                        last_repeat = r
                    t0 = time.time()
                    seconds, ok = time_calls(clients[arch], n)
                    calls[arch] += n
                    writer.writerow((r, n, arch, order, f"{t0:.6f}", f"{seconds:.9f}", ok,
                                     n - ok))
                    f.flush()
                    if timeit.pause_s:
                        time.sleep(timeit.pause_s)
        finally:
            for client in clients.values():
                client.close()
        ended = time.time()
        failed = _failed_calls(csv_path)
        run.update(timeit={"csv": run.rel(csv_path), "window": [started, ended],
                           "calls": calls, "failed_calls": failed,
                           "warmup_failed_calls": warm_failed,
                           "client": "http.client keep-alive, one connection per architecture"})
        if failed:
            run.invalidate(f"{failed} timed calls failed (non-200 or no answer)")
    return run.path


def _failed_calls(csv_path: Path) -> int:
    with csv_path.open() as f:
        return sum(int(row["calls_failed"]) for row in csv.DictReader(f))
