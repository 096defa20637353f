"""Experiment 1: profiling. The lab is redeployed with SCORING_LAB_PROFILING=true, then for each
architecture: single scoring requests profiled on the server (scoring handler and model API,
pyinstrument and yappi, each service writing its own files) and on the client (the call itself,
profiled in this process), then a short window profile of both services under a small Locust
load. The host data and the profiles are collected from every host, the report breaks the wall
time of one request down by category from the profiles, and the lab is redeployed without
profiling at the end, whatever happened. Profiled runs give no timing results.

    python -m experiments.experiment1 --profile quick --inventory inventories/single-host
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import csv
import json
import os
import sys
import threading
import time
import tomllib
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from experiments.deploy import redeploy
from experiments.profiling.report import build_headline, write_report
from experiments.protocol import CONFIG_DIR, GuardParams, ProtocolError, Scenario
from experiments.results import iso, open_run_folder
from experiments.session import RunOptions, Session, session
from experiments.topology import REPO_ROOT
from services import profiling as prof

EXPERIMENT = "experiment-1"
CONFIG = CONFIG_DIR / "experiment1.toml"
PROFILING_ENV = {"SCORING_LAB_PROFILING": "true"}
ROLES = {"scoring": "scoring handler", "model": "model API"}
LOAD_SEEN_LATENCY_S = 2.0
FLUSH_ROUNDS, FLUSH_REQUESTS = 2, 16  # after a window: 2 bursts of 16 requests, 4 at a time


class ProfilingOff(RuntimeError):
    pass


# ------------------------------------------------------------------------------ config


@dataclass(frozen=True)
class Config:
    profile: str
    architectures: tuple[str, ...]
    payload: tuple[float, ...]
    server_profilers: tuple[str, ...]
    client_profilers: tuple[str, ...]
    repeats: int
    warmup_requests: int
    timeout_s: float
    window_profilers: tuple[str, ...]
    window_s: float
    users: int
    spawn_rate: float
    pacing_s: float
    lead_s: float
    tail_s: float
    deploy_timeout_s: float
    guard: GuardParams
    source: str = ""

    @property
    def window_load_s(self) -> float:
        # + the Locust history's 1 s write interval, by which the trigger sees the load late
        return self.lead_s + self.window_s + self.tail_s + LOAD_SEEN_LATENCY_S

    def window_scenario(self, profiler: str) -> Scenario:
        return Scenario(name=f"window_{profiler}", kind="constant", users=self.users,
                        spawn_rate=self.spawn_rate, pacing_s=self.pacing_s,
                        duration_s=self.window_load_s)

    @property
    def planned_s(self) -> float:
        per_arch = len(self.window_profilers) * self.window_load_s
        return per_arch * len(self.architectures)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = (_merge(out[key], value) if isinstance(value, dict)
                    and isinstance(out.get(key), dict) else value)
    return out


def profiles_of(path: Path = CONFIG) -> list[str]:
    with Path(path).open("rb") as f:
        return sorted(tomllib.load(f).get("profiles", {}))


def load_config(path: str | Path = CONFIG, profile: str | None = None) -> Config:
    path = Path(path)
    with path.open("rb") as f:
        data = tomllib.load(f)
    profile = profile or data.get("default_profile", "full")
    profiles = data.get("profiles", {})
    if profile not in profiles and profile != "full":
        raise ProtocolError(f"{path}: no profile {profile!r}; have {sorted(profiles)}")
    d = _merge({k: v for k, v in data.items() if k != "profiles"}, profiles.get(profile, {}))
    try:
        single, window = d["single"], d["window"]
        for name in (*single["server_profilers"], *single["client_profilers"],
                     *window["profilers"]):
            prof.parse_profiler(name, prof.Arch.SYNC)
        prof.parse_window(str(window["window_s"]))
        config = Config(
            profile=profile, architectures=tuple(d["architectures"]),
            payload=tuple(float(x) for x in d["request"]["payload"]),
            server_profilers=tuple(single["server_profilers"]),
            client_profilers=tuple(single["client_profilers"]),
            repeats=int(single["repeats"]), warmup_requests=int(single["warmup_requests"]),
            timeout_s=float(single["timeout_s"]), window_profilers=tuple(window["profilers"]),
            window_s=float(window["window_s"]), users=int(window["users"]),
            spawn_rate=float(window["spawn_rate"]), pacing_s=float(window["pacing_s"]),
            lead_s=float(window["lead_s"]), tail_s=float(window["tail_s"]),
            deploy_timeout_s=float(d["deploy"]["timeout_s"]), guard=GuardParams(**d["guard"]),
            source=str(path))
    except (KeyError, TypeError, ValueError, prof.errors.ApiError) as exc:
        raise ProtocolError(f"{path} (profile {profile}): {exc}") from exc
    if not set(config.architectures) <= {"sync", "async"} or config.repeats < 1:
        raise ProtocolError(f"{path}: architectures must be sync/async and repeats >= 1")
    return config


# ------------------------------------------------------------------------------ deploy


def deploy(options: RunOptions, *, profiling: bool, timeout_s: float) -> str:
    """The lab with or without profiling (only the profiling switch changes); its output."""
    extra = {"model_api_env": PROFILING_ENV, "scoring_handler_env": PROFILING_ENV}
    return redeploy(options, extra if profiling else None, timeout_s=timeout_s)["output"]


# ------------------------------------------------------------------------- requests


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float
          ) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, \
                response.read()
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


def _endpoint(lab: Session, role: str, arch: str) -> str:
    return f"{lab.topology.url(f'{role}-{arch}')}/api/v1/ml/{arch}/predict"


def profiled_request(url: str, body: bytes, headers: dict[str, str], timeout: float
                     ) -> dict[str, str]:
    status, got, text = _post(url, body, headers, timeout)
    if status != 200:
        raise RuntimeError(f"POST {url} with {headers} answered HTTP {status}: {text[:200]!r}")
    if prof.STATUS_HEADER.lower() not in got:
        raise ProfilingOff(f"{url} ignored the profile header: is the lab deployed with "
                           "SCORING_LAB_PROFILING=true?")
    return got


def warm_up(url: str, body: bytes, n: int, timeout: float) -> None:
    """n plain requests, 4 at a time, each on a new connection, so that every worker gets
    some (a busy blocking worker does not accept: the next idle one does)."""
    threads = [threading.Thread(target=lambda: [_post(url, body, {}, timeout)
                                                for _ in range(max(1, n // 4))])
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout * n)


# ---------------------------------------------------------------------- client side


def profile_client_call(arch: str, url: str, payload: list[float], profiler: str,
                        directory: Path, sequence: int) -> str:
    """One scoring call profiled in this process: requests for sync (the original's client),
    httpx.AsyncClient for async (pyinstrument's async mode, yappi's wall clock). Returns the
    files' name."""
    import httpx
    import requests

    name, clock = prof.parse_profiler(profiler, prof.Arch(arch))
    if name == "yappi" and profiler == "yappi":
        clock = "wall"  # the client's wait is what a caller sees
    tag = "pyinstrument" if name == "pyinstrument" else f"yappi-{clock}"
    stem = f"client-{arch}_{os.getpid()}_{prof._stamp(time.time())}_{sequence:04d}_req_{tag}"
    capture = prof.Capture(name, clock, stem, "request",
                           {"service": f"client-{arch}", "role": "client", "arch": arch,
                            "pid": os.getpid(), "method": "POST", "url": url},
                           whole_thread=arch == "sync")
    capture.requests = 1
    directory.mkdir(parents=True, exist_ok=True)
    if arch == "sync":
        with requests.Session() as client:
            client.post(url, json=payload, timeout=10).raise_for_status()  # connection ready
            capture.start()
            client.post(url, json=payload, timeout=10).raise_for_status()
            capture.stop_and_write(directory)
        return stem

    async def call() -> None:
        async with httpx.AsyncClient(timeout=10) as client:
            (await client.post(url, json=payload)).raise_for_status()
            capture.start()
            (await client.post(url, json=payload)).raise_for_status()
            capture.stop_and_write(directory)

    asyncio.run(call())
    return stem


# ------------------------------------------------------------------------- the run


def _single_requests(lab: Session, config: Config, arch: str) -> list[dict[str, Any]]:
    body = json.dumps(list(config.payload)).encode()
    entries = []
    for role in ROLES:
        warm_up(_endpoint(lab, role, arch), body, config.warmup_requests, config.timeout_s)
    for profiler in config.server_profilers:
        for repeat in range(config.repeats):
            for role in ROLES:
                got = profiled_request(_endpoint(lab, role, arch), body,
                                       {prof.PROFILE_HEADER: profiler}, config.timeout_s)
                if got[prof.STATUS_HEADER.lower()] != "written":
                    lab.run.warn(f"{role}-{arch} {profiler}: {got[prof.STATUS_HEADER.lower()]}")
                    continue
                entries.append({"side": "server", "arch": arch, "role": role,
                                "service": f"{role}-{arch}", "host":
                                lab.topology.services[f"{role}-{arch}"]["host"],
                                "profiler": profiler, "repeat": repeat, "kind": "request",
                                "name": got[prof.FILE_HEADER.lower()], "profiled": True})
    client_dir = lab.run.profiles_dir() / "client"
    for profiler in config.client_profilers:
        for repeat in range(config.repeats):
            name = profile_client_call(arch, _endpoint(lab, "scoring", arch),
                                       list(config.payload), profiler, client_dir,
                                       len(entries) + 1)
            entries.append({"side": "client", "arch": arch, "role": "client",
                            "service": f"client-{arch}", "host": "client",
                            "profiler": profiler, "repeat": repeat, "kind": "request",
                            "name": name, "profiled": True})
    return entries


def _requests_seen(history_csv: Path) -> int:
    """Requests answered so far according to Locust's stats history (written every second)."""
    try:
        with history_csv.open() as f:
            rows = list(csv.DictReader(f))
    except OSError:
        return 0
    counts = [int(r.get("Total Request Count") or 0) for r in rows
              if (r.get("Total Request Count") or "").isdigit()]
    return max(counts, default=0)


def _window(lab: Session, config: Config, arch: str, profiler: str, step: int,
            steps: int) -> dict[str, Any]:
    body = json.dumps(list(config.payload)).encode()
    scenario = config.window_scenario(profiler)
    opened: dict[str, Any] = {}

    def trigger() -> None:
        for role in ROLES:
            try:
                got = profiled_request(_endpoint(lab, role, arch), body, {
                    prof.PROFILE_HEADER: profiler,
                    prof.WINDOW_HEADER: f"{config.window_s:g}"}, config.timeout_s)
                opened[role] = {"status": got[prof.STATUS_HEADER.lower()],
                                "window_id": got.get(prof.WINDOW_ID_HEADER.lower()),
                                "opened_at": iso()}
            except Exception as exc:  # noqa: BLE001 - reported in the manifest
                opened[role] = {"error": f"{type(exc).__name__}: {exc}"}

    out_dir = lab.run.locust_dir(scenario.name, arch)
    stop = threading.Event()

    def open_window_under_load() -> None:
        # Locust takes seconds to start: wait for its first answered requests, then lead_s.
        deadline = time.monotonic() + scenario.total_s + 60
        while not stop.is_set() and time.monotonic() < deadline:
            if _requests_seen(out_dir / "locust_stats_history.csv") > 0:
                if not stop.wait(config.lead_s):
                    trigger()
                return
            stop.wait(0.2)

    thread = threading.Thread(target=open_window_under_load, daemon=True)
    label = f"window {profiler} {arch}"
    lab.progress.say(f"step {step}/{steps} {label} ({config.users} users, "
                     f"{scenario.total_s:.0f} s, {config.window_s:g} s window)")
    thread.start()
    try:
        result = lab.locust(scenario, arch, out_dir, arrival="spread", payload=config.payload,
                            step=step, label=label)
    finally:
        stop.set()
        thread.join(config.timeout_s * 2 + 5)
    if not opened:
        lab.run.warn(f"window {profiler} {arch}: Locust answered no request, no window opened")
    # A worker writes its window file at its first request after the window. The scoring
    # handlers' kept-alive pools may never reach some model API worker (the one that took the
    # trigger, for one): a few bursts of requests on new connections reach every worker.
    for role in ROLES:
        for _ in range(FLUSH_ROUNDS):
            warm_up(_endpoint(lab, role, arch), body, FLUSH_REQUESTS, config.timeout_s)
    return {"arch": arch, "profiler": profiler, "kind": "window", "profiled": True,
            "window_s": config.window_s, "users": config.users, "services": opened,
            "locust_dir": lab.run.rel(result.out_dir), "locust_valid": result.valid,
            "locust_reasons": list(result.reasons),
            "timing": "not reported: a profiled run is not a timing result"}


def finish(folder: Path) -> dict[str, Any]:
    out = write_report(folder)
    open_run_folder(folder).complete(build_headline(folder))
    return out


def run_experiment1(config_path: str | Path, profile: str | None,
                    options: RunOptions) -> Path:
    """Deploy with profiling, profile, collect, report; always redeploy without profiling."""
    config = load_config(config_path, profile)
    print("deploying the lab with SCORING_LAB_PROFILING=true", file=sys.stderr, flush=True)
    folder: Path | None = None
    try:
        deploy_log = deploy(options, profiling=True, timeout_s=config.deploy_timeout_s)
        steps = len(config.architectures) * (1 + len(config.window_profilers))
        with session(EXPERIMENT, options, planned_s=config.planned_s, steps=steps,
                     guard=config.guard, finish=finish, profile=config.profile,
                     protocol=config.to_dict(), profiled=True, arrival="spread",
                     timing_results=False) as lab:
            folder = lab.run.path
            (lab.run.raw / "deploy-profiled.log").write_text(deploy_log)
            profiles, windows, step = [], [], 0
            for arch in config.architectures:
                step += 1
                lab.progress.say(f"step {step}/{steps} single requests {arch}")
                profiles += _single_requests(lab, config, arch)
                lab.run.update(profiles=profiles)
                for profiler in config.window_profilers:
                    step += 1
                    windows.append(_window(lab, config, arch, profiler, step, steps))
                    lab.run.update(windows=windows)
            # Workers write a window file at their first request after it: the load ran
            # tail_s past every window, so only a last short wait is needed here.
            time.sleep(1.0)
        return folder
    finally:
        print("redeploying the lab without profiling", file=sys.stderr, flush=True)
        log = deploy(options, profiling=False, timeout_s=config.deploy_timeout_s)
        if folder is not None:
            (folder / "raw" / "deploy-unprofiled.log").write_text(log)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.experiment1",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default=None, choices=["full", *profiles_of()])
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--results-dir", type=Path,
                        default=Path(os.environ.get("RESULTS_DIR") or REPO_ROOT / "results"))
    parser.add_argument("--inventory", default=None,
                        help="Ansible inventory (relative to ansible/ or absolute)")
    args = parser.parse_args(argv)
    options = RunOptions(results_dir=args.results_dir, inventory=args.inventory,
                         ansible_playbook=str(Path(sys.executable).with_name("ansible-playbook")))
    folder = run_experiment1(args.config, args.profile, options)
    print(f"\nresult folder: {folder}\nreport:        {folder / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
