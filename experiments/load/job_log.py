"""What a job client records: one row per job, from its scheduled submit to the poll that saw
it end (experiments/load/job_client.py writes it, experiments/analysis/jobs.py reads it). Plain
Python, no locust: the runner, the client and the analysis share these names.

A job client is an open-model arrival (experiments/load/arrivals.py) that, instead of one
in-line request, submits a job (``POST .../jobs``: 202 and a ``Location``) and then polls that
Location every ``poll_interval_s`` (counted from the previous poll's answer, as a client that
sleeps between polls does) until the job is done or failed, or ``deadline_s`` after its
scheduled submit. With ``wait_s``, the client long-polls instead: each poll asks the server to
wait up to ``wait_s`` for the job's end (``?wait=``, services/jobs.py) and the next is sent as
soon as its answer arrives, the first right after the 202. Columns of ``jobs_<pid>.csv``:

    scheduled_unix   when the open model scheduled the submit (time to result counts from it)
    submit_unix      when the submit was sent (later than scheduled when the client was behind)
    submit_ms        the submit's own answer time
    submit_status    its HTTP status (0: no answer)
    job_id           the id the 202 gave ("" when not accepted)
    outcome          one of OUTCOMES
    result_unix      when the answer of the poll that saw the job end arrived ("" when none did)
    polls            polls sent for this job
    poll_errors      polls answered with anything but a job status (5xx, no answer): the client
                     keeps polling after them, as a client retrying a poll does
    error            the failed job's error code, or what went wrong ("" when done)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

JOB_LOG_COLUMNS = ["scheduled_unix", "submit_unix", "submit_ms", "submit_status", "job_id",
                   "outcome", "result_unix", "polls", "poll_errors", "error"]
# done: a poll saw it done with a numeric result; wrong_answer: done without one; failed: the
# job ended failed (error: its code); rejected: the submit was answered 503 queue_full (nothing
# queued); submit_error: any other submit answer, or none; lost: a poll answered 404 (the id is
# unknown: the job or its answer is gone); deadline: not ended deadline_s after its scheduled
# submit; unfinished: still being polled when the run ended.
OUTCOMES = ("done", "wrong_answer", "failed", "rejected", "submit_error", "lost", "deadline",
            "unfinished")
ACCEPTED_OUTCOMES = ("done", "wrong_answer", "failed", "lost", "deadline", "unfinished")


@dataclass(frozen=True)
class JobSpec:
    """How a job client polls: every poll_interval_s, giving up deadline_s after its scheduled
    submit; with wait_s, long polls of up to wait_s each, one after the other (poll_interval_s
    unused)."""

    poll_interval_s: float
    deadline_s: float
    wait_s: float | None = None

    def __post_init__(self) -> None:
        names = ("poll_interval_s", "deadline_s") + (("wait_s",) if self.wait_s is not None
                                                     else ())
        for name in names:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"{name} = {value!r}: must be a number > 0 (seconds)")
        if self.deadline_s <= self.poll_interval_s:
            raise ValueError(f"deadline_s = {self.deadline_s!r}: must be longer than "
                             f"poll_interval_s ({self.poll_interval_s!r}), or no poll is sent")

    @property
    def mode(self) -> str:
        """"wait" (long polls) or "poll" (every poll_interval_s)."""
        return "poll" if self.wait_s is None else "wait"

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def job_log_path(request_log_prefix: str | Path, pid: int) -> Path:
    """Where a Locust process writes its job rows: beside its request log, named as it is
    (``<dir>/requests`` -> ``jobs_<pid>.csv``; a worker host's ``requests_<host>`` ->
    ``jobs_<host>_<pid>.csv``, which the controller moves up with the request logs)."""
    prefix = Path(request_log_prefix)
    return prefix.with_name(prefix.name.replace("requests", "jobs", 1) + f"_{pid}.csv")
