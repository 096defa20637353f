"""``python -m services serve --role queue --arch sync|async``: the job queue's workers as one
supervised service (services/jobs.py).

This process is the master, as gunicorn's and uvicorn's are for the HTTP services: it forks
``workers`` worker processes (the same default as the scoring handler of the architecture:
services/workers.py), replaces any that dies (killed, crashed) and, on SIGTERM or SIGINT, passes
SIGTERM on to them (each finishes the job in hand: RQ's warm shutdown, SAQ's grace period), waits
for them, and exits. A sync worker (RQ) runs one job at a time; an async one (SAQ) up to
``queue_concurrency``.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Callable

from services.settings import Arch, Settings
from services.workers import worker_count

log = logging.getLogger("scoring_lab.queue_workers")
# A worker that dies sooner than this after its start is replaced only this long after its
# start, so a worker that cannot start (Redis refusing it, say) is not forked in a busy loop.
MIN_LIFETIME_S = 2.0
# How often the master looks for dead workers.
CHECK_S = 0.2


def _runner(arch: Arch) -> Callable[[Settings], None]:
    if arch is Arch.SYNC:
        from services.sync_app.job_queue import work
    else:
        from services.async_app.job_queue import work
    return work


def _child(work: Callable[[Settings], None], settings: Settings) -> None:
    # A fork keeps the master's Python signal handlers: the worker's own library installs its.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    work(settings)


def supervise(arch: Arch, settings: Settings) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s [%(process)d] %(message)s")
    work = _runner(arch)  # imported once here, before any fork (as gunicorn's master does)
    context = multiprocessing.get_context("fork")
    stopping = False

    def request_stop(signum, _frame) -> None:
        nonlocal stopping
        stopping = True

    def start() -> tuple[multiprocessing.Process, float]:
        process = context.Process(target=_child, args=(work, settings),
                                  name=f"{settings.service or 'queue-' + arch}-worker")
        process.start()
        return process, time.monotonic()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    count = worker_count(settings, arch)
    workers = [start() for _ in range(count)]
    log.info("queue-%s master %d: %d worker(s) %s", arch, os.getpid(), count,
             [p.pid for p, _ in workers])
    while not stopping:
        for slot, (process, started) in enumerate(workers):
            if process.is_alive() or time.monotonic() - started < MIN_LIFETIME_S:
                continue
            process.join()
            workers[slot] = start()
            log.warning("queue-%s worker %d exited (code %s): replaced by %d", arch, process.pid,
                        process.exitcode, workers[slot][0].pid)
        time.sleep(CHECK_S)
    log.info("queue-%s master %d: stopping its workers", arch, os.getpid())
    for process, _ in workers:
        if process.is_alive():
            os.kill(process.pid, signal.SIGTERM)
    # Each worker may finish the job in hand (at most a job's timeout), then a little more.
    deadline = time.monotonic() + settings.queue_job_timeout_s + 5
    for process, _ in workers:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()
