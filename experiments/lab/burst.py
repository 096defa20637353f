"""A burst beside a base load: a second open-model stream for a while, from its own Locust
process (two independent Poisson streams sum to one of their summed rate), so that a base
load's schedule runs on undisturbed while the burst comes and goes. Started and stopped like a
fault (experiments/lab/faults.py ``FaultWindow``: ``start()``, ``stop()``, ``name``), so a
timeline places it in the base run as it places a fault; experiment 9's metastability trigger
and experiment 8's queue burst.

    burst = Burst(lab, "async", out / "burst", model, 20.0, payload)
    with FaultWindow(burst, before_s, burst_s): lab.locust(...)   # the base load
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments.lab.session import Session
from experiments.load.arrivals import OpenModel
from experiments.load.run import LocustResult, run_locust
from experiments.protocol import Scenario
from services.describe import predict_path


@dataclass
class Burst:
    """A second open-model stream for `duration_s` beside the base load; stop() waits for it
    to end (its schedule, drain and start-up bound it). `path` is the endpoint (default: the
    in-line predict path); `job` makes its clients submit jobs and poll them
    (experiments/load/job_client.py)."""

    lab: Session
    arch: str
    out_dir: Path
    model: OpenModel
    duration_s: float
    payload: tuple[float, ...]
    name: str = "burst"
    path: str | None = None
    job: dict[str, Any] | None = None
    result: LocustResult | None = None
    error: str | None = None
    _thread: threading.Thread | None = field(default=None, repr=False)

    def _run(self) -> None:
        try:
            self.result = run_locust(
                Scenario(name="burst", kind="open", rate=self.model.rate,
                         duration_s=self.duration_s),
                self.lab.topology.scoring_url(self.arch), self.path or predict_path(self.arch),
                self.out_dir, arrival="open", cpus=self.lab.load.local_cpus or None,
                guard=self.lab.guard, payload=self.payload, arch=self.arch,
                workers=self.lab.load.local_workers,
                extra_env={"SCORING_LAB_SERVICE": "loadgen",
                           "SCORING_LAB_RUN_DIR": self.lab.load.local_run_dir},
                open_model=self.model, job=self.job)
        except Exception as exc:  # noqa: BLE001 - recorded in the trigger's record
            self.error = f"{type(exc).__name__}: {exc}"

    def start(self) -> dict[str, Any]:
        self._thread = threading.Thread(target=self._run, name="burst")
        self._thread.start()
        return {"rate": self.model.rate, "duration_s": self.duration_s}

    def stop(self) -> dict[str, Any]:
        if self._thread is not None:
            self._thread.join()
        return {"requests": self.result.n_requests if self.result else 0,
                "valid": bool(self.result and self.result.valid), "error": self.error}
