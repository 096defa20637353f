"""Experiment 1: profiling. The lab is redeployed with SCORING_LAB_PROFILING=true, then for each
architecture: single scoring requests profiled on the server (scoring handler and model API,
pyinstrument and yappi, each service writing its own files) and on the client (the call itself,
profiled in this process), then a short window profile of both services under a small Locust
load. The host data and the profiles are collected from every host, the report breaks the wall
time of one request down by category from the profiles, and the lab is redeployed without
profiling at the end, whatever happened. Profiled runs give no timing results.

    python -m experiments run 1 --profile quick --inventory inventories/single-host
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, Field, field_validator

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
from experiments.lab.collect import compress_sessions
from experiments.lab.deploy import DeployError, redeploy, switch
from experiments.lab.session import RunOptions, Session, session
from experiments.lab.verify import VerifyError
from experiments.protocol import DEFAULT_PAYLOAD, Arch, GuardParams, Scenario
from experiments.results import iso
from services import profiling as prof
from services.describe import predict_path
from services.settings import SettingsError, check_service_env

PROFILING_ENV = {"SCORING_LAB_PROFILING": "true"}
ROLES = {"scoring": "scoring handler", "model": "model API"}
LOAD_SEEN_LATENCY_S = 2.0
FLUSH_ROUNDS, FLUSH_REQUESTS = 2, 16  # after a window: 2 bursts of 16 requests, 4 at a time


class ProfilingOff(VerifyError):
    """The lab answered without profiling: it was not deployed with SCORING_LAB_PROFILING."""


# ------------------------------------------------------------------------------ config


def _profilers(names: tuple[str, ...]) -> tuple[str, ...]:
    for name in names:
        try:
            prof.parse_profiler(name, prof.Arch.SYNC)
        except prof.errors.ApiError as exc:
            raise ValueError(exc.message) from None
    return names


Profilers = Annotated[tuple[Str, ...], Field(min_length=1), AfterValidator(_profilers)]


class Single(Table):
    """Single requests, one at a time on an otherwise idle lab."""

    server_profilers: Profilers
    client_profilers: Profilers
    repeats: Int = Field(ge=1)
    warmup_requests: Int = Field(ge=0)
    timeout_s: Float = Field(gt=0)


class Window(Table):
    """A window profile under a constant Locust load."""

    profilers: Profilers
    window_s: Float = Field(gt=0)
    users: Int = Field(ge=1)
    spawn_rate: Float = Field(gt=0)
    pacing_s: Float = Field(gt=0)
    lead_s: Float = Field(ge=0)
    tail_s: Float = Field(ge=0)

    @field_validator("window_s")
    @classmethod
    def _a_window_the_services_take(cls, window_s: float) -> float:
        try:
            prof.parse_window(f"{window_s:g}")
        except prof.errors.ApiError as exc:
            raise ValueError(exc.message) from None
        return window_s


class Build(Table):
    """A build profiled under heavier load (where the async default's throughput falls past
    its knee): the lab's default build, or the settings it names, redeployed with profiling
    on; one pyinstrument window (the profiler whose samples split CPU by category) on each of
    its architectures at each of its user counts."""

    name: Str
    description: Str = ""
    archs: tuple[Arch, ...] = Field(("async",), min_length=1)
    users: tuple[Int, ...] = Field(min_length=1)
    model_api_env: dict[str, str] = {}
    scoring_handler_env: dict[str, str] = {}

    @field_validator("users")
    @classmethod
    def _at_least_one_user(cls, users: tuple[int, ...]) -> tuple[int, ...]:
        if any(u < 1 for u in users) or len(set(users)) != len(users):
            raise ValueError(f"{list(users)}: expected distinct user counts >= 1")
        return users

    @field_validator("model_api_env", "scoring_handler_env")
    @classmethod
    def _settings_the_services_take(cls, env: dict[str, str]) -> dict[str, str]:
        try:  # the services' own reader: what they would refuse
            check_service_env(env, reserved=PROFILING_ENV)
        except SettingsError as exc:
            raise ValueError(f"a bad service environment: {exc}") from None
        return env

    def deploy_vars(self) -> dict[str, dict[str, str]]:
        return {"model_api_env": {**PROFILING_ENV, **self.model_api_env},
                "scoring_handler_env": {**PROFILING_ENV, **self.scoring_handler_env}}


class Deploy(Table):
    timeout_s: Float = Field(gt=0)  # each ansible-playbook deploy, with and without profiling


class Config(Table):
    experiment: Str
    profile: Str
    description: Str = ""
    architectures: tuple[Arch, ...] = Field(ARCHS, min_length=1)
    payload: tuple[Float, ...] = tuple(DEFAULT_PAYLOAD)
    single: Single
    window: Window
    deploy: Deploy
    builds: tuple[Build, ...] = ()
    guard: GuardParams = GuardParams()
    source: Str = ""

    @field_validator("builds")
    @classmethod
    def _distinct_names(cls, builds: tuple[Build, ...]) -> tuple[Build, ...]:
        names = [b.name for b in builds]
        if len(set(names)) != len(names):
            raise ValueError(f"build names repeat: {names}")
        return builds

    @property
    def window_load_s(self) -> float:
        # + the Locust history's 1 s write interval, by which the trigger sees the load late
        w = self.window
        return w.lead_s + w.window_s + w.tail_s + LOAD_SEEN_LATENCY_S

    def window_scenario(self, profiler: str, users: int | None = None,
                        build: str = "") -> Scenario:
        users = users or self.window.users
        name = f"window_{profiler}" + (f"_{build}_{users}u" if build else "")
        # users start at the window's spawn rate or faster: a build's heavier load is on
        # before the lead time ends, as the default window's
        return Scenario(name=name, kind="constant", users=users,
                        spawn_rate=max(self.window.spawn_rate, users / max(1.0,
                                                                          self.window.lead_s)),
                        pacing_s=self.window.pacing_s, duration_s=self.window_load_s)

    @property
    def build_windows(self) -> int:
        return sum(len(b.archs) * len(b.users) for b in self.builds)

    @property
    def planned_s(self) -> float:
        per_arch = len(self.window.profilers) * self.window_load_s
        return per_arch * len(self.architectures) + self.build_windows * self.window_load_s

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()


_TOP = {"architectures", "request", "single", "window", "deploy", "builds", "guard"}
_PROFILE = {"request", "single", "window", "deploy", "builds", "guard"}


def parse_config(data: dict, profile: str | None = None, *,
                 source: str = "<experiment1>") -> Config:
    return parse(Config, data, profile, source=source, top=_TOP, allowed=_PROFILE,
                 flat={"request": {"payload"}})


def load_config(path: str | Path, profile: str | None = None) -> Config:
    return parse_config(read(path), profile, source=str(path))


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
    return lab.topology.url(f"{role}-{arch}") + predict_path(arch)


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
        warm_up(_endpoint(lab, role, arch), body, config.single.warmup_requests,
                config.single.timeout_s)
    for profiler in config.single.server_profilers:
        for repeat in range(config.single.repeats):
            for role in ROLES:
                got = profiled_request(_endpoint(lab, role, arch), body,
                                       {prof.PROFILE_HEADER: profiler}, config.single.timeout_s)
                if got[prof.STATUS_HEADER.lower()] != "written":
                    lab.run.warn(f"{role}-{arch} {profiler}: {got[prof.STATUS_HEADER.lower()]}")
                    continue
                entries.append({"side": "server", "arch": arch, "role": role,
                                "service": f"{role}-{arch}", "host":
                                lab.topology.services[f"{role}-{arch}"]["host"],
                                "profiler": profiler, "repeat": repeat, "kind": "request",
                                "name": got[prof.FILE_HEADER.lower()], "profiled": True})
    client_dir = lab.run.profiles_dir() / "client"
    for profiler in config.single.client_profilers:
        for repeat in range(config.single.repeats):
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
            steps: int, build: Build | None = None, users: int | None = None
            ) -> dict[str, Any]:
    body = json.dumps(list(config.payload)).encode()
    scenario = config.window_scenario(profiler, users, build.name if build else "")
    opened: dict[str, Any] = {}

    def trigger() -> None:
        for role in ROLES:
            try:
                got = profiled_request(_endpoint(lab, role, arch), body, {
                    prof.PROFILE_HEADER: profiler,
                    prof.WINDOW_HEADER: f"{config.window.window_s:g}"}, config.single.timeout_s)
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
                if not stop.wait(config.window.lead_s):
                    trigger()
                return
            stop.wait(0.2)

    thread = threading.Thread(target=open_window_under_load, daemon=True)
    label = f"window {profiler} {arch}" + (f" {build.name}" if build else "")
    lab.progress.say(f"step {step}/{steps} {label} ({scenario.users} users, "
                     f"{scenario.total_s:.0f} s, {config.window.window_s:g} s window)")
    thread.start()
    try:
        result = lab.locust(scenario, arch, out_dir, arrival="spread", payload=config.payload,
                            step=step, label=label)
    finally:
        stop.set()
        thread.join(config.single.timeout_s * 2 + 5)
    if not opened:
        lab.run.warn(f"window {profiler} {arch}: Locust answered no request, no window opened")
    # A worker writes its window file at its first request after the window. The scoring
    # handlers' kept-alive pools may never reach some model API worker (the one that took the
    # trigger, for one): a few bursts of requests on new connections reach every worker.
    for role in ROLES:
        for _ in range(FLUSH_ROUNDS):
            warm_up(_endpoint(lab, role, arch), body, FLUSH_REQUESTS, config.single.timeout_s)
    return {"arch": arch, "profiler": profiler, "kind": "window", "profiled": True,
            "build": build.name if build else "default",
            "window_s": config.window.window_s, "users": scenario.users, "services": opened,
            "locust_dir": lab.run.rel(result.out_dir), "locust_valid": result.valid,
            "locust_reasons": list(result.reasons),
            "timing": "not reported: a profiled run is not a timing result"}


def _builds_under_load(lab: Session, config: Config, options: RunOptions, step: int,
                       steps: int) -> list[dict[str, Any]]:
    """The builds' windows: each build deployed (with profiling) when its settings differ
    from what runs, verified, then one pyinstrument window per architecture and user count.
    A build that does not deploy or answer is recorded with its error, the others go on."""
    out: list[dict[str, Any]] = []
    current = {"model_api_env": PROFILING_ENV, "scoring_handler_env": PROFILING_ENV}
    for build in config.builds:
        wanted = build.deploy_vars()
        if wanted != current:
            try:
                switch(lab, options, wanted, log=lab.run.raw / f"deploy-build-{build.name}.log",
                       what=f"build {build.name} with profiling",
                       timeout_s=config.deploy.timeout_s)
                current = wanted
            except (DeployError, VerifyError) as exc:
                current = {}  # unknown: the next build redeploys
                lab.run.warn(f"build {build.name}: {exc}")
                out.append({"build": build.name, "kind": "window", "profiled": True,
                            "error": str(exc), "services": {}})
                step += len(build.archs) * len(build.users)
                continue
        for arch in build.archs:
            for users in build.users:
                step += 1
                out.append(_window(lab, config, arch, "pyinstrument", step, steps, build, users))
    return out


def run(config: Config, options: RunOptions, finish: Finish) -> Path:
    """Deploy with profiling, profile, collect, report; always redeploy without profiling."""
    print("deploying the lab with SCORING_LAB_PROFILING=true", file=sys.stderr, flush=True)
    folder: Path | None = None
    try:
        deploy_log = deploy(options, profiling=True, timeout_s=config.deploy.timeout_s)
        steps = (len(config.architectures) * (1 + len(config.window.profilers))
                 + config.build_windows)
        with session(config.experiment, options, planned_s=config.planned_s, steps=steps,
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
                for profiler in config.window.profilers:
                    step += 1
                    windows.append(_window(lab, config, arch, profiler, step, steps))
                    lab.run.update(windows=windows)
            windows += _builds_under_load(lab, config, options, step, steps)
            lab.run.update(windows=windows)
            # The client's own profiles, stored as the hosts' are (collect gzips theirs).
            compress_sessions(lab.run.profiles_dir() / "client")
            # Workers write a window file at their first request after it: the load ran
            # tail_s past every window, so only a last short wait is needed here.
            time.sleep(1.0)
        return folder
    finally:
        print("redeploying the lab without profiling", file=sys.stderr, flush=True)
        log = deploy(options, profiling=False, timeout_s=config.deploy.timeout_s)
        if folder is not None:
            (folder / "raw" / "deploy-unprofiled.log").write_text(log)
