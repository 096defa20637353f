"""What experiment 7 makes of its measurements, pure (no I/O): the batches a Locust run formed,
from the model's counters before and after it (experiments/exp7_batching/counters.py), and
the regime verdict: whether batching wins capacity on a device or only adds latency.

    h = histogram(record)                       # {"sizes": {1: 40, 2: 310}, ...}
    v = regime(batching_side, on_demand_side)   # {"regime": "wins", ...}
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def _sizes(body: dict[str, Any]) -> dict[int, int]:
    """One worker's batches by size so far: the micro-batcher's counts, else (on demand)
    every device hold is a batch of one."""
    if "batch_sizes" in body:
        return {int(k): int(v) for k, v in body["batch_sizes"].items()}
    return {1: int(body.get("device_holds") or 0)}


def histogram(record: dict[str, Any]) -> dict[str, Any]:
    """The batches formed between the two snapshots of `record`, summed over the workers seen
    in both: {"sizes": {size: batches}, "batches", "items", "mean_size" (per batch),
    "item_mean_size" (the batch size the average request travelled in), "max_size",
    "device_busy_s", "workers_counted", "workers_expected", "complete" (every expected worker
    counted, none restarted), "model" (the model as the server named it), "slots"}."""
    before = (record.get("before") or {}).get("workers") or {}
    after = (record.get("after") or {}).get("workers") or {}
    sizes: dict[int, int] = {}
    busy, counted, restarted = 0.0, 0, False
    for pid, end in after.items():
        start = before.get(pid)
        if start is None:
            continue
        a, b = _sizes(start), _sizes(end)
        diff = {k: b.get(k, 0) - a.get(k, 0) for k in set(a) | set(b)}
        if any(v < 0 for v in diff.values()):
            restarted = True  # counters went back: not the same worker's life
            continue
        counted += 1
        for k, v in diff.items():
            if v:
                sizes[k] = sizes.get(k, 0) + v
        busy += max(0.0, float(end.get("device_busy_s") or 0) - float(start.get("device_busy_s")
                                                                        or 0))
    batches = sum(sizes.values())
    items = sum(k * v for k, v in sizes.items())
    expected = record.get("workers_expected")
    any_body = next(iter(after.values()), None) or next(iter(before.values()), None) or {}
    return {"sizes": dict(sorted(sizes.items())), "batches": batches, "items": items,
            "mean_size": items / batches if batches else None,
            "item_mean_size": (sum(k * k * v for k, v in sizes.items()) / items
                               if items else None),
            "max_size": max(sizes) if sizes else None,
            "device_busy_s": busy, "workers_counted": counted, "workers_expected": expected,
            "complete": (not restarted and expected is not None and counted >= expected),
            "model": any_body.get("model"), "slots": any_body.get("device_slots"),
            "batching": any_body.get("batching")}


def utilisation(h: dict[str, Any], seconds: float | None) -> float | None:
    """The device's busy share over `seconds`: slot-seconds held / (slots x seconds); without a
    device limit, the predictions in flight on average (busy seconds / seconds)."""
    if not seconds or seconds <= 0 or not h["workers_counted"]:
        return None
    slots = h.get("slots") or 0
    return h["device_busy_s"] / (seconds * slots) if slots else h["device_busy_s"] / seconds


def size_line(sizes: dict[int, int], top: int = 6) -> str:
    """A histogram in one line: the `top` most frequent sizes in size order, "size x batches"
    ("1x40 2x310 ..., 3 sizes more")."""
    if not sizes:
        return "-"
    keep = sorted(sorted(sizes, key=lambda k: -sizes[k])[:top])
    text = " ".join(f"{k}x{sizes[k]}" for k in keep)
    more = len(sizes) - len(keep)
    return text + (f" (+{more} sizes)" if more else "")


def pooled(hs: list[dict[str, Any]]) -> dict[int, int]:
    """Several runs' histograms added up."""
    out: dict[int, int] = {}
    for h in hs:
        for k, v in h["sizes"].items():
            out[k] = out.get(k, 0) + v
    return dict(sorted(out.items()))


def size_percentile(sizes: dict[int, int], q: float) -> float | None:
    """The q-th percentile (0-100) of the batch size a request travelled in (item-weighted)."""
    if not sizes:
        return None
    values = np.repeat(np.array(list(sizes), dtype=float), [k * v for k, v in sizes.items()])
    return float(np.percentile(values, q)) if len(values) else None


def _upper(side: dict[str, Any]) -> float:
    """The lowest rate the side's search confidently failed (its capacity is below it); inf
    when none did."""
    failed = side.get("failed_rps")
    return math.inf if failed is None else float(failed)


def regime(batching: dict[str, Any], on_demand: dict[str, Any],
           margin: float = 0.10) -> dict[str, Any]:
    """Whether batching wins on one device, from each side's capacity search (capacity_rps:
    the highest rate that passed; failed_rps: the lowest rate it confidently failed, None when
    none did; an undecided rate bounds nothing) and its 1-user p50.

    - "wins": batching's capacity is above every rate on-demand passed by more than `margin`,
      and at or above the rate on-demand confidently failed (what it passed, on-demand did not);
    - "loses": the same the other way round;
    - "adds latency only": neither search tells the two capacities apart and batching's
      1-user p50 is higher;
    - "lowers latency only": the same, batching's 1-user p50 lower (with one slot, an async
      request's two concurrent calls share one prediction instead of queueing for the slot);
    - "no difference": neither search tells the capacities apart, the same 1-user p50;
    - "undecided": a side has no capacity to compare (unless it passed nothing and
      confidently failed a rate and the other's capacity is above that rate by the margin:
      then that decides, "ratio_at_least" the other's capacity over it).
    Also the capacity ratio and the p50 batching adds at 1 user (negative: it saves)."""
    b, o = batching.get("capacity_rps"), on_demand.get("capacity_rps")
    bp, op = batching.get("p50_1_user_ms"), on_demand.get("p50_1_user_ms")
    added = bp - op if bp is not None and op is not None else None
    out = {"ratio": b / o if b and o else None, "added_p50_ms": added,
           "batching_rps": b, "on_demand_rps": o}
    if not b or not o:
        # A side that passed nothing but failed a rate has a capacity below it (an upper
        # bound): the other side's capacity above that, by the margin, still decides.
        ou, bu = on_demand.get("failed_rps"), batching.get("failed_rps")
        if b and not o and ou and b > ou * (1 + margin):
            return {**out, "regime": "wins", "ratio_at_least": b / ou,
                    "why": f"batching passed a rate above {ou:.1f} req/s, which on-demand "
                           "confidently failed without passing any"}
        if o and not b and bu and o > bu * (1 + margin):
            return {**out, "regime": "loses", "ratio_at_least": o / bu,
                    "why": f"on-demand passed a rate above {bu:.1f} req/s, which batching "
                           "confidently failed without passing any"}
        why = "batching" if not b else "on-demand"
        return {**out, "regime": "undecided", "why": f"no capacity measured for {why}"}
    if b > o * (1 + margin) and b >= _upper(on_demand):
        return {**out, "regime": "wins", "why": "batching passed a rate on-demand failed"}
    if o > b * (1 + margin) and o >= _upper(batching):
        return {**out, "regime": "loses", "why": "on-demand passed a rate batching failed"}
    if added is not None and added != 0:
        return {**out, "regime": "adds latency only" if added > 0 else "lowers latency only",
                "why": "the searches do not tell the capacities apart"}
    return {**out, "regime": "no difference",
            "why": "the searches do not tell the capacities apart"
                   + ("" if added is not None else "; no 1-user p50 to compare")}
