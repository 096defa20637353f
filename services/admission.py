"""Admission control of the scoring handlers (issue 25): a bound on the scoring requests one
worker holds, and shedding of requests whose deadline passed before their handler starts.
Framework-free; the sync and async stacks apply it through services/sync_app/admission.py and
services/async_app/admission.py. Off by default (``admission_limit`` 0, ``admission_deadlines``
false): nothing is installed and the request path is the one every committed run measured.

Why: past its knee the default async build works on requests whose clients already gave up
(experiment 5: 59 % of answers 504s, 6.52 ms CPU per answered request against 3.69 below the
knee), a metastable state; a bound answered at once keeps the work to what can be served in
time, and shedding spends nothing on a request nobody waits for.

**The deadline.** ``X-Request-Deadline: <unix time, seconds, decimals allowed>``, absolute.
A relative budget (``X-Request-Budget-Ms``) counts from when the server first reads the
request, and a gunicorn sync worker reads it only when it takes it: time queued in the listen
backlog or a kept-alive socket's buffer, which is where the sync stack queues under overload,
would be invisible. An absolute deadline carries that time. Its price is clocks in step: the
load generator and the services run on one host, or lab hosts kept in step by NTP (ms against
budgets of hundreds of ms); a skew moves every deadline by the skew. A request without the
header gets ``arrival + admission_budget_s`` (when that is > 0), arrival as each server sees
it: uvicorn when its event loop parses the request's first bytes (async_app/protocol.py), the
gthread worker when its main loop hands the connection to the thread pool (queue time for a
thread counts), meinheld, sync, gevent and granian when the app is called (the backlog is
invisible).

**Shed answers 503 ``deadline_exceeded``, not 504**: no work was spent and no upstream timed
out (504 stays the model call's own deadline, where work was spent); every answer of admission
control is a 503 with Retry-After, the status load balancers and clients read as "not
processed, try later".

**Counters** (per worker process: ``admitted`` went to the handler, ``rejected`` by the limit,
``shed`` by their deadline, ``invalid_deadline`` refused 400 for a bad header; with the
in-flight count and its peak, the limit now and its maximum) are served as JSON at
``GET /api/v1/admission`` by whichever worker takes the request (its ``pid`` says which), and
logged by each worker when it stops.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from contextvars import ContextVar

from services import errors
from services.settings import Settings

STATS_PATH = "/api/v1/admission"
DEADLINE_HEADER = "X-Request-Deadline"


# When the server first held the request (unix time), where the server can say so earlier than
# the app's own start: set per thread by the gthread worker (sync_app/gthread_worker.py).
ARRIVED: ContextVar[float | None] = ContextVar("scoring_lab_arrived", default=None)


def enabled(settings: Settings) -> bool:
    return settings.admission_limit > 0 or settings.admission_deadlines


class AimdLimit:
    """An adaptive bound: additive increase, multiplicative decrease, on each admitted
    request's latency from its arrival to its answer. An answer within ``target_s`` that is
    no 5xx adds ``1 / limit`` (one place per limit's worth of good answers); a slower one or
    a 5xx multiplies the limit by BACKOFF, once per congestion episode: only a request that
    arrived after the last cut cuts again (TCP's once per round trip), so the many slow
    answers of one episode do not collapse the limit to 1.

    What it buys over a fixed limit: the right fixed bound depends on the build and on the
    dependency's speed (requests in flight = throughput x latency). When the model API slows
    down 3x, a fixed bound admits requests that will be answered 3x later, past the clients'
    patience; this one shrinks until answers are within the target again, and grows back
    when the dependency recovers."""

    BACKOFF = 0.9

    def __init__(self, maximum: int, target_s: float) -> None:
        self.maximum = maximum
        self.target_s = target_s
        self.value = float(maximum)
        self._last_cut = -math.inf

    @property
    def limit(self) -> int:
        return max(1, int(self.value))

    def observe(self, latency_s: float, arrived: float, ok: bool) -> None:
        """One admitted request's answer; ``arrived``: its arrival (unix time)."""
        if ok and latency_s <= self.target_s:
            self.value = min(self.maximum, self.value + 1 / self.limit)
        elif arrived > self._last_cut:
            self.value = max(1.0, self.value * self.BACKOFF)
            self._last_cut = time.time()


class Admission:
    """One per worker process. The lock makes the count safe in gthread's threads; it is
    never held across a wait, so greenlets (meinheld, gevent) and asyncio do not block on it."""

    def __init__(self, settings: Settings) -> None:
        self.pid = os.getpid()
        self.limit = settings.admission_limit
        self.retry_after_s = settings.admission_retry_after_s
        self.deadlines = settings.admission_deadlines
        self.budget_s = settings.admission_budget_s
        self._lock = threading.Lock()
        self.in_flight = 0
        self.peak_in_flight = 0
        self.admitted = 0
        self.rejected = 0
        self.shed = 0
        self.invalid_deadline = 0
        self.adaptive = (AimdLimit(settings.admission_limit, settings.admission_target_s)
                         if settings.admission_adaptive else None)

    # -- the in-flight bound ---------------------------------------------------------------
    def try_enter(self) -> bool:
        """Take a place (True), or count a rejection (False). Always True without a limit."""
        with self._lock:
            if self.limit and self.in_flight >= self.limit:
                self.rejected += 1
                return False
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            return True

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def observe(self, arrived: float, status: int) -> None:
        """An admitted request answered ``status``: a sample for the adaptive limit."""
        if self.adaptive is None:
            return
        with self._lock:
            self.adaptive.observe(time.time() - arrived, arrived, status < 500)
            self.limit = self.adaptive.limit

    # -- deadlines -------------------------------------------------------------------------
    def deadline(self, header: str | None, arrived: float) -> float | None:
        """The request's deadline (unix time) from its header, else ``arrived`` plus the
        budget; None: no deadline. Raises ApiError (400) for a header that is no time."""
        if not self.deadlines:
            return None
        if header is None:
            return arrived + self.budget_s if self.budget_s > 0 else None
        try:
            at = float(header)
        except ValueError:
            at = math.nan
        if not math.isfinite(at) or at < 0:
            with self._lock:
                self.invalid_deadline += 1
            raise errors.invalid_deadline(header)
        return at

    def check_deadline(self, header: str | None, arrived: float) -> None:
        """Raise the shed (503) when the deadline passed, counted; else count an admission."""
        at = self.deadline(header, arrived)
        now = time.time()
        with self._lock:
            if at is not None and now >= at:
                self.shed += 1
                late = now - at
            else:
                self.admitted += 1
                return
        raise errors.deadline_exceeded(late)

    # -- what answers and experiments read --------------------------------------------------
    def headers(self, error: errors.ApiError) -> list[tuple[str, str]]:
        """Extra headers of an admission answer: Retry-After on its 503s."""
        return [("Retry-After", str(self.retry_after_s))] if error.status == 503 else []

    def stats(self) -> dict[str, object]:
        with self._lock:
            return {"pid": self.pid, "limit": self.limit, "deadlines": self.deadlines,
                    "budget_s": self.budget_s, "in_flight": self.in_flight,
                    "peak_in_flight": self.peak_in_flight, "admitted": self.admitted,
                    "rejected": self.rejected, "shed": self.shed,
                    "invalid_deadline": self.invalid_deadline,
                    "adaptive": self.adaptive is not None,
                    "limit_max": self.adaptive.maximum if self.adaptive else self.limit}

    def stats_json(self) -> bytes:
        return json.dumps(self.stats()).encode()


_process: Admission | None = None


def for_process(settings: Settings) -> Admission:
    """This worker's one Admission: shared by the app and, for gthread, the worker class
    that bounds the thread pool's queue (both run in the worker process, after the fork)."""
    global _process
    if _process is None or _process.pid != os.getpid():
        _process = Admission(settings)
    return _process
