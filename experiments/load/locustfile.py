"""Locust users for the scoring endpoints. Run by experiments.load.run (a subprocess):

    SCORING_LAB_SCENARIO=scenario.json SCORING_LAB_REQUEST_LOG=out/requests \
        locust -f experiments/load/locustfile.py --headless --host http://127.0.0.1:8000 ...

SCORING_LAB_SCENARIO is the JSON written by stages.write_scenario_file (stages, scoring
path, arrival pattern, pacing, payload, seed); without it the file still runs with -u/-r/-t
and SCORING_LAB_PATH / SCORING_LAB_ARRIVAL. Every request is also written, with its exact
timing (Locust's stats round response times to about two significant digits), to
`<SCORING_LAB_REQUEST_LOG>_<pid>.csv` by each process that runs users.

Two kinds of load. Closed loop (the original's four scenarios): `ScoringUser`s, one request
per pacing period each, the next one sent only after the answer. Open model (the scenario
document has `open_model`): one `OpenModelUser` per Locust process drives its stream of an
arrival schedule (experiments.load.arrivals), sending every request at its scheduled time
whatever is in flight; its log rows carry the scheduled time, so response time (from the
schedule) and service time (from the send) can both be computed, and each process writes
`open_model_<pid>.json` (requests scheduled, sent, late for want of an in-flight slot,
unfinished when the step ended, resent after the server closed them unanswered). With a
`job` in the scenario document, each arrival is a job client instead (submit to the jobs path,
poll until the job ends: experiments/load/job_client.py), one row per job in `jobs_<pid>.csv`.
"""

from __future__ import annotations

import atexit
import csv
import json
import os
import random
import sys
import time
from pathlib import Path

# Locust loads this file by path; make the repository importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import gevent  # noqa: E402
import gevent.pool  # noqa: E402
from locust import FastHttpUser, constant, events, task  # noqa: E402
from locust.runners import MasterRunner  # noqa: E402

from experiments.load import job_client, shapes  # noqa: E402
from experiments.load.arrivals import OpenModel  # noqa: E402
from experiments.load.job_log import JobSpec, job_log_path  # noqa: E402
from experiments.load.pacing import Pacer  # noqa: E402
from experiments.load.stages import read_scenario_file  # noqa: E402

# start_unix and response_time_ms are the actual send and the service time; scheduled_unix is
# the open model's intended send time (empty in closed-loop runs).
REQUEST_LOG_COLUMNS = ["start_unix", "response_time_ms", "status", "ok", "error", "scheduled_unix"]

_scenario_path = os.environ.get("SCORING_LAB_SCENARIO")
DOC = read_scenario_file(_scenario_path) if _scenario_path else {}
PATH = DOC.get("path") or os.environ.get("SCORING_LAB_PATH", "/api/v1/ml/sync/predict")
ARRIVAL = DOC.get("arrival") or os.environ.get("SCORING_LAB_ARRIVAL", "spread")
PACING_S = float(DOC.get("pacing_s") or os.environ.get("SCORING_LAB_PACING_S", "1.0"))
PAYLOAD = DOC.get("payload") or [5.1, 3.5, 1.4, 0.2]
OPEN = DOC.get("open_model")  # {..OpenModel fields.., "streams", "schedule_s"} or None
# Open model only: each arrival submits a job to PATH and polls it (experiments/load/job_client.py)
JOB = JobSpec(**DOC["job"]) if DOC.get("job") else None
_seed = DOC.get("seed")
_rng = random.Random(None if _seed is None else int(_seed) + os.getpid())

if DOC.get("stages"):
    ScenarioShape = shapes.shape_for(DOC)


class RequestLog:
    """Buffered CSV of every request: start (unix s), response time (ms, full precision),
    HTTP status (0 when none), ok (1/0), error text."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._file = self.path.open("w", newline="", buffering=1 << 20)
        self._writer = csv.writer(self._file)
        self._writer.writerow(REQUEST_LOG_COLUMNS)

    def on_request(
        self,
        request_type,
        name,
        response_time,
        response_length,
        response=None,
        context=None,
        exception=None,
        start_time=None,
        **_kw,
    ):
        status = getattr(response, "status_code", 0) or 0
        error = "" if exception is None else str(exception).replace("\n", " ")[:200]
        start = start_time if start_time is not None else time.time() - response_time / 1000
        self.write(start, response_time, status, exception is None, error,
                   (context or {}).get("scheduled_unix"))

    def write(self, start, response_time_ms, status, ok, error, scheduled=None):
        when = "" if scheduled is None else f"{scheduled:.6f}"
        self._writer.writerow(
            [f"{start:.6f}", f"{response_time_ms:.3f}", status, 1 if ok else 0, error, when]
        )

    def close(self):
        if not self._file.closed:
            self._file.close()


_log: RequestLog | None = None
_job_log = job_client.JobLog(None)  # the real one once a request log is opened


@events.init.add_listener
def _open_request_log(environment, runner=None, **_kw):
    global _log, _job_log
    prefix = os.environ.get("SCORING_LAB_REQUEST_LOG")
    if not prefix or isinstance(runner or environment.runner, MasterRunner):
        return
    _log = RequestLog(f"{prefix}_{os.getpid()}.csv")
    environment.events.request.add_listener(_log.on_request)
    atexit.register(_log.close)
    if JOB is not None:
        _job_log = job_client.JobLog(job_log_path(prefix, os.getpid()))
        atexit.register(_job_log.close)


@events.quitting.add_listener
def _close_request_log(environment, **_kw):
    for log in (_log, _job_log):
        if log is not None:
            log.close()


def _score(client, context: dict | None = None, retry_closed: int = 0) -> int:
    """One scoring request; it counts only when it is HTTP 200 with a numeric `detail`.

    With `retry_closed`, a request whose connection the server closed without a byte of
    answer is sent again, up to that many times, and only the last attempt is reported (its
    row's scheduled time still dates the whole wait). Why: meinheld's keep-alive timer,
    when it fires while a blocking request holds the worker, closes a connection whose next
    request has already arrived unread (measured: a connection idle ~3 s, a request sent
    while another is in the one worker, closed 3 times in 3). picoev runs a loop turn as
    poll, callbacks (meinheld calls the WSGI app in one), then timeouts (picoev.h,
    picoev_loop_once), and meinheld's read_callback closes on PICOEV_TIMEOUT without reading
    (server.c): a keep-alive deadline that passed during the app call wins over the request
    that arrived meanwhile. That is meinheld dropping unread requests at any rate, not the
    stack being loaded; a client of a pure scoring function resends it, as gRPC does for a
    call that never reached the application.
    Returns the number of resends, which the open model counts and reports.
    """
    for attempt in range(retry_closed + 1):
        resp = client.post(
            PATH,
            json=PAYLOAD,
            headers={"Content-Type": "application/json"},
            name=PATH,
            catch_response=True,
            context=context or {},
        )
        if attempt < retry_closed and job_client.closed_unanswered(resp):
            continue  # never entered: Locust reports a response on leaving its context
        with resp:
            _check(resp)
        return attempt
    raise AssertionError("unreachable: the last attempt always returns")


def _check(resp) -> None:
    if resp.status_code != 200:
        # no status: say what the connection did (refused, reset, timed out), or the run's
        # errors cannot be told apart from each other
        cause = getattr(resp, "error", None) if not resp.status_code else None
        resp.failure(f"HTTP {resp.status_code}" +
                     (f": {type(cause).__name__}: {cause}"[:160] if cause else ""))
        return
    try:
        detail = resp.json()["detail"]
    except Exception as e:  # noqa: BLE001 - any bad body is a failed request
        resp.failure(f"bad JSON body: {e!r}")
        return
    if isinstance(detail, bool) or not isinstance(detail, int | float):
        resp.failure(f"detail is not a number: {detail!r}")
    else:
        resp.success()


class ScoringUser(FastHttpUser):
    """Closed loop: posts the iris features as JSON once per pacing period."""

    abstract = OPEN is not None

    def on_start(self):
        self._pacer = Pacer(PACING_S, ARRIVAL, _rng)
        delay = self._pacer.start(time.monotonic())
        if delay > 0:
            gevent.sleep(delay)

    def wait_time(self):
        return self._pacer.wait(time.monotonic())

    @task
    def score(self):
        _score(self.client)


SEND_SLACK_S = 0.25
# Resends of a request the server closed unanswered (see _score); counted, never silent.
# Open model only: the closed-loop scenarios stay the original's Locust protocol.
RETRY_CLOSED = 1
_OPEN_FIELDS = ("rate", "process", "seed", "inflight_cap", "request_timeout_s", "drain_s",
                "nominal_count")


class OpenModelUser(FastHttpUser):
    """Open model: sends this process's stream of the arrival schedule, each request at its
    scheduled time in a greenlet of its own, at most `inflight_cap` at once."""

    abstract = OPEN is None
    wait_time = constant(0)
    if OPEN:
        # the connection pool matches the in-flight cap: a slot never waits for a connection
        concurrency = int(OPEN["inflight_cap"])
        network_timeout = connection_timeout = float(OPEN["request_timeout_s"])

    def on_start(self):
        runner = self.environment.runner
        self.index = max(0, int(getattr(runner, "worker_index", 0) or 0))
        # nominal_count is absent from the documents of runs before it
        self.model = OpenModel(**{k: OPEN[k] for k in _OPEN_FIELDS if k in OPEN})
        self.stream = self.model.stream(self.index, int(OPEN["streams"]))
        COUNTS.update(stream=self.index, streams=int(OPEN["streams"]),
                      stream_rate=self.stream.stream_rate)

    @task
    def drive(self):
        times = self.stream.times(float(OPEN["schedule_s"]))
        pool = gevent.pool.Pool(self.model.inflight_cap)
        POOLS.append(pool)
        t0_mono, t0_unix = time.monotonic(), time.time()
        COUNTS["schedule_start_unix"] = t0_unix
        for t in times:
            delay = t0_mono + t - time.monotonic()
            if delay > 0:
                gevent.sleep(delay)
            if pool.full():
                COUNTS["inflight_cap_hits"] += 1
                pool.wait_available()
            COUNTS["scheduled"] += 1
            pool.spawn(self._send, t0_unix + float(t))
        pool.join()  # the step's drain time bounds this: the run ends at the stage's end
        while True:  # one schedule per step; idle until the shape stops the run
            gevent.sleep(3600)

    def _send(self, scheduled_unix: float) -> None:
        key = object()
        sent = time.time()
        IN_FLIGHT[key] = (scheduled_unix, sent)
        COUNTS["sent"] += 1
        # what the achieved rate is computed from; the slack keeps a last send that left a few
        # ms after the schedule's end (gevent's timer) from reading as a shortfall
        if sent - COUNTS["schedule_start_unix"] <= float(OPEN["schedule_s"]) + SEND_SLACK_S:
            COUNTS["sent_in_schedule"] += 1
        COUNTS["max_late_ms"] = max(COUNTS["max_late_ms"], (sent - scheduled_unix) * 1000)
        try:
            if JOB is not None:  # the whole job, submit to result, holds this slot
                COUNTS["retried_closed"] += job_client.run_job(
                    self.client, PATH, PAYLOAD, JOB, scheduled_unix, _job_log, RETRY_CLOSED)
            else:
                COUNTS["retried_closed"] += _score(
                    self.client, {"scheduled_unix": scheduled_unix}, RETRY_CLOSED)
        finally:
            IN_FLIGHT.pop(key, None)


COUNTS = {"scheduled": 0, "sent": 0, "sent_in_schedule": 0, "inflight_cap_hits": 0,
          "max_late_ms": 0.0, "unfinished": 0, "retried_closed": 0}
IN_FLIGHT: dict[object, tuple[float, float]] = {}
POOLS: list[gevent.pool.Pool] = []


@events.test_stop.add_listener
def _record_open_model(environment, **_kw):
    """Requests still in flight when the step ends are logged as failed rows (they were
    scheduled and never answered), and this process's counts are written beside its log."""
    prefix = os.environ.get("SCORING_LAB_REQUEST_LOG")
    if not OPEN or not prefix or isinstance(environment.runner, MasterRunner):
        return
    unanswered = list(IN_FLIGHT.values())
    jobs_in_flight = list(job_client.IN_FLIGHT_JOBS.values())
    for pool in POOLS:  # an answer arriving after this point would be counted twice
        pool.kill(block=True, timeout=5)
    now = time.time()
    for scheduled, sent in unanswered:
        COUNTS["unfinished"] += 1
        if _log is not None:
            _log.write(sent, (now - sent) * 1000, 0, False, "unfinished when the step ended",
                       scheduled)
    IN_FLIGHT.clear()
    job_client.flush_unfinished(jobs_in_flight, _job_log)
    out = Path(prefix).parent / f"open_model_{os.getpid()}.json"
    out.write_text(json.dumps({**COUNTS, "pid": os.getpid()}, indent=2) + "\n")
