"""Which model worker holds each scoring worker's model connections (keep-alive pinning).

A sync scoring worker is blocking and calls the model API through a keep-alive pool: in
practice one pooled connection per worker, accepted once by whichever model worker accepted
first. If both scoring workers' connections land on the same blocking model worker, every
model call queues on that one worker and the other idles: throughput halves (experiment 4's
default/sync rung measured 12 req/s in one run and 22 in the next).

The resource sampler records, per service process, its TCP connections to other lab service
processes (``services.<name>.tcp`` = {"<pid>": ["local->peer", ...]}, hardware/sampler.py;
a result folder keeps them in raw/resources/<host>.tcp.jsonl, which load_resource_samples puts
back into the samples: hardware/tcplog.py).
A scoring worker's connection "A->B" is held at the model side by the process whose list
has "B->A". Samples from before the field existed give None (nothing recorded).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any


def _sample_pairs(sample: dict, scoring: str, model: str) -> dict[int, frozenset[int]] | None:
    """{scoring pid: model pids at the other end of its connections} in one sample."""
    services = sample.get("services") or {}
    s_tcp = (services.get(scoring) or {}).get("tcp")
    m_tcp = (services.get(model) or {}).get("tcp")
    if s_tcp is None or m_tcp is None:
        return None
    holder = {}  # "scoring end->model end" -> model pid, from the model side's lists
    for pid, conns in m_tcp.items():
        for conn in conns:
            local, _, peer = conn.partition("->")
            holder[f"{peer}->{local}"] = int(pid)
    pairs = {}
    for pid, conns in s_tcp.items():
        held = frozenset(holder[c] for c in conns if c in holder)
        if held:
            pairs[int(pid)] = held
    return pairs


def model_connections(
    samples: Iterable[dict],
    start: float | None = None,
    end: float | None = None,
    scoring: str = "scoring-sync",
    model: str = "model-sync",
) -> dict[str, Any] | None:
    """Summary of the scoring-to-model connection assignment over [start, end].

    The assignment held in most samples of the window ("dominant") is the one reported, with
    the share of samples that had it (a pool that reconnected mid-window has a share < 1).
    None when no sample in the window recorded connections (older runs).
    """
    seen: Counter[tuple[tuple[int, tuple[int, ...]], ...]] = Counter()
    for s in samples:
        t = s.get("t", 0.0)
        if (start is not None and t < start) or (end is not None and t > end):
            continue
        pairs = _sample_pairs(s, scoring, model)
        if pairs:
            seen[tuple(sorted((k, tuple(sorted(v))) for k, v in pairs.items()))] += 1
    if not seen:
        return None
    dominant, count = seen.most_common(1)[0]
    total = sum(seen.values())
    # Samples in which 2+ scoring workers all had their connections on one model worker: the
    # measure that still means something when connections churn (no keep-alive).
    on_one = sum(n for a, n in seen.items()
                 if len(a) > 1 and len({m for _, ms in a for m in ms}) == 1)
    pairs = {str(k): list(v) for k, v in dominant}
    serving = sorted({m for v in pairs.values() for m in v})
    return {
        "scoring_workers": len(pairs),
        "model_workers_serving": len(serving),
        "model_pids": serving,
        "pairs": pairs,
        "samples": total,
        "share": round(count / total, 3),
        "one_model_worker_share": round(on_one / total, 3),
        "assignments_seen": len(seen),
    }


def sentence(summary: dict[str, Any] | None) -> str | None:
    """One line for a report, e.g. "model connections of the 2 scoring workers held by 1
    model worker (pid 123): every model call queues on it"."""
    if not summary:
        return None
    n, k = summary["scoring_workers"], summary["model_workers_serving"]
    pids = ", ".join(str(p) for p in summary["model_pids"])
    line = (f"model connections of the {n} scoring worker{'s' if n != 1 else ''} held by {k} "
            f"model worker{'s' if k != 1 else ''} (pid {pids})")
    if n > 1 and k == 1:
        line += ": every model call queues on that one worker"
    if summary["assignments_seen"] > 1:
        line += (f"; this assignment in {summary['share']:.0%} of {summary['samples']} "
                 f"samples, {summary['assignments_seen']} seen")
    return line
