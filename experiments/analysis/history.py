"""Read a Locust run's raw files into per-request arrays and per-second series.

- `read_requests(paths)`: the locustfile's per-request CSVs (exact timings), merged.
- `read_users(history_csv)`: the user count over time from Locust's `_stats_history.csv`
  (its Aggregated rows; Locust writes one a second).
- `per_second(requests, users, ...)`: one row per whole second of the run, binned by
  completion time (start + response time, as Locust counts throughput): requests, failures,
  achieved requests/s, p50/p95 from the exact timings, users and offered requests/s.
"""

from __future__ import annotations

import csv
import glob
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Requests:
    """Every request of a run, sorted by start: start (unix s, the actual send), service time
    `rt_ms` (ms, from the send), HTTP status (0 = none), ok (bool), and for open-model runs
    the scheduled send time (unix s; NaN for closed-loop requests)."""

    start: np.ndarray
    rt_ms: np.ndarray
    status: np.ndarray
    ok: np.ndarray
    scheduled: np.ndarray | None = None

    @property
    def open_model(self) -> bool:
        return self.scheduled is not None and bool(np.isfinite(self.scheduled).any())

    @property
    def service_ms(self) -> np.ndarray:
        return self.rt_ms

    @property
    def response_ms(self) -> np.ndarray:
        """Latency as a user sees it: from the scheduled send time where there is one (so
        queueing in the generator and a late send count), else from the actual send."""
        if self.scheduled is None:
            return self.rt_ms
        from_schedule = (self.end - self.scheduled) * 1000.0
        return np.where(np.isfinite(self.scheduled), from_schedule, self.rt_ms)

    def __len__(self) -> int:
        return len(self.start)

    @property
    def end(self) -> np.ndarray:
        return self.start + self.rt_ms / 1000.0

    @property
    def failures(self) -> int:
        return int((~self.ok).sum())

    def select(self, mask: np.ndarray) -> Requests:
        scheduled = None if self.scheduled is None else self.scheduled[mask]
        return Requests(
            self.start[mask], self.rt_ms[mask], self.status[mask], self.ok[mask], scheduled
        )

    def completed_between(self, t0: float, t1: float) -> Requests:
        """Requests whose completion time is in [t0, t1)."""
        end = self.end
        return self.select((end >= t0) & (end < t1))

    @classmethod
    def from_rows(cls, rows: Iterable[tuple]) -> Requests:
        """Rows of (start, rt_ms, status, ok) or (start, rt_ms, status, ok, scheduled); the
        scheduled column is kept only when some row has one."""
        rows = sorted(rows, key=lambda r: r[:4])
        if not rows:
            return cls(
                np.array([]), np.array([]), np.array([], dtype=int), np.array([], dtype=bool)
            )
        start, rt, status, ok = (list(col) for col in zip(*(r[:4] for r in rows), strict=True))
        scheduled = np.array([r[4] if len(r) > 4 else math.nan for r in rows], dtype=float)
        return cls(
            np.array(start, dtype=float),
            np.array(rt, dtype=float),
            np.array(status, dtype=int),
            np.array(ok, dtype=bool),
            scheduled if np.isfinite(scheduled).any() else None,
        )


def read_requests(paths: Iterable[str | Path] | str | Path) -> Requests:
    """Merge per-request CSVs (columns start_unix, response_time_ms, status, ok, error and,
    from open-model runs, scheduled_unix). A directory means all its requests_*.csv files."""
    if isinstance(paths, str | Path):
        p = Path(paths)
        paths = sorted(p.glob("requests_*.csv")) if p.is_dir() else [p]
    rows = []
    for path in paths:
        with open(path, newline="") as f:
            for r in csv.DictReader(f):
                try:
                    rows.append(
                        (
                            float(r["start_unix"]),
                            float(r["response_time_ms"]),
                            int(r["status"] or 0),
                            r["ok"] == "1",
                            float(r.get("scheduled_unix") or "nan"),
                        )
                    )
                except (KeyError, ValueError, TypeError):
                    continue  # a torn last line of a killed process
    return Requests.from_rows(rows)


@dataclass(frozen=True)
class UsersHistory:
    """User count over time (unix seconds, Locust's history timestamps)."""

    t: np.ndarray
    users: np.ndarray
    locust_rps: np.ndarray  # Locust's own (windowed) Requests/s, for cross-checks only

    def users_at(self, when: float | np.ndarray) -> np.ndarray:
        """User count of the last history row at or before `when` (0 before the first)."""
        idx = np.searchsorted(self.t, np.asarray(when, dtype=float), side="right") - 1
        return (
            np.where(idx >= 0, self.users[np.clip(idx, 0, None)], 0)
            if len(self.t)
            else np.zeros_like(np.asarray(when, dtype=float), dtype=int)
        )


def read_users(history_csv: str | Path) -> UsersHistory:
    """The Aggregated rows of Locust's _stats_history.csv."""
    t, users, rps = [], [], []
    with open(history_csv, newline="") as f:
        for r in csv.DictReader(f):
            if r.get("Name") != "Aggregated":
                continue
            try:
                t.append(float(r["Timestamp"]))
                users.append(int(float(r["User Count"])))
                rps.append(float(r["Requests/s"]))
            except (KeyError, ValueError):
                continue
    order = np.argsort(t, kind="stable")
    return UsersHistory(np.array(t)[order], np.array(users, dtype=int)[order], np.array(rps)[order])


@dataclass(frozen=True)
class PerSecond:
    """Per-second series; bin i covers [t0 + i, t0 + i + 1) by completion time."""

    t0: float
    t: np.ndarray  # seconds since t0 (bin starts)
    users: np.ndarray
    offered_rps: np.ndarray
    requests: np.ndarray  # completed in the bin, ok or not
    failures: np.ndarray
    p50_ms: np.ndarray  # NaN where no request completed
    p95_ms: np.ndarray

    @property
    def achieved_rps(self) -> np.ndarray:
        """Successful requests completed per second."""
        return (self.requests - self.failures).astype(float)

    @property
    def error_rate(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.requests > 0, self.failures / np.maximum(self.requests, 1), 0.0)

    def __len__(self) -> int:
        return len(self.t)

    def rows(self) -> list[dict]:
        return [
            {
                "t": float(self.t[i]),
                "users": int(self.users[i]),
                "offered_rps": float(self.offered_rps[i]),
                "requests": int(self.requests[i]),
                "failures": int(self.failures[i]),
                "achieved_rps": float(self.achieved_rps[i]),
                "p50_ms": float(self.p50_ms[i]),
                "p95_ms": float(self.p95_ms[i]),
            }
            for i in range(len(self))
        ]


def per_second(
    requests: Requests,
    users: UsersHistory | Callable[[float], int] | None = None,
    *,
    t0: float | None = None,
    n_bins: int | None = None,
    pacing_s: float = 1.0,
    lag_s: float = 1.0,
) -> PerSecond:
    """Bin requests by completion second from t0 (default: the first request's start, floored).
    n_bins defaults to the whole seconds up to the last completion (a partial last second is
    dropped). users: a UsersHistory, a function of unix time, or None (zeros). Users of bin i
    are those at its end; offered req/s of bin i = users at (its end - lag_s) / pacing_s."""
    end = np.sort(requests.end)
    order = np.argsort(requests.end, kind="stable")
    rt = requests.rt_ms[order]
    ok = requests.ok[order]
    if t0 is None:
        t0 = math.floor(float(requests.start.min())) if len(requests) else 0.0
    if n_bins is None:
        n_bins = max(0, int(math.floor(float(end[-1]) - t0))) if len(end) else 0
    edges = t0 + np.arange(n_bins + 1, dtype=float)
    idx = np.searchsorted(end, edges, side="left")
    counts = np.diff(idx)
    fails = np.array([int((~ok[idx[i] : idx[i + 1]]).sum()) for i in range(n_bins)], dtype=int)
    p50 = np.full(n_bins, np.nan)
    p95 = np.full(n_bins, np.nan)
    for i in range(n_bins):
        if counts[i]:
            chunk = rt[idx[i] : idx[i + 1]]
            p50[i], p95[i] = np.percentile(chunk, [50, 95])
    bin_end = edges[1:]
    if users is None:
        u_now = np.zeros(n_bins, dtype=int)
        u_lag = u_now
    elif isinstance(users, UsersHistory):
        u_now = users.users_at(bin_end)
        u_lag = users.users_at(bin_end - lag_s)
    else:
        u_now = np.array([users(x) for x in bin_end], dtype=int)
        u_lag = np.array([users(x - lag_s) for x in bin_end], dtype=int)
    return PerSecond(
        t0=float(t0),
        t=np.arange(n_bins, dtype=float),
        users=np.asarray(u_now, dtype=int),
        offered_rps=np.asarray(u_lag, dtype=float) / pacing_s,
        requests=counts.astype(int),
        failures=fails,
        p50_ms=p50,
        p95_ms=p95,
    )


def load_run_dir(
    locust_dir: str | Path, *, pacing_s: float = 1.0, lag_s: float = 1.0
) -> tuple[Requests, UsersHistory | None, PerSecond]:
    """Requests, user history and per-second series of one Locust output directory."""
    locust_dir = Path(locust_dir)
    requests = read_requests(sorted(glob.glob(str(locust_dir / "requests_*.csv"))))
    hist_path = locust_dir / "locust_stats_history.csv"
    users = read_users(hist_path) if hist_path.exists() else None
    return requests, users, per_second(requests, users, pacing_s=pacing_s, lag_s=lag_s)
