"""Experiment 2: timeit, as the original did it and then properly. For each N in a range, the
wall time of N sequential scoring calls over one keep-alive connection, sync and async,
repeated R times; the two architectures alternate which goes first so machine noise hits both.
Every sample goes to raw/timeit/timings.csv; the report (experiments/report_exp2.py) gives
means with confidence intervals, the improvement of async over sync per N and overall, a
significance test and pyperf's stability warning.

    run_experiment2("experiments/config/experiment2.toml", "quick", options=options)
"""

from __future__ import annotations

import csv
import http.client
import json
import time
import tomllib
import urllib.parse
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from experiments.protocol import CONFIG_DIR, GuardParams, ProtocolError, _Checker, _merge
from experiments.session import RunOptions, completing, session

EXPERIMENT = "experiment-2"
CONFIG = CONFIG_DIR / "experiment2.toml"
CSV_FIELDS = ("repeat", "n", "arch", "order", "started_at_unix", "seconds", "calls_ok",
              "calls_failed")
_TOP = {"format_version", "experiment", "description", "default_profile", "ns", "repeats",
        "warmup_calls", "pause_s", "timeout_s", "entity", "architectures", "request",
        "analysis", "profiles"}
_PROFILE = {"ns", "repeats", "warmup_calls", "pause_s", "timeout_s", "entity", "request",
            "analysis"}
_ANALYSIS = {"confidence", "alpha", "min_effect", "stability_limit"}


@dataclass(frozen=True)
class Timeit:
    experiment: str
    profile: str
    description: str
    ns: tuple[int, ...]
    repeats: int
    warmup_calls: int
    pause_s: float
    timeout_s: float
    entity: str
    paths: dict[str, str]
    payload: tuple[float, ...]
    confidence: float = 0.95
    alpha: float = 0.05
    min_effect: float = 0.02
    stability_limit: float = 0.10
    source: str = ""

    @property
    def architectures(self) -> tuple[str, ...]:
        return tuple(self.paths)

    @property
    def calls(self) -> int:
        """Timed calls in all (both architectures)."""
        return sum(self.ns) * self.repeats * len(self.paths)

    @property
    def planned_s(self) -> float:
        """A rough length: 100 ms per call (the sync path's two sequential model calls)."""
        return self.calls * 0.1 + self.repeats * len(self.ns) * len(self.paths) * self.pause_s

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ns"], d["payload"] = list(self.ns), list(self.payload)
        return d


def parse_timeit(data: dict, profile: str | None = None, *,
                 source: str = "<experiment2>") -> Timeit:
    c = _Checker(source)
    c.keys(data, "top level", _TOP)
    profiles = data.get("profiles", {})
    profile = profile or c.string(data, "top level", "default_profile", default="full")
    if profile != "full" and profile not in profiles:
        raise c.fail("profiles", f"unknown profile {profile!r} "
                                 f"(have: {', '.join(sorted({'full', *profiles}))})")
    override = profiles.get(profile, {})
    c.keys(override, f"profiles.{profile}", _PROFILE)
    t = _merge({k: v for k, v in data.items() if k != "profiles"}, override)
    ns = t.get("ns")
    if (not isinstance(ns, list) or not ns
            or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in ns)):
        raise c.fail("top level", f"ns = {ns!r}: expected a non-empty list of integers >= 1")
    archs = c.keys(t.get("architectures", {}), "architectures", set(t.get("architectures", {})))
    if not archs:
        raise c.fail("architectures", "no architecture defined")
    paths = {}
    for arch, table in archs.items():
        c.keys(table, f"architectures.{arch}", {"path"})
        paths[arch] = c.string(table, f"architectures.{arch}", "path")
    payload = c.keys(t.get("request", {}), "request", {"payload"}).get(
        "payload", [5.1, 3.5, 1.4, 0.2])
    if not isinstance(payload, list) or not all(
            isinstance(x, int | float) and not isinstance(x, bool) for x in payload):
        raise c.fail("request", f"payload = {payload!r}: expected a list of numbers")
    a = c.keys(t.get("analysis", {}), "analysis", _ANALYSIS)
    out = Timeit(
        experiment=c.string(t, "top level", "experiment"),
        profile=profile,
        description=c.string(t, "top level", "description", default=""),
        ns=tuple(ns),
        repeats=c.number(t, "top level", "repeats", lo=2, integer=True),
        warmup_calls=c.number(t, "top level", "warmup_calls", default=0, lo=0, integer=True),
        pause_s=c.number(t, "top level", "pause_s", default=0.0, lo=0),
        timeout_s=c.number(t, "top level", "timeout_s", default=10.0, lo=0, lo_open=True),
        entity=c.string(t, "top level", "entity", default="0"),
        paths=paths,
        payload=tuple(float(x) for x in payload),
        confidence=c.number(a, "analysis", "confidence", default=0.95, lo=0, lo_open=True,
                            hi=0.999),
        alpha=c.number(a, "analysis", "alpha", default=0.05, lo=0, lo_open=True, hi=0.5),
        min_effect=c.number(a, "analysis", "min_effect", default=0.02, lo=0),
        stability_limit=c.number(a, "analysis", "stability_limit", default=0.10, lo=0,
                                 lo_open=True),
        source=source,
    )
    for other in profiles:
        if other not in (profile, "full") and profile == "full":
            parse_timeit(data, other, source=source)
    return out


def load_timeit(path: str | Path = CONFIG, profile: str | None = None) -> Timeit:
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ProtocolError(f"{path}: not valid TOML: {e}") from e
    return parse_timeit(data, profile, source=str(path))


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


def finish(folder: Path) -> dict:
    # Imported here: the report module imports this one for its config types.
    from experiments.report_exp2 import build_headline, write_report

    return completing(build_headline, write_report)(folder)


def run_experiment2(config_path: str | Path = CONFIG, profile: str | None = None, *,
                    options: RunOptions) -> Path:
    timeit = load_timeit(config_path, profile)
    with session(EXPERIMENT, options, planned_s=timeit.planned_s, steps=timeit.repeats,
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
