"""Reduce sampler files to numbers for a measured window.

Pure functions over lists of sample dicts (load_samples is the only one that reads a file), so the
analysis can run on files collected from several hosts, long after the run.

Two file forms hold the same samples: the sampler appends JSONL (one object per line, safe to
tail and to cut short); a result folder stores CSV (write_samples_csv: one row per sample, one
column per value, named by its path, e.g. ``services.redis.cpu_user_s`` or
``cpu_times_per_core[1].idle``), which is lossless, diffable and about a third of the size,
because the JSONL repeats every key name in every line. The services' TCP connection records
are kept out of that CSV (one column per connection, repeated every row, made it huge): they go
to <host>.tcp.jsonl beside it, a line per change (hardware/tcplog.py); write_resources writes
both, load_samples of the CSV puts them back. A CSV from before that still holds them inline.

Counters in a sample are cumulative; usage in a window is their increase between the first and the
last sample inside it, summed pair by pair so that a service that appears mid-window (it started
then) counts from zero, and a counter that drops (a restarted sampler) is re-based instead of
producing a negative or a huge jump. CPU percent is of one core, as in top: 200 means two cores.
"""

from __future__ import annotations

import bisect
import csv
import itertools
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hardware import tcplog

Sample = dict


def load_samples(path: str | Path) -> list[Sample]:
    """Samples of a JSONL or CSV (write_samples_csv) file, sorted by time. A torn last JSONL
    line (sampler killed) is dropped. A CSV gets its tcp records back from its
    tcplog.sidecar file, when there is one (write_resources)."""
    if Path(path).suffix == ".csv":
        samples = read_samples_csv(path)
        samples.sort(key=lambda s: s["t"])
        if tcplog.sidecar(path).exists():
            tcplog.attach(samples, tcplog.read(tcplog.sidecar(path)))
        return samples
    samples = []
    with open(path) as f:
        lines = f.read().splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            samples.append(json.loads(line))
        except ValueError as exc:
            if number == len(lines):
                break  # interrupted mid-write: everything before it is valid
            raise ValueError(f"{path}:{number}: not a JSON sample ({exc})") from None
    samples.sort(key=lambda s: s["t"])
    return samples


_PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _flatten(value: Any, path: str, out: dict[str, str]) -> None:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            _flatten(item, f"{path}.{key}" if path else str(key), out)
    elif isinstance(value, list) and value:
        for index, item in enumerate(value):
            _flatten(item, f"{path}[{index}]", out)
    else:  # a number, or an empty list/dict, kept as its JSON text
        out[path] = json.dumps(value)


def _unflatten(row: dict[str, str]) -> Sample:
    root: dict = {}
    for path, cell in row.items():
        if cell == "":
            continue  # the value is absent from this sample
        parts = [int(i) if i else k for k, i in _PATH_PART.findall(path)]
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = json.loads(cell)
    return _lists(root)


def _lists(node: Any) -> Any:
    """Dicts whose keys are all list indexes (from the [i] path parts) become lists."""
    if not isinstance(node, dict):
        return node
    items = {k: _lists(v) for k, v in node.items()}
    if items and all(isinstance(k, int) for k in items):
        return [items[i] for i in sorted(items)]
    return items


def write_samples_csv(samples: Iterable[Sample], path: str | Path) -> None:
    """Samples as CSV: one row per sample, a column per value path (first-seen order)."""
    rows = []
    columns: dict[str, None] = {}
    for sample in samples:
        flat: dict[str, str] = {}
        _flatten(sample, "", flat)
        columns.update(dict.fromkeys(flat))
        rows.append(flat)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), restval="")
        writer.writeheader()
        writer.writerows(rows)


def write_resources(samples: Iterable[Sample], csv_path: str | Path) -> list[Path]:
    """A result folder's form of samples: the CSV without the tcp records, and those records
    sparsely in tcplog.sidecar(csv_path) when any sample has one. Returns the files written."""
    bare, records = tcplog.split(samples)
    write_samples_csv(bare, csv_path)
    if not records:
        return [Path(csv_path)]
    tcplog.write(records, tcplog.gz_sidecar(csv_path))
    return [Path(csv_path), tcplog.gz_sidecar(csv_path)]


def read_samples_csv(path: str | Path) -> list[Sample]:
    with open(path, newline="") as f:
        return [_unflatten(row) for row in csv.DictReader(f)]


def cut(samples: Iterable[Sample], start: float, end: float) -> list[Sample]:
    """Samples with start <= t <= end, in time order."""
    return sorted((s for s in samples if start <= s["t"] <= end), key=lambda s: s["t"])


def _steps(values: Sequence[float | None], times: Sequence[float]) -> list[tuple[float, float]]:
    """(seconds, increase) from each known value of a cumulative counter to the next one.

    None means "service absent from that sample". Absent before its first appearance means it did
    not exist yet (baseline 0 at the last sample without it); absent after that means unknown, so
    the next known value is compared with the last known one, over the time between them.
    """
    prev, prev_t = (values[0] if values[0] is not None else 0), times[0]
    seen = values[0] is not None
    steps = []
    for value, t in zip(values[1:], times[1:], strict=True):
        if value is None:
            if not seen:
                prev_t = t  # still not started at t: its zero baseline moves forward
            continue
        seen = True
        # A drop can only be a restarted sampler: re-base on the new value and count nothing,
        # rather than count a process's whole lifetime as used in this window.
        steps.append((t - prev_t, value - prev if value >= prev else 0.0))
        prev, prev_t = value, t
    return steps


def _increase(values: Sequence[float | None], times: Sequence[float]) -> float:
    return sum(step for _, step in _steps(values, times))


def _field(window: Sequence[Sample], service: str, key: str) -> list:
    return [s.get("services", {}).get(service, {}).get(key) for s in window]


def service_usage(samples: Iterable[Sample], start: float, end: float) -> dict[str, dict]:
    """Per service, what it consumed between start and end (see the module doc for the rules).

    {service: {"cpu_user_s", "cpu_system_s", "cpu_total_s", "cpu_percent_mean",
    "cpu_percent_max", "rss_peak_bytes", "ctx_switches_voluntary", "ctx_switches_involuntary",
    "connections_max", "samples", "window_s"}}. With fewer than two samples in the window the
    consumption is 0 and the percents are None.
    """
    window = cut(samples, start, end)
    services = sorted({name for s in window for name in s.get("services", {})})
    times = [s["t"] for s in window]
    span = times[-1] - times[0] if len(window) >= 2 else 0.0
    usage = {}
    for service in services:
        users = _field(window, service, "cpu_user_s")
        systems = _field(window, service, "cpu_system_s")
        user = _increase(users, times)
        system = _increase(systems, times)
        totals = [
            None if u is None or s is None else u + s for u, s in zip(users, systems, strict=True)
        ]
        percents = [step / dt * 100.0 for dt, step in _steps(totals, times) if dt > 0]
        vol = _increase(_field(window, service, "num_ctx_switches_voluntary"), times)
        invol = _increase(_field(window, service, "num_ctx_switches_involuntary"), times)
        rss = [v for v in _field(window, service, "rss_bytes") if v is not None]
        conns = [v for v in _field(window, service, "connections") if v is not None]
        usage[service] = {
            "cpu_user_s": user,
            "cpu_system_s": system,
            "cpu_total_s": user + system,
            "cpu_percent_mean": (user + system) / span * 100.0 if span > 0 else None,
            "cpu_percent_max": max(percents) if percents else None,
            "rss_peak_bytes": max(rss) if rss else None,
            "ctx_switches_voluntary": int(vol),
            "ctx_switches_involuntary": int(invol),
            "connections_max": max(conns) if conns else None,
            "samples": sum(1 for s in window if service in s.get("services", {})),
            "window_s": span,
        }
    return usage


def cpu_seconds_between(samples: Iterable[Sample], service: str, start: float,
                        end: float) -> float | None:
    """CPU seconds a service used in [start, end], its cumulative CPU interpolated linearly
    between the samples around the window's ends (service_usage needs two samples inside a
    window; a window of a second or two, a level of a closed-loop ramp, has fewer). The
    counter's steps are service_usage's (``_steps``: a drop counts nothing, an absence is
    bridged, a service not started yet has its zero baseline). None when the samples do not
    cover the window."""
    ordered = sorted(samples, key=lambda s: s["t"])
    times = [s["t"] for s in ordered]
    totals = [None if u is None or y is None else u + y
              for u, y in zip(_field(ordered, service, "cpu_user_s"),
                              _field(ordered, service, "cpu_system_s"), strict=True)]
    steps = _steps(totals, times) if len(times) >= 2 else []
    if not steps:
        return None
    # Each step ends at a sample holding the service; the first starts its own seconds before.
    ends = [t for v, t in zip(totals[1:], times[1:], strict=True) if v is not None]
    knots = [ends[0] - steps[0][0], *ends]
    cum = list(itertools.accumulate((step for _, step in steps), initial=0.0))
    if start < knots[0] or end > knots[-1]:
        return None

    def at(t: float) -> float:
        i = max(1, bisect.bisect_left(knots, t))
        t0, t1 = knots[i - 1], knots[i]
        return cum[i - 1] + (cum[i] - cum[i - 1]) * ((t - t0) / (t1 - t0) if t1 > t0 else 1.0)

    return at(end) - at(start)


def _busy_and_total(times: Mapping[str, float]) -> tuple[float, float]:
    # psutil's accounting: guest time is already inside user/nice, iowait is idle time.
    total = sum(times.values()) - times.get("guest", 0.0) - times.get("guest_nice", 0.0)
    idle = times.get("idle", 0.0) + times.get("iowait", 0.0)
    return total - idle, total


def core_usage(samples: Iterable[Sample], start: float, end: float) -> list[float]:
    """Mean busy percent of each core between start and end.

    Taken from the cumulative cpu_times of the first and last sample in the window (exact for the
    window); with a single sample, its cpu_percent_per_core. Empty list without samples.
    """
    window = cut(samples, start, end)
    if not window:
        return []
    first, last = window[0], window[-1]
    if len(window) >= 2 and first.get("cpu_times_per_core") and last.get("cpu_times_per_core"):
        result = []
        for a, b in zip(first["cpu_times_per_core"], last["cpu_times_per_core"], strict=False):
            busy_a, total_a = _busy_and_total(a)
            busy_b, total_b = _busy_and_total(b)
            d_total = total_b - total_a
            result.append(max(0.0, (busy_b - busy_a) / d_total * 100.0) if d_total > 0 else 0.0)
        return result
    per_core = [s["cpu_percent_per_core"] for s in window if s.get("cpu_percent_per_core")]
    if not per_core:
        return []
    return [sum(values) / len(values) for values in zip(*per_core, strict=False)]


def total_cpu_seconds(usage: Mapping[str, Mapping], services: Iterable[str] | None = None) -> float:
    """CPU seconds of several services of a service_usage() result (all of them by default)."""
    names = usage.keys() if services is None else services
    return sum(usage[name]["cpu_total_s"] for name in names if name in usage)


def cpu_seconds_per_request(usage: Mapping | float, requests: int) -> float | None:
    """CPU seconds per request: usage is a service_usage() entry or a number of CPU seconds.

    None when there were no requests (no meaningful ratio), so a report cannot print a fake 0.
    """
    if requests < 0:
        raise ValueError(f"requests must be >= 0, got {requests}")
    seconds = usage["cpu_total_s"] if isinstance(usage, Mapping) else float(usage)
    return seconds / requests if requests else None
