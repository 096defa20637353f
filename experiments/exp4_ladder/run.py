"""Experiment 4: the delta decomposition. A ladder of variants of the same code (settings, not
copies), each deployed in turn by Ansible, verified, then measured: the latency of one user
(scoring handler, and for sync variants the model API alone: a blocking worker's hold time),
and experiment 3's step load per arrival pattern (breaking point, max requests/s, CPU seconds
per request per service). The default build is redeployed at the end, whatever happened.
The report (report.py beside this module) adds the ceiling model (experiments/analysis/ceiling.py)
and reads only the result folder.

    ladder = load_ladder("experiments/exp4_ladder/config.toml", "quick")
    EXPERIMENT.execute("quick", options)     # experiments/exp4_ladder/__init__.py
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field

from experiments.analysis.breaking_point import BreakingPoint, breaking_point_from_dir
from experiments.analysis.ceiling import workers_in_effect
from experiments.config import Checker, Float, Str, Table, read
from experiments.constants import ARCHS
from experiments.experiment import Finish
from experiments.lab import capacity as capacity_search
from experiments.lab import topology as topology_mod
from experiments.lab.capacity import HINT_GROWTH
from experiments.lab.deploy import DeployError, switch
from experiments.lab.renew import restart_stuck, restart_vars
from experiments.lab.session import RunOptions, Session, session
from experiments.lab.verify import VerifyError
from experiments.protocol import Arch, Arrival, CapacityParams, Protocol, parse_protocol
from experiments.repeats import abba, locust_root
from experiments.results import scenario_entry
from services.settings import SettingsError, check_service_env, settings_from_env

PROBE, LOAD_TEST, CAPACITY = "probe", "load_test", "capacity"
_VARIANT_KEYS = {"name", "description", "sweep", "archs", "arrivals", "model_api_env",
                 "scoring_handler_env", "model_api_workers_per_core",
                 "scoring_handler_workers_per_core"}


class Variant(Table):
    """One rung of the ladder: the default build with the settings it names."""

    name: Str
    description: Str = ""
    # The setting this rung varies, where rungs are points of sweeps (experiment 5's best
    # builds); "" for the ladder's rungs and for the default build every sweep shares.
    sweep: Str = ""
    archs: tuple[Arch, ...] = Field(ARCHS, min_length=1)
    arrivals: tuple[Arrival, ...] = Field(("spread",), min_length=1)
    model_api_env: dict[str, str] = {}
    scoring_handler_env: dict[str, str] = {}
    model_api_workers_per_core: Float | None = Field(None, gt=0)
    scoring_handler_workers_per_core: Float | None = Field(None, gt=0)

    def deploy_vars(self, topology: topology_mod.Topology) -> dict[str, Any]:
        """Extra vars of `ansible-playbook deploy.yml -e`: only what this variant changes
        (nothing for the default build, so the inventory's own settings apply)."""
        out: dict[str, Any] = {}
        if self.model_api_env:
            out["model_api_env"] = dict(self.model_api_env)
        if self.scoring_handler_env:
            out["scoring_handler_env"] = dict(self.scoring_handler_env)
        for role, per_core, service in (
                ("model_api", self.model_api_workers_per_core, "model-sync"),
                ("scoring_handler", self.scoring_handler_workers_per_core, "scoring-sync")):
            if per_core is not None:
                cores = len(topology.services[service].get("cpus") or [0])
                out[f"{role}_workers"] = max(1, round(per_core * cores))
        return out

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()


@dataclass(frozen=True)
class Ladder:
    protocol: Protocol
    variants: tuple[Variant, ...]
    source: str

    @property
    def experiment(self) -> str:
        return self.protocol.experiment

    @property
    def profile(self) -> str:
        return self.protocol.profile

    def runs(self, repeat: int = 1) -> list[tuple[Variant, str, str, str]]:
        """(variant, step, arch, arrival) in the order they run in `repeat` (1-based): the
        variants, and the architectures within each, reversed in even repeats (ABBA)."""
        out = []
        for v in abba(self.variants, repeat):
            archs = abba(v.archs, repeat)
            for arch in archs:
                out.append((v, "probe", arch, "spread"))
                if arch == "sync":
                    out.append((v, "probe-model", arch, "spread"))
            for arrival in v.arrivals:
                for arch in archs:
                    out.append((v, LOAD_TEST, arch, arrival))
            if self.has_capacity and "spread" in v.arrivals:
                # Spread rungs only: the open model has no users to synchronise into bursts,
                # so a bursty-only rung's search would repeat its spread twin's. After the
                # step load, whose throughput is where the search starts.
                out += [(v, CAPACITY, arch, "spread") for arch in archs]
        return out

    @property
    def has_capacity(self) -> bool:
        return any(s.name == CAPACITY for s in self.protocol.scenarios)

    @property
    def total_s(self) -> float:
        p = self.protocol
        per = {"probe": p.scenario(PROBE).total_s, "probe-model": p.scenario(PROBE).total_s,
               LOAD_TEST: p.scenario(LOAD_TEST).total_s}
        if self.has_capacity:
            per[CAPACITY] = p.scenario_s(p.scenario(CAPACITY))
        return sum(per[step] + p.pause_s for _, step, _, _ in self.runs()) * p.repeats

    def to_dict(self) -> dict[str, Any]:
        return {"variants": [v.to_dict() for v in self.variants], "source": self.source}


def _env(c: Checker, where: str, table: Any) -> dict[str, str]:
    c.keys(table, where, set(table) if isinstance(table, dict) else set())
    for key, value in table.items():
        if not isinstance(value, str | int | float | bool):
            raise c.fail(where, f"{key} = {value!r}: expected a string, number or boolean")
    env = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in table.items()}
    try:  # a value the services would refuse stops the run here, not at its deploy
        check_service_env(env)
    except SettingsError as exc:
        raise c.fail(where, str(exc)) from None
    return env


def _variant(c: Checker, i: int, t: Any) -> Variant:
    c.keys(t, f"variants[{i}]", _VARIANT_KEYS)
    where = f"variants.{c.string(t, f'variants[{i}]', 'name')}"
    envs = {key: _env(c, f"{where}.{key}", t.get(key, {}))
            for key in ("model_api_env", "scoring_handler_env")}
    return c.validate(Variant, {**t, **envs}, where)


def parse_ladder(data: dict, profile: str | None = None, *,
                 source: str = "<experiment4>") -> Ladder:
    """Validate experiment 4's TOML: the protocol part by protocol.parse_protocol, the
    [[variants]] and each profile's `variants` selection here."""
    c = Checker(source)
    data = dict(data)
    tables = data.pop("variants", None)
    if not isinstance(tables, list) or not tables:
        raise c.fail("variants", "no [[variants]] defined")
    variants = [_variant(c, i, t) for i, t in enumerate(tables)]
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise c.fail("variants", f"duplicate variant names in {names}")
    profiles = {k: dict(v) if isinstance(v, dict) else v
                for k, v in (data.get("profiles") or {}).items()}
    selections: dict[str, list[str]] = {}
    for pname, ptable in profiles.items():
        if isinstance(ptable, dict) and "variants" in ptable:
            chosen = ptable.pop("variants")
            if not isinstance(chosen, list) or not chosen:
                raise c.fail(f"profiles.{pname}", "variants: expected a non-empty list of names")
            unknown = [x for x in chosen if x not in names]
            if unknown:
                raise c.fail(f"profiles.{pname}", f"unknown variant {unknown[0]!r} "
                                                  f"(have: {', '.join(names)})")
            selections[pname] = chosen
    data["profiles"] = profiles
    protocol = parse_protocol(data, profile, source=source)
    for needed in (PROBE, LOAD_TEST):
        try:
            protocol.scenario(needed)
        except KeyError:
            raise c.fail("scenarios", f"experiment 4 needs a scenario {needed!r}") from None
    if protocol.scenario(PROBE).kind != "constant" or protocol.scenario(PROBE).users != 1:
        raise c.fail("scenarios.probe", "the probe must be a constant scenario with users = 1")
    if protocol.scenario(LOAD_TEST).kind != "ramp":
        raise c.fail("scenarios.load_test", "the load test must be a ramp")
    if any(s.name == CAPACITY and s.kind != "capacity" for s in protocol.scenarios):
        raise c.fail("scenarios.capacity", "the capacity scenario must have kind = 'capacity'")
    chosen = selections.get(protocol.profile)
    if chosen:
        variants = [v for v in variants if v.name in chosen]
    return Ladder(protocol, tuple(variants), source)


def load_ladder(path: str | Path, profile: str | None = None) -> Ladder:
    return parse_ladder(read(path), profile, source=str(path))


# ------------------------------------------------------------------------------- running


def workers_of(topology: topology_mod.Topology, variant: Variant) -> dict[str, Any]:
    """Workers (and threads) in effect per service, from the deployed topology."""
    out: dict[str, Any] = {}
    for service in ("model-sync", "model-async", "scoring-sync", "scoring-async"):
        s = topology.services[service]
        arch = service.rsplit("-", 1)[1]
        env = variant.model_api_env if service.startswith("model") else variant.scoring_handler_env
        entry = {"workers": workers_in_effect(arch, len(s.get("cpus") or []), s.get("workers")),
                 "cpus": s.get("cpus"), "env": dict(env)}
        if arch == "sync":
            # the services' own reader: its defaults are the ones the deployed workers use
            settings = settings_from_env(env)
            entry["worker_class"] = settings.sync_worker.value
            if entry["worker_class"] == "gthread":
                entry["threads"] = settings.gthread_threads
        out[service] = entry
    return out


def _measure(lab: Session, ladder: Ladder, variant: Variant, step_no: list[int],
             steps: int, repeat: int = 1, hints: dict | None = None) -> None:
    run, p = lab.run, ladder.protocol
    root = locust_root(run.raw, repeat, p.repeats)
    ramps: dict[str, BreakingPoint] = {}  # arch -> this rung's spread step load
    for v, step, arch, arrival in ladder.runs(repeat):
        if v is not variant:
            continue
        step_no[0] += 1
        if step == CAPACITY:
            _capacity(lab, p, variant, arch, step_no[0], steps, repeat, root, hints,
                      ramp=ramps.get(arch))
            time.sleep(p.pause_s)
            continue
        scenario = p.scenario(LOAD_TEST if step == LOAD_TEST else PROBE)
        role, url = "scoring", None
        if step == "probe-model":
            role, url = "model", lab.topology.url(f"model-{arch}")
        sub = f"{step}-{arrival}" if step == LOAD_TEST else step
        out = root / variant.name / sub / arch
        label = f"{variant.name} {sub} {arch}" + (f" r{repeat}" if p.repeats > 1 else "")
        lab.progress.say(f"step {step_no[0]}/{steps} {label} ({scenario.total_s:.0f} s)")
        result = lab.locust(scenario, arch, out, arrival=arrival, payload=p.payload,
                            step=step_no[0], label=label, url=url)
        extra: dict[str, Any] = {"variant": variant.name, "step": sub, "role": role,
                                 "repeat": repeat}
        if step == LOAD_TEST:
            bp = breaking_point_from_dir(out, p.analysis.breaking_point,
                                         pacing_s=scenario.pacing_s)
            extra["breaking_point"] = bp.to_dict()
            lab.progress.say(f"{label}: {bp.message}")
            if arrival == "spread":
                ramps[arch] = bp
        run.add_scenario(scenario_entry(run, scenario, arch, result, **extra))
        time.sleep(p.pause_s)


def capacity_dir(root: Path, variant: str, arch: str) -> Path:
    """Where one rung's capacity search keeps its steps under a repeat's Locust folder
    (experiments.repeats.locust_root; the report reads them back)."""
    return root / variant / CAPACITY / arch


def search_start(params: CapacityParams, previous: float | None,
                 ramp: BreakingPoint | None) -> tuple[float | None, float, str]:
    """Where a rung's search starts (hint rate, growth, why): at the previous repeat's
    capacity, growing by little; else at the throughput its step load reached (at the knee,
    or its best if it had none), growing as configured: the rungs' capacities span ~1 to ~525
    req/s (the quick run of 2026-12-01), and a search from one start_rate for all of them spent
    most of its steps getting there (the original async build's search took 9 minutes)."""
    if previous:
        return previous, HINT_GROWTH, "the previous repeat's capacity"
    if ramp is not None:
        rate = ramp.achieved_rps if ramp.found and ramp.achieved_rps else ramp.max_achieved_rps
        if rate and rate > 0:
            where = "at its knee" if ramp.found else "at its best (no knee)"
            return rate, params.growth, f"the step load's throughput {where}"
    return None, params.growth, "the configured start_rate"


def _capacity(lab: Session, p: Protocol, variant: Variant, arch: str, step: int,
              steps: int, repeat: int = 1, root: Path | None = None,
              hints: dict | None = None, ramp: BreakingPoint | None = None) -> None:
    """The rung's capacity under the shared bound, searched from search_start (the previous
    repeat's capacity is kept in `hints`); the live result kept in the manifest (capacity:
    repeat 1's, by variant and arch; capacity_repeats: every repeat's) beside the one the
    report re-derives from the steps."""
    params = p.capacity
    root = root if root is not None else locust_root(lab.run.raw, repeat, p.repeats)
    hints = hints if hints is not None else {}
    label = f"{variant.name} capacity {arch} (p99 <= {params.p99_bound_ms:g} ms)"
    hint, growth, why = search_start(params, hints.get((variant.name, arch)), ramp)
    lab.progress.say(f"step {step}/{steps} {label}, from {why}"
                     + (f" ({hint:.1f} req/s)" if hint else ""))
    found = capacity_search.search(lab, params, arch, capacity_dir(root, variant.name, arch),
                                   p99_ms=params.p99_bound_ms, payload=p.payload, step=step,
                                   label=label, guard=p.guard, hint_rate=hint,
                                   hint_growth=growth,
                                   restart=lambda why: restart_stuck(lab, why),
                                   idle_key=f"{variant.name}/{arch}", repeat=repeat)
    lab.progress.say(f"{label}: {found.status}, {found.capacity} req/s "
                     f"(first failing {found.first_failing})")
    if found.capacity:
        hints[(variant.name, arch)] = found.capacity
    entry = {"shared": {"p99_bound_ms": params.p99_bound_ms, **found.to_dict()},
             "start": {"rate": hint or params.start_rate, "growth": growth, "from": why}}
    if repeat == 1:
        capacity = lab.run.manifest.get("capacity") or {}
        capacity.setdefault(variant.name, {})[arch] = entry
        lab.run.update(capacity=capacity)
    per = lab.run.manifest.get("capacity_repeats") or {}
    per.setdefault(str(repeat), {}).setdefault(variant.name, {})[arch] = entry
    lab.run.update(capacity_repeats=per)


def run(ladder: Ladder, options: RunOptions, finish: Finish) -> Path:
    """Deploy, verify and measure every variant of the ladder; redeploy the default build
    at the end (always); collect; report. Returns the result folder."""
    p = ladder.protocol
    steps = len(ladder.runs()) * p.repeats
    with session(p.experiment, options, planned_s=ladder.total_s, steps=steps, guard=p.guard,
                 finish=finish, profile=p.profile, protocol=p.to_dict(), arrival=p.arrival,
                 ladder=ladder.to_dict(), variants=[]) as lab:
        run = lab.run
        deploy_dir = run.raw / "deploy"
        current: dict[str, Any] | None = None  # unknown until the first deploy
        records: list[dict[str, Any]] = []
        step_no = [0]
        hints: dict[tuple[str, str], float] = {}
        try:
            for k in range(1, p.repeats + 1):
                for i, variant in enumerate(abba(ladder.variants, k), 1):
                    extra_vars = variant.deploy_vars(lab.topology)
                    # From the second repeat on every rung is redeployed with a new restart
                    # token, so its services restart even when the previous rung had the
                    # same settings (experiments/lab/renew.py): the spread includes that.
                    wanted = (restart_vars(extra_vars, f"{run.path.name}-r{k}-{variant.name}")
                              if k > 1 else extra_vars)
                    entry: dict[str, Any] = {**variant.to_dict(), "deploy_vars": wanted,
                                             "repeat": k}
                    if wanted != current:
                        current = None  # unknown until this deploy and its verify succeed
                        name = (f"{i:02d}-{variant.name}.log" if p.repeats == 1
                                else f"r{k}-{i:02d}-{variant.name}.log")
                        try:
                            entry["deploy"] = switch(lab, options, wanted, log=deploy_dir / name,
                                                     what=f"variant {variant.name}")
                        except (DeployError, VerifyError) as exc:
                            # A variant that does not deploy or answer is a finding, not a
                            # reason to lose the rest of the ladder: record it and go on.
                            entry["failed"] = str(exc)
                            records.append(entry)
                            run.update(variants=records)
                            run.warn(f"variant {variant.name} was not measured: {exc}")
                            lab.progress.say(f"WARNING variant {variant.name} failed: {exc}")
                            continue
                        current = wanted
                        lab.deploy_vars = wanted  # what a stuck stack is restarted with
                    else:
                        entry["deploy"] = {"skipped": "same deployment as the previous variant"}
                    entry["workers"] = workers_of(lab.topology, variant)
                    entry["window_start"] = time.time()
                    records.append(entry)
                    _measure(lab, ladder, variant, step_no, steps, k, hints)
                    entry["window_end"] = time.time()
                    run.update(variants=records)
        finally:
            if current != {}:
                restore = switch(lab, options, {}, log=deploy_dir / "99-restore-default.log",
                                 what="the default build again")
                run.update(restore_default=restore)
            else:
                run.update(restore_default={"skipped": "the last variant was the default build"})
    return run.path
