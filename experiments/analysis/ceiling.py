"""A capacity model of a serving chain: predict the most requests/s a deployed variant can
serve from quantities measured in the same run, and say which stage binds.

Two kinds of stage, and the smallest capacity along the chain wins:

- **workers** (a blocking stack): a worker (or thread) is held for the whole of each call it
  serves. By Little's law, ``busy slots = arrival rate x hold time``, so the stage saturates at
  ``slots / (hold_s x calls_per_request)`` requests/s. A sync scoring worker is held for
  Redis + its two sequential model calls (about the 1-user latency); a sync model API worker is
  held for about one sleep per call and sees two calls per scoring request.
- **cpu** (event loops, and every stack in the end): services pinned to CPU sets that overlap
  share those cores, so the set saturates at ``cores / sum(CPU seconds per request)`` of the
  services on it. A service runs its Python on at most one core per process (the GIL holds for
  gthread's threads too), so when its processes are fewer than its cores it saturates first, at
  ``processes / its CPU seconds per request``: a CPU-bound model API with one uvicorn worker on
  two cores uses one of them.

An event-loop service (uvicorn, or a meinheld worker whose sockets are patched to greenlets)
has no worker stage: its concurrency is bounded only by CPU. ``service_slots`` says which lab
configuration gives which kind, reading a variant's env as the services do
(services/settings.py) and counting a worker's requests with the services' own rule
(services/workers.py).

Pure functions over numbers; the experiment supplies the measurements.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from services.settings import Arch, Role, Server, Settings, SyncWorker, settings_from_env
from services.workers import sync_requests_per_worker, worker_count


def model_calls(scoring_env: Mapping[str, Any]) -> int:
    """Model API calls per scoring request, read from the scoring handler's env as it reads it
    (the original's 2 unless SCORING_LAB_MODEL_CALLS says otherwise)."""
    return settings_from_env(scoring_env).model_calls


def workers_in_effect(arch: str, cores: int, configured: int | None) -> int:
    """Workers a service runs: the configured count, else the services' auto rule on its
    pinned cores (at least one core counted: a service whose CPU set is not recorded)."""
    configured = None if configured is None else int(configured)
    return worker_count(Settings.model_construct(workers=configured), Arch(arch), max(1, cores))


def service_slots(role: str, arch: str, workers: int, env: Mapping[str, Any]) -> int | None:
    """Requests a service can hold at once, or None for an event loop (bounded by CPU only).

    role: "scoring" or "model"; env: its SCORING_LAB_* variables (variant switches), read as
    the service reads its environment: a value the service would refuse raises SettingsError
    with the service's own message.
    - async (uvicorn): event loop -> None;
    - sync: workers x the requests one worker holds (services/workers.py): 1 for meinheld and
      gunicorn "sync", the thread count for "gthread", ``gevent_connections`` for "gevent"
      (gevent patches sockets and time.sleep, so the model API's wait is cooperative too);
    - except, role-specific, meinheld with SCORING_LAB_MEINHELD_PATCH: its patch covers sockets
      only, so the scoring handler (whose waits are Redis and HTTP sockets) waits
      cooperatively -> None, while the model API's wait is time.sleep, which still blocks the
      worker -> workers.
    """
    settings = settings_from_env(env)
    if Arch(arch) is Arch.ASYNC:
        return None
    if (Role(role) is Role.SCORING and settings.sync_worker is SyncWorker.MEINHELD
            and settings.meinheld_patch):
        return None
    return workers * sync_requests_per_worker(settings)


def sync_worker_kind(settings: Settings) -> dict[str, Any]:
    """What runs a sync service's requests, as a run records it: ``worker_class`` (the
    gunicorn worker class, or "granian", which has none) and ``threads`` where a worker runs
    the app in threads (gthread's threads, granian's blocking threads)."""
    if settings.server is Server.GRANIAN:
        return {"worker_class": "granian", "threads": settings.granian_blocking_threads}
    kind: dict[str, Any] = {"worker_class": settings.sync_worker.value}
    if settings.sync_worker is SyncWorker.GTHREAD:
        kind["threads"] = settings.gthread_threads
    return kind


def workers_label(name: str, entry: Mapping[str, Any]) -> str:
    """A service's workers as the reports print them ("scoring-sync 2x32 gthread"). A run
    recorded before granian existed in ``sync_worker_kind`` recorded its sync worker class
    alone; its recorded env says what really ran, so a sync entry is read from it again."""
    kind = dict(entry)
    if entry.get("worker_class") and entry.get("env") is not None:
        kind.update(sync_worker_kind(settings_from_env(entry["env"])))
    return (f"{name} {kind.get('workers')}" + (f"x{kind['threads']}" if kind.get("threads")
                                              else "")
            + (f" {kind['worker_class']}" if kind.get("worker_class") else ""))


@dataclass(frozen=True)
class ServiceInput:
    """One service on a request's path. slots None: event loop (no worker stage). hold_s:
    seconds a slot is held per call; calls_per_request: calls per scoring request;
    cpu_s_per_request: CPU seconds per scoring request (None: not measured); processes: its
    worker processes (None: not known, no per-process limit)."""

    name: str
    cpus: tuple[int, ...]
    slots: int | None = None
    hold_s: float | None = None
    calls_per_request: int = 1
    cpu_s_per_request: float | None = None
    processes: int | None = None


@dataclass(frozen=True)
class Stage:
    name: str  # "workers:<service>" or "cpu:<cpu list>"
    kind: str  # "workers" or "cpu"
    capacity_rps: float
    formula: str  # the numbers that give capacity_rps, as a sentence fragment
    # The services it limits; for a CPU set, by CPU per request, the largest (the one to make
    # cheaper) first.
    services: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Ceiling:
    predicted_rps: float | None
    binding: Stage | None
    stages: tuple[Stage, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {
            "predicted_rps": self.predicted_rps,
            "binding": self.binding.to_dict() if self.binding else None,
            "stages": [s.to_dict() for s in self.stages],
            "notes": list(self.notes),
        }

    def sentence(self) -> str:
        if self.binding is None:
            return "no prediction (" + "; ".join(self.notes or ("nothing measured",)) + ")"
        return (f"{self.predicted_rps:.1f} req/s, bound by {self.binding.name} "
                f"({self.binding.formula})")


def worker_capacity(slots: int, hold_s: float, calls_per_request: int = 1) -> float:
    """Little's law at saturation: slots / (hold time x calls per request), requests/s."""
    if slots <= 0 or hold_s <= 0 or calls_per_request <= 0:
        raise ValueError(f"need positive slots, hold and calls, got {slots}, {hold_s}, "
                         f"{calls_per_request}")
    return slots / (hold_s * calls_per_request)


def cpu_capacity(cores: int, cpu_s_per_request: float) -> float:
    """Requests/s a set of cores serves when each request costs cpu_s_per_request in all."""
    if cores <= 0 or cpu_s_per_request <= 0:
        raise ValueError(f"need positive cores and CPU per request, got {cores}, "
                         f"{cpu_s_per_request}")
    return cores / cpu_s_per_request


def cpu_groups(cpu_sets: Iterable[Sequence[int]]) -> list[frozenset[int]]:
    """Merge CPU sets that overlap (services on them compete for the same cores)."""
    groups: list[set[int]] = []
    for cpus in cpu_sets:
        merged = set(cpus)
        rest = []
        for g in groups:
            if g & merged:
                merged |= g
            else:
                rest.append(g)
        groups = [*rest, merged]
    return sorted((frozenset(g) for g in groups if g), key=min)


def _cpu_label(cpus: frozenset[int]) -> str:
    return ",".join(str(c) for c in sorted(cpus))


def predict(services: Sequence[ServiceInput]) -> Ceiling:
    """Capacity of each stage of the chain; the smallest is the predicted ceiling."""
    stages: list[Stage] = []
    notes: list[str] = []
    for s in services:
        if s.slots is None:
            continue
        if s.hold_s is None or not s.hold_s > 0:
            notes.append(f"{s.name}: {s.slots} slots but no measured hold time")
            continue
        cap = worker_capacity(s.slots, s.hold_s, s.calls_per_request)
        calls = f" x {s.calls_per_request} calls" if s.calls_per_request != 1 else ""
        stages.append(Stage(f"workers:{s.name}", "workers", cap,
                            f"{s.slots} slots / ({s.hold_s * 1000:.1f} ms held{calls})",
                            (s.name,)))
    for s in services:
        usable = len(set(s.cpus))
        if s.processes is None or s.cpu_s_per_request is None or not s.cpu_s_per_request > 0:
            continue
        if 0 < s.processes < usable:
            stages.append(Stage(
                f"cpu:{s.name}", "cpu", cpu_capacity(s.processes, s.cpu_s_per_request),
                f"{s.processes} process(es) of {usable} cores, one core each at most / "
                f"({s.cpu_s_per_request * 1000:.2f} ms CPU per request)", (s.name,)))
    for group in cpu_groups(s.cpus for s in services if s.cpus):
        members = [s for s in services if set(s.cpus) & group]
        measured = [s for s in members if s.cpu_s_per_request is not None]
        missing = [s.name for s in members if s.cpu_s_per_request is None]
        if missing:
            notes.append(f"CPU {_cpu_label(group)}: no CPU per request for {', '.join(missing)}")
        total = sum(s.cpu_s_per_request for s in measured)
        if not measured or not total > 0:
            continue
        parts = " + ".join(f"{s.name} {s.cpu_s_per_request * 1000:.2f}" for s in measured)
        largest_first = sorted(measured, key=lambda s: -s.cpu_s_per_request)
        stages.append(Stage(f"cpu:{_cpu_label(group)}", "cpu", cpu_capacity(len(group), total),
                            f"{len(group)} core(s) / ({parts} ms CPU per request)",
                            tuple(s.name for s in largest_first)))
    if not stages:
        return Ceiling(None, None, (), tuple(notes))
    binding = min(stages, key=lambda st: st.capacity_rps)
    return Ceiling(binding.capacity_rps, binding, tuple(stages), tuple(notes))


def closeness(measured_rps: float | None, predicted_rps: float | None) -> float | None:
    """measured / predicted (1.0 = the variant reaches its ceiling)."""
    if measured_rps is None or predicted_rps is None or not predicted_rps > 0:
        return None
    if isinstance(measured_rps, float) and math.isnan(measured_rps):
        return None
    return measured_rps / predicted_rps
