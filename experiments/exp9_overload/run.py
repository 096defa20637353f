"""Experiment 9's run: per build (deployed once, both architectures measured on it) and
architecture, the overload sweep, the fault timelines and the metastability triggers, each an
open-model Locust run of its own folder under raw/locust/ (the report reads them back):

    sweep/<build>/<arch>/idle/recovery.json         the idle latency, learnt before the sweep
    sweep/<build>/<arch>/NN_<factor>x/              one step per offered load
    sweep/<build>/<arch>/recovery/recovery.json     the probes after the sweep (time to recover)
    faults/<build>/<arch>/<fault>/                  one timeline; fault.json: when it was on
    metastability/<build>/<arch>/<trigger>/         one timeline; trigger.json, burst/ (the
                                                    burst's own stream)

Faults are injected by experiments/lab/faults.py and always removed (a FaultWindow ends its
fault when its block is left, SIGTERM included); the default build is redeployed at the end,
whatever happened.

    config = load_overload("experiments/exp9_overload/config.toml", "quick")
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, Strict, model_validator

from experiments.config import ConfigError, Float, Int, Str, Table, parse, read
from experiments.constants import ARCHS
from experiments.found_capacities import CapacityFrom, settle_capacities
from experiments.lab.burst import Burst
from experiments.lab.deploy import switch
from experiments.lab.faults import (
    ChunkedTrailer,
    FaultWindow,
    ModelDown,
    ModelSlow,
    NoFault,
    RedisFrozen,
    RedisRestarted,
    WorkerKilled,
    local_supervisor,
    sigterm_as_interrupt,
)
from experiments.lab.recovery import Probe, Waiter
from experiments.lab.renew import restart_stuck
from experiments.lab.session import RunOptions, Session, session
from experiments.load.arrivals import OpenModel
from experiments.load.run import LocustResult
from experiments.protocol import (
    DEFAULT_PAYLOAD,
    Arch,
    CapacityParams,
    GuardParams,
    Scenario,
    with_capacity_base,
)
from experiments.results import write_json_atomic
from services.describe import HEALTH_PATH, predict_path

# "none" is the control timeline (experiments/lab/faults.py NoFault): the same schedule with
# no fault, what every other timeline's recovery is judged against.
FAULT_KINDS = ("none", "model_slow", "model_down", "redis_frozen", "redis_restart",
               "worker_kill", "chunked_trailer")
# Metastability triggers: a burst to burst_factor x capacity, or the model slower for a while
# (the two: load that overshoots, a dependency that slows down).
TRIGGERS = ("burst", "model_slow")
SLOWDOWN_ENV = "SCORING_LAB_MODEL_SLOWDOWN_FILE"
FAULT_FILE, TRIGGER_FILE = "fault.json", "trigger.json"
# The burst's own stream draws from another seed than the base load's.
BURST_SEED_OFFSET = 1000
# A Locust run's start before its schedule, counted in planned times.
STARTUP_S = 3.0
Positive = Annotated[float, Strict(), Field(gt=0)]


class Build(Table):
    description: Str = ""
    # The architectures measured on it (default: all): a best build is one architecture's.
    archs: tuple[Arch, ...] | None = Field(None, min_length=1)
    model_api_env: dict[str, Str] = {}
    scoring_handler_env: dict[str, Str] = {}
    scoring_handler_workers: Int | None = Field(None, ge=1)
    capacity_rps: dict[Arch, Positive] = {}
    # Its own 1x: the lowest found capacity of its experiment-5 variant (a build that is not
    # the default stack has a capacity of its own); capacity_rps wins over it.
    capacity_from: CapacityFrom | None = None


class SweepParams(Table):
    factors: tuple[Positive, ...] = Field(min_length=1)
    step_s: Positive
    drain_s: Float = Field(3.0, ge=0)
    recover_max_s: Positive = 120.0
    recover_tolerance: Float = Field(1.5, gt=1)


class FaultParams(Table):
    load: Positive = 0.6
    kinds: tuple[Literal[FAULT_KINDS], ...] = FAULT_KINDS
    before_s: Positive
    fault_s: Positive
    after_s: Positive
    slowdown: Float = Field(3.0, gt=1, le=1000)
    tolerance: Float = Field(1.5, gt=1)
    window_s: Positive = 1.0
    startup_s: Float = Field(2.0, ge=0)
    recover_max_s: Positive = 60.0

    @property
    def run_s(self) -> float:
        return self.before_s + self.fault_s + self.after_s


class MetaParams(Table):
    load: Positive = 0.9
    burst_factor: Float = Field(2.0, gt=1)
    trigger_s: Positive = 5.0
    before_s: Positive
    after_s: Positive
    triggers: tuple[Literal[TRIGGERS], ...] = TRIGGERS

    @property
    def run_s(self) -> float:
        return self.before_s + self.trigger_s + self.after_s


class Overload(Table):
    experiment: Str
    profile: Str
    description: Str = ""
    source: Str = ""
    architectures: tuple[Arch, ...] = Field(ARCHS, min_length=1)
    builds: tuple[Str, ...] = Field(min_length=1)
    build: dict[str, Build]
    payload: tuple[Float, ...] = tuple(DEFAULT_PAYLOAD)
    capacity_rps: dict[Arch, Positive] = {}
    capacity_from: CapacityFrom | None = None
    # where each architecture's 1x came from; filled by load_overload, not read from TOML
    capacity_source: dict[str, Any] = {}
    sweep: SweepParams
    faults: FaultParams
    metastability: MetaParams
    capacity: CapacityParams
    guard: GuardParams = GuardParams()

    @model_validator(mode="after")
    def _names_known(self) -> Overload:
        unknown = [b for b in self.builds if b not in self.build]
        if unknown:
            raise ValueError(f"builds {unknown} have no [build.<name>] table (have: "
                             f"{', '.join(sorted(self.build))})")
        missing = [a for a in self.architectures if a not in self.capacity_rps]
        if missing and self.capacity_from is None:
            raise ValueError(f"capacity_rps has no figure for {missing} and there is no "
                             "[capacity_from] to read it from")
        for name in self.builds:
            extra = [a for a in self.build[name].archs or () if a not in self.architectures]
            if extra:
                raise ValueError(f"build.{name}.archs: {extra} are not among the "
                                 f"architectures {list(self.architectures)}")
        return self

    def archs_of(self, build: str) -> tuple[str, ...]:
        """The architectures measured on `build`, in the config's order."""
        only = self.build[build].archs
        return tuple(a for a in self.architectures if only is None or a in only)

    def with_measured_capacities(self, root: Path | None = None) -> Overload:
        """The config with every architecture's 1x settled: its own capacity_rps, else the
        lowest found capacity of [capacity_from]'s runs (experiments/found_capacities.py);
        a build with its own [capacity_from] gets its own; `capacity_source` says which, per
        architecture and per build/architecture."""
        rps, source = settle_capacities(self.capacity_rps, self.capacity_from,
                                        self.architectures, root=root)
        builds = dict(self.build)
        for name in self.builds:
            b = builds[name]
            if b.capacity_from is None:
                continue  # the architecture's 1x (capacity_of falls back to it)
            own, own_source = settle_capacities(b.capacity_rps, b.capacity_from,
                                                self.archs_of(name), root=root)
            builds[name] = b.model_copy(update={"capacity_rps": own})
            source.update({f"{name}/{a}": s for a, s in own_source.items()})
        return self.model_copy(update={"capacity_rps": rps, "capacity_source": source,
                                       "build": builds})

    def capacity_of(self, build: str, arch: str) -> float:
        """The capacity the loads are multiples of: the build's own, else the architecture's."""
        return self.build[build].capacity_rps.get(arch, self.capacity_rps[arch])

    @property
    def bound_ms(self) -> float:
        return self.capacity.p99_bound_ms

    @property
    def arch_s(self) -> float:
        """Planned load time of one architecture on one build."""
        s, f, m = self.sweep, self.faults, self.metastability
        return (len(s.factors) * (s.step_s + s.drain_s + STARTUP_S)
                + len(f.kinds) * (f.run_s + f.startup_s + STARTUP_S)
                + len(m.triggers) * (m.run_s + STARTUP_S))

    @property
    def total_s(self) -> float:
        return self.arch_s * sum(len(self.archs_of(b)) for b in self.builds)

    def to_dict(self) -> dict[str, Any]:
        d = json.loads(self.model_dump_json())
        d["bound_ms"] = self.bound_ms
        return d


_TOP = {"architectures", "builds", "build", "request", "capacity_rps", "capacity_from", "sweep",
        "faults", "metastability", "capacity", "guard"}
_PROFILE = _TOP - {"build"}


def parse_overload(data: dict, profile: str | None = None, *,
                   source: str = "<experiment9>") -> Overload:
    """Experiment 9's TOML through the one loader; [capacity] merged onto the shared capacity
    protocol (its bound and open-model keys are what this experiment takes from it)."""
    return parse(Overload, with_capacity_base(data), profile, source=source, top=_TOP,
                 allowed=_PROFILE, flat={"request": {"payload"}})


def load_overload(path: str | Path, profile: str | None = None) -> Overload:
    """The profile's config with its capacities settled (a missing or unclosed source run is
    a ConfigError naming it)."""
    cfg = parse_overload(read(path), profile, source=str(path))
    try:
        return cfg.with_measured_capacities()
    except ValueError as exc:
        raise ConfigError(f"{path} (profile {cfg.profile}): {exc}") from None


# ------------------------------------------------------------------------------- the run


def open_model(cfg: Overload, rate: float, seed_offset: int = 0) -> OpenModel:
    p = cfg.capacity
    return OpenModel(rate=rate, process=p.process, seed=p.seed + seed_offset,
                     inflight_cap=p.inflight_cap, request_timeout_s=p.request_timeout_s,
                     drain_s=cfg.sweep.drain_s, nominal_count=p.nominal_count)


def slowdown_file(services: dict[str, dict[str, Any]]) -> str:
    """Where the model APIs look for the slowdown factor: under their run dir."""
    return f"{services['model-sync']['run_dir']}/faults/model-slowdown"


def deploy_vars(cfg: Overload, name: str, services: dict[str, dict[str, Any]]) -> dict:
    """Extra vars of the build's deploy: its env, plus the slowdown knob on the model APIs."""
    b = cfg.build[name]
    out: dict[str, Any] = {"model_api_env": {**b.model_api_env,
                                             SLOWDOWN_ENV: slowdown_file(services)}}
    if b.scoring_handler_env:
        out["scoring_handler_env"] = dict(b.scoring_handler_env)
    if b.scoring_handler_workers is not None:
        out["scoring_handler_workers"] = b.scoring_handler_workers
    return out


def make_fault(kind: str, lab: Session, arch: str, cfg: Overload) -> Any:
    s = lab.topology.services
    if kind == "none":
        return NoFault()
    if kind == "model_slow":
        return ModelSlow(slowdown_file(s), cfg.faults.slowdown)
    if kind == "model_down":
        return ModelDown(local_supervisor(s, f"model-{arch}"), f"model-{arch}",
                         lab.topology.url(f"model-{arch}") + HEALTH_PATH)
    if kind == "redis_frozen":
        return RedisFrozen(local_supervisor(s, "redis"))
    if kind == "redis_restart":
        return RedisRestarted(local_supervisor(s, "redis"), s["redis"]["url"])
    if kind == "worker_kill":
        return WorkerKilled(local_supervisor(s, f"scoring-{arch}"), f"scoring-{arch}",
                            lab.topology.scoring_url(arch) + HEALTH_PATH)
    if kind == "chunked_trailer":
        return ChunkedTrailer(local_supervisor(s, f"scoring-{arch}"), f"scoring-{arch}",
                              lab.topology.scoring_url(arch),
                              lab.topology.scoring_url(arch) + HEALTH_PATH)
    raise ValueError(f"fault kind {kind!r}: expected one of {', '.join(FAULT_KINDS)}")


class Measure:
    """One build and architecture's measurements on the deployed lab."""

    def __init__(self, lab: Session, cfg: Overload, build: str, arch: str, step: int) -> None:
        self.lab, self.cfg, self.build, self.arch, self.step = lab, cfg, build, arch, step
        self.capacity = cfg.capacity_of(build, arch)
        self.label = f"{build}/{arch}"
        probe = Probe(lab.topology.scoring_url(arch) + predict_path(arch), list(cfg.payload),
                      timeout_s=cfg.capacity.request_timeout_s)
        self.waiter = Waiter(probe, cfg.sweep.recover_max_s, cfg.sweep.recover_tolerance,
                             restart=lambda why: restart_stuck(lab, why),
                             max_idle_ms=cfg.bound_ms)

    def _dir(self, part: str) -> Path:
        return self.lab.run.raw / "locust" / part / self.build / self.arch

    def _load(self, out: Path, rate: float, duration_s: float, what: str) -> LocustResult:
        scenario = Scenario(name=what.split()[0], kind="open", rate=rate, duration_s=duration_s)
        self.lab.progress.say(f"{self.label} {what}: {rate:.1f} req/s for {duration_s:g} s")
        return self.lab.locust(scenario, self.arch, out, arrival="open",
                               payload=list(self.cfg.payload), step=self.step,
                               label=f"{self.label} {what}",
                               open_model=open_model(self.cfg, rate))

    def _recover(self, out: Path, max_s: float) -> dict[str, Any]:
        self.waiter.max_wait_s = max_s
        record = self.waiter.wait(out)
        if not record["recovered"]:
            self.lab.run.warn(f"{self.label}: not recovered after {record['waited_s']:.0f} s "
                              f"({out.relative_to(self.lab.run.path)})")
        return record

    def sweep(self) -> None:
        s, root = self.cfg.sweep, self._dir("sweep")
        self._recover(root / "idle", s.recover_max_s)  # learns the idle latency
        for i, factor in enumerate(s.factors):
            self._load(root / f"{i:02d}_{factor:g}x", factor * self.capacity, s.step_s,
                       f"sweep {factor:g}x")
        record = self._recover(root / "recovery", s.recover_max_s)
        self.lab.progress.say(f"{self.label}: back to idle latency after "
                              f"{record['waited_s']:.1f} s")

    def timeline(self, out: Path, fault: Any, rate: float, before_s: float, on_s: float,
                 after_s: float, startup_s: float, record_file: str) -> dict[str, Any]:
        window = FaultWindow(fault, startup_s + before_s, on_s)
        try:
            with window:
                self._load(out, rate, before_s + on_s + after_s, f"{fault.name} timeline")
        finally:
            write_json_atomic(out / record_file, window.record)
        record = window.record
        for key in ("error", "stop_error"):
            if key in record:
                self.lab.run.warn(f"{self.label} {fault.name}: {record[key]}")
        return record

    def faults(self) -> None:
        f = self.cfg.faults
        for kind in f.kinds:
            out = self._dir("faults") / kind
            self._recover(out / "before", f.recover_max_s)
            self.timeline(out, make_fault(kind, self.lab, self.arch, self.cfg),
                          f.load * self.capacity, f.before_s, f.fault_s, f.after_s,
                          f.startup_s, FAULT_FILE)

    def metastability(self) -> None:
        m, f = self.cfg.metastability, self.cfg.faults
        base = m.load * self.capacity
        for trigger in m.triggers:
            out = self._dir("metastability") / trigger
            self._recover(out / "before", f.recover_max_s)
            if trigger == "model_slow":
                # the fault's own injector, for the trigger's length, at the trigger's load
                self.timeline(out, ModelSlow(slowdown_file(self.lab.topology.services),
                                             f.slowdown),
                              base, m.before_s, m.trigger_s, m.after_s, f.startup_s,
                              TRIGGER_FILE)
                continue
            extra = (m.burst_factor - m.load) * self.capacity
            burst = Burst(self.lab, self.arch, out / "burst",
                          open_model(self.cfg, extra, BURST_SEED_OFFSET), m.trigger_s,
                          tuple(self.cfg.payload))
            # launched before_s after the base load: both streams then take the same Locust
            # start-up, so the burst lands about before_s into the base schedule
            self.timeline(out, burst, base, m.before_s, m.trigger_s, m.after_s, 0.0,
                          TRIGGER_FILE)


def run_overload(cfg: Overload, options: RunOptions,
                 finish: Callable[[Path], Any]) -> Path:
    """Deploy each build, measure each architecture on it, redeploy the default build at the
    end (always); collect; `finish`. Returns the result folder."""
    steps = sum(len(cfg.archs_of(b)) for b in cfg.builds)
    with session(cfg.experiment, options, planned_s=cfg.total_s, steps=steps, guard=cfg.guard,
                 finish=finish, profile=cfg.profile, protocol=cfg.to_dict(),
                 arrival="open", builds=[]) as lab:
        run = lab.run
        records: list[dict[str, Any]] = []
        deployed = False
        slow_file = slowdown_file(lab.topology.services)
        try:
            with sigterm_as_interrupt():
                step = 0
                for i, name in enumerate(cfg.builds, 1):
                    wanted = deploy_vars(cfg, name, lab.topology.services)
                    entry: dict[str, Any] = {"name": name, "deploy_vars": wanted,
                                             "description": cfg.build[name].description}
                    records.append(entry)
                    deployed = True
                    entry["deploy"] = switch(lab, options, wanted,
                                             log=run.raw / "deploy" / f"{i:02d}-{name}.log",
                                             what=f"build {name}")
                    lab.deploy_vars = wanted
                    run.update(builds=records)
                    for arch in cfg.archs_of(name):
                        step += 1
                        m = Measure(lab, cfg, name, arch, step)
                        entry.setdefault("windows", {})[arch] = {"start": time.time()}
                        m.sweep()
                        m.faults()
                        m.metastability()
                        entry["windows"][arch]["end"] = time.time()
                        entry.setdefault("idle_ms", {})[arch] = m.waiter.idle_ms
                        run.update(builds=records)
        finally:
            # a fault's own removal already ran; this is the belt to its braces
            Path(slow_file).unlink(missing_ok=True)
            if deployed:
                run.update(restore_default=switch(
                    lab, options, {}, log=run.raw / "deploy" / "99-restore-default.log",
                    what="the default build again"))
    return run.path
