"""Locust users for the scoring endpoints. Run by experiments.load.run (a subprocess):

    SCORING_LAB_SCENARIO=scenario.json SCORING_LAB_REQUEST_LOG=out/requests \
        locust -f experiments/load/locustfile.py --headless --host http://127.0.0.1:8000 ...

SCORING_LAB_SCENARIO is the JSON written by stages.write_scenario_file (stages, scoring
path, arrival pattern, pacing, payload, seed); without it the file still runs with -u/-r/-t
and SCORING_LAB_PATH / SCORING_LAB_ARRIVAL. Every request is also written, with its exact
timing (Locust's stats round response times to about two significant digits), to
`<SCORING_LAB_REQUEST_LOG>_<pid>.csv` by each process that runs users.
"""

from __future__ import annotations

import atexit
import csv
import os
import random
import sys
import time
from pathlib import Path

# Locust loads this file by path; make the repository importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import gevent  # noqa: E402
from locust import FastHttpUser, events, task  # noqa: E402
from locust.runners import MasterRunner  # noqa: E402

from experiments.load import shapes  # noqa: E402
from experiments.load.pacing import Pacer  # noqa: E402
from experiments.load.stages import read_scenario_file  # noqa: E402

REQUEST_LOG_COLUMNS = ["start_unix", "response_time_ms", "status", "ok", "error"]

_scenario_path = os.environ.get("SCORING_LAB_SCENARIO")
DOC = read_scenario_file(_scenario_path) if _scenario_path else {}
PATH = DOC.get("path") or os.environ.get("SCORING_LAB_PATH", "/api/v1/ml/sync/predict")
ARRIVAL = DOC.get("arrival") or os.environ.get("SCORING_LAB_ARRIVAL", "spread")
PACING_S = float(DOC.get("pacing_s") or os.environ.get("SCORING_LAB_PACING_S", "1.0"))
PAYLOAD = DOC.get("payload") or [5.1, 3.5, 1.4, 0.2]
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
        self._writer.writerow(
            [f"{start:.6f}", f"{response_time:.3f}", status, 0 if exception else 1, error]
        )

    def close(self):
        if not self._file.closed:
            self._file.close()


_log: RequestLog | None = None


@events.init.add_listener
def _open_request_log(environment, runner=None, **_kw):
    global _log
    prefix = os.environ.get("SCORING_LAB_REQUEST_LOG")
    if not prefix or isinstance(runner or environment.runner, MasterRunner):
        return
    _log = RequestLog(f"{prefix}_{os.getpid()}.csv")
    environment.events.request.add_listener(_log.on_request)
    atexit.register(_log.close)


@events.quitting.add_listener
def _close_request_log(environment, **_kw):
    if _log is not None:
        _log.close()


class ScoringUser(FastHttpUser):
    """Posts the iris features as JSON once per pacing period; a response counts only when
    it is HTTP 200 with a numeric `detail`."""

    def on_start(self):
        self._pacer = Pacer(PACING_S, ARRIVAL, _rng)
        delay = self._pacer.start(time.monotonic())
        if delay > 0:
            gevent.sleep(delay)

    def wait_time(self):
        return self._pacer.wait(time.monotonic())

    @task
    def score(self):
        with self.client.post(
            PATH,
            json=PAYLOAD,
            headers={"Content-Type": "application/json"},
            name=PATH,
            catch_response=True,
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}")
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
