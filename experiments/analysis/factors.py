"""Where a gap between two builds comes from (issue 26): pairs of builds that differ in exactly
one factor (server, framework, HTTP client, concurrency model, uvicorn's parser or loop),
measured in the same run, each pair's capacity ratio and CPU per request difference paired per
repeat, and each build's 1-user overhead over the model's floor. Pure functions over numbers and
settings (no I/O): experiment 5's config checks its declared pairs here, its report analyses
them here.

A build is what its services would run with: each service's settings as the services read
their env (services.settings.settings_from_env) and the workers the deploy gives each. Two
builds "differ in exactly one factor" when every setting that differs between them belongs to
the factor and at least one does (FACTORS); the framework pair is defined apart (FRAMEWORK).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from services.settings import Arch, Server, settings_from_env

ROLES = ("model_api", "scoring_handler")
# The workers a deploy gives a service: a build's setting like the env's (its pseudo-name).
WORKERS = "workers"
# Settings the deploy sets per service, never an experiment's variant: not part of a build.
DEPLOY_SET = frozenset({"host", "port", "workers", "service", "run_dir"})
# Variables a later repeat's deploy carries that change nothing the service runs
# (experiments.lab.renew.RESTART_VAR; named here so this module stays pure).
IGNORED_VARS = frozenset({"SCORING_LAB_RESTART_TOKEN"})

# A server's own knobs mean nothing on another server (gthread's threads on granian, uvicorn's
# parser on gunicorn), so the server factor is the server with its knobs: gthread 2x32 against
# granian with 32 blocking threads changes the server and nothing else a request meets.
_SERVER_KNOBS = frozenset({"sync_worker", "meinheld_patch", "gthread_threads",
                           "gevent_connections", "granian_blocking_threads", "uvicorn_http",
                           "uvicorn_loop"})
# How one server runs the handler concurrently: worker type and threads, workers, and whether
# the async handler awaits its model calls one after the other.
_CONCURRENCY = frozenset({"sync_worker", "meinheld_patch", "gthread_threads",
                          "gevent_connections", "granian_blocking_threads",
                          "sequential_model_calls", WORKERS})
FRAMEWORK = "framework"
FACTORS: dict[str, frozenset[str]] = {
    "server": frozenset({"server"}) | _SERVER_KNOBS,
    "http client": frozenset({"http_client"}),
    "concurrency model": _CONCURRENCY,
    "uvicorn parser": frozenset({"uvicorn_http"}),
    "uvicorn loop": frozenset({"uvicorn_loop"}),
    "uvicorn parser and loop": frozenset({"uvicorn_http", "uvicorn_loop"}),
    # The framework pair (Flask/WSGI sync against FastAPI/ASGI async) necessarily changes the
    # architecture, and with it everything only one architecture reads: the sync stack's
    # worker type and threads, the async handler's HTTP client, uvicorn's parser and loop,
    # the async model API's batching, and the workers each architecture is given. Those are
    # the framework's own means to its concurrency, part of the factor. "Exactly one factor"
    # then means: the architectures differ, every setting both architectures read is the same
    # in each service role (model API with model API, handler with handler), and the server
    # is the same named server, not `default` (which is gunicorn for sync and uvicorn for
    # async: two servers under one name).
    FRAMEWORK: frozenset(),
}
ARCH_OWN = frozenset({
    "sync_worker", "meinheld_patch", "gthread_threads", "gevent_connections",
    "granian_blocking_threads", "http_client", "uvicorn_http", "uvicorn_loop",
    "sequential_model_calls", "blocking_redis", "model_batching", "model_batch_max_size",
    "model_batch_max_wait_ms", WORKERS})

# Under this many repeats no stated-confidence interval is given (issue 21): the spread of the
# paired figures is their min-max range, and is called one.
MIN_INTERVAL_REPEATS = 5
FOUND = "found"
LOWER_BOUND_STATUSES = ("above_range", "unfinished")
UPPER_BOUND_STATUSES = ("below_range",)


class PairError(ValueError):
    """A declared pair whose builds differ in more (or other) than its factor."""


@dataclass(frozen=True)
class Build:
    """One build as its services run it: per role the settings that differ from nothing the
    deploy sets (a dict field -> value) and the workers the deploy gives it (None: the
    inventory's)."""

    name: str
    arch: str
    settings: Mapping[str, Mapping[str, Any]]
    workers: Mapping[str, Any] = field(default_factory=dict)

    def value(self, role: str, key: str) -> Any:
        if key == WORKERS:
            return self.workers.get(role)
        return self.settings[role][key]


def build_of(name: str, arch: str, envs: Mapping[str, Mapping[str, Any]],
             workers: Mapping[str, Any] | None = None) -> Build:
    """A Build from each role's env (ROLES; a missing role: no variables) read as the services
    read it, and the workers the deploy gives each role (a count or per-core figure, compared
    as given). Raises SettingsError on an env the services would refuse."""
    settings = {}
    for role in ROLES:
        env = {k: v for k, v in (envs.get(role) or {}).items() if k not in IGNORED_VARS}
        s = settings_from_env(env)
        settings[role] = {k: v for k, v in s.model_dump().items() if k not in DEPLOY_SET}
    return Build(name, arch, settings, dict(workers or {}))


def differences(a: Build, b: Build, keys: Sequence[str] | None = None) -> list[str]:
    """'role.setting' for every setting (and the workers) that differs between the builds,
    over ``keys`` (default: every setting)."""
    out = []
    for role in ROLES:
        names = list(keys) if keys is not None else [*a.settings[role], WORKERS]
        for k in names:
            if a.value(role, k) != b.value(role, k):
                out.append(f"{role}.{k}")
    return out


def check_pair(factor: str, a: Build, b: Build) -> list[str]:
    """What differs between a pair's builds, once it is sure to be only ``factor``: the
    'role.setting' names that differ (for the framework pair, the architecture's). Raises
    PairError naming the pair and the settings beyond the factor."""
    where = f"pair {factor!r} ({a.name} vs {b.name})"
    if factor not in FACTORS:
        raise PairError(f"{where}: unknown factor {factor!r} (have: {', '.join(FACTORS)})")
    if factor == FRAMEWORK:
        if a.arch == b.arch:
            raise PairError(f"{where}: a framework pair sets a sync build beside an async one, "
                            f"both are {a.arch}")
        shared = [k for k in a.settings[ROLES[0]] if k not in ARCH_OWN]
        extra = differences(a, b, shared)
        if extra:
            raise PairError(f"{where}: differ in {', '.join(extra)} as well as the framework")
        servers = {a.value(r, "server") for r in ROLES}
        if Server.DEFAULT in servers or Server.DEFAULT.value in servers:
            raise PairError(f"{where}: on the `default` server a sync build runs gunicorn and "
                            "an async one uvicorn: the server changes with the framework")
        return [f"arch {a.arch} -> {b.arch}"]
    if a.arch != b.arch:
        raise PairError(f"{where}: differ in architecture ({a.arch} vs {b.arch}); only a "
                        f"{FRAMEWORK!r} pair may")
    diff = differences(a, b)
    extra = [d for d in diff if d.split(".", 1)[1] not in FACTORS[factor]]
    if extra:
        raise PairError(f"{where}: differ in {', '.join(extra)} beyond the factor {factor!r}")
    if not diff:
        raise PairError(f"{where}: the two builds are the same: nothing of {factor!r} differs")
    return diff


# ------------------------------------------------------------------------- the model floor


def model_floor_ms(calls: int, sequential: bool, sleep_min_s: float,
                   sleep_max_s: float) -> float:
    """The median of the model's sleep over one scoring request: what a request at 1 user
    cannot beat (the one place the floors are computed). Each call sleeps U(min, max):
    sequential calls (sync, or async told to) add up, and a sum of iid uniforms is symmetric,
    so its median is calls x (min + max) / 2 (90 ms for two of U(40, 50) ms); concurrent calls
    (async) end with the slowest, whose CDF is ((x - min) / (max - min))^calls, so its median
    is min + (max - min) 0.5^(1/calls) (40 + 10 sqrt(0.5) = 47.07 ms for two)."""
    if calls < 1 or not 0 <= sleep_min_s <= sleep_max_s:
        raise ValueError(f"a model floor needs calls >= 1 and 0 <= sleep_min_s <= sleep_max_s, "
                         f"got calls={calls!r}, sleep {sleep_min_s!r}..{sleep_max_s!r}")
    if sequential or calls == 1:
        return calls * (sleep_min_s + sleep_max_s) / 2 * 1000
    return (sleep_min_s + (sleep_max_s - sleep_min_s) * 0.5 ** (1 / calls)) * 1000


def floor_of(build: Build) -> float:
    """A build's model floor from its settings: the handler's calls and how it makes them,
    the model API's sleep."""
    scoring, model = build.settings["scoring_handler"], build.settings["model_api"]
    sequential = Arch(build.arch) is Arch.SYNC or bool(scoring["sequential_model_calls"])
    return model_floor_ms(scoring["model_calls"], sequential, model["sleep_min_s"],
                          model["sleep_max_s"])


def overhead(build: Build, p50_1_user_ms: float | None) -> dict[str, Any]:
    """The 1-user p50 over the model floor: the milliseconds the stack adds at no load."""
    floor = floor_of(build)
    ok = p50_1_user_ms is not None and math.isfinite(p50_1_user_ms)
    return {"build": build.name, "arch": build.arch, "floor_ms": floor,
            "p50_1_user_ms": p50_1_user_ms if ok else None,
            "overhead_ms": p50_1_user_ms - floor if ok else None}


# ----------------------------------------------------------------------------- the pairs


def _bound_word(status: str | None, capacity: float | None) -> str:
    if capacity is None:  # an unfinished search that passed no rate is no lower bound
        return f"has no capacity ({status or 'no search'})"
    if status in LOWER_BOUND_STATUSES:
        return "is a lower bound"
    if status in UPPER_BOUND_STATUSES:
        return "is an upper bound"
    return f"is not a found capacity ({status or 'no search'})"


def spread(values: Sequence[float]) -> dict[str, Any] | None:
    """The spread of paired per-repeat figures: their median and min-max range, called a
    range (no stated confidence under MIN_INTERVAL_REPEATS repeats; with 3 repeats the range
    covers the median about 75 % of the time)."""
    if not values:
        return None
    return {"median": statistics.median(values), "low": min(values), "high": max(values),
            "n": len(values), "kind": "range"}


def side_record(side: Mapping[str, Any]) -> dict[str, Any]:
    """A side as the report keeps it: its per-repeat figures and one ``status`` for the side,
    FOUND only when every repeat's search closed (else the first repeat's that did not), so
    that a reader of report.json finds a side's status where every search's is: one word."""
    statuses = list(side["statuses"])
    status = next((s for s in statuses if s != FOUND), FOUND) if statuses else None
    return {**side, "status": status}


def analyse_pair(factor: str, a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """One pair's attribution. ``a``, ``b``: {"build": name, "capacity": [per repeat],
    "statuses": [per repeat], "cpu_ms": [per repeat, or one figure for the run]}, repeats in the
    same order on both sides (the same repeat: the same run conditions). Ratios are b / a per
    repeat, CPU differences b - a. Where any repeat of either side did not close its search
    (a lower or an upper bound, no capacity), nothing is attributed: the pair is undecided and
    says which build stops it (its CPU difference too: nothing of the pair is a finding).
    With ``cpu_ms`` one figure per repeat, the differences pair per repeat as the ratios do."""
    out: dict[str, Any] = {"factor": factor, "a": side_record(a), "b": side_record(b)}
    caps = [list(a["capacity"]), list(b["capacity"])]
    stats = [list(a["statuses"]), list(b["statuses"])]
    if len(caps[0]) != len(caps[1]) or any(len(c) != len(s) for c, s in zip(caps, stats,
                                                                           strict=True)):
        raise ValueError(f"pair {factor!r} ({a['build']} vs {b['build']}): per-repeat figures "
                         f"of different lengths: {caps}, {stats}")
    out["repeats"] = len(caps[0])
    why = []
    for side in (a, b):
        for k, (cap, status) in enumerate(zip(side["capacity"], side["statuses"], strict=True)):
            if status != FOUND or cap is None:
                rep = f" in repeat {k + 1}" if len(side["capacity"]) > 1 else ""
                why.append(f"{side['build']} {_bound_word(status, cap)}{rep}")
    cpu_a, cpu_b = list(a.get("cpu_ms") or []), list(b.get("cpu_ms") or [])
    diffs = [y - x for x, y in zip(cpu_a, cpu_b, strict=False)
             if x is not None and y is not None]
    out["cpu_ms_diff"] = spread(diffs)
    if why:  # the per-side figures stay on show; the pair attributes nothing, CPU included
        out.update(decided=False, undecided="undecided: " + "; ".join(why), ratio=None,
                   ratios=[], cpu_ms_diff=None)
        return out
    ratios = [y / x for x, y in zip(caps[0], caps[1], strict=True)]
    out.update(decided=True, undecided=None, ratios=ratios, ratio=spread(ratios))
    return out


def path_steps(path: Sequence[str], pairs: Sequence[Mapping[str, Any]]
               ) -> list[tuple[Mapping[str, Any], bool]]:
    """The pairs a path of builds walks (each consecutive two a declared pair, either way),
    with whether the step runs the pair backwards (b -> a). Raises PairError on a step no
    pair declares."""
    out = []
    for x, y in zip(path, path[1:], strict=False):
        step = next(((p, False) for p in pairs if (p["a"], p["b"]) == (x, y)), None) or next(
            ((p, True) for p in pairs if (p["a"], p["b"]) == (y, x)), None)
        if step is None:
            raise PairError(f"path {' -> '.join(path)}: no pair declares {x} -> {y}")
        out.append(step)
    return out


def waterfall(path: Sequence[str], analysed: Sequence[Mapping[str, Any]]
              ) -> list[dict[str, Any]]:
    """Per step of a path: the factor, the builds, and its median capacity ratio (inverted for
    a step walked backwards; None where the pair is undecided), and the running product."""
    keyed = [{**p, "a": p["a"]["build"], "b": p["b"]["build"]} for p in analysed]
    out, total = [], 1.0
    for p, back in path_steps(path, keyed):
        r = p["ratio"]["median"] if p.get("ratio") else None
        if r is not None and back:
            r = 1 / r
        total = total * r if r is not None and total is not None else None
        out.append({"factor": p["factor"], "from": p["b"] if back else p["a"],
                    "to": p["a"] if back else p["b"], "ratio": r, "cumulative": total,
                    "undecided": p.get("undecided")})
    return out
