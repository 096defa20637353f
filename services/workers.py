"""How many worker processes a service runs by default.

The original's images auto-tuned their worker count: tiangolo's meinheld-gunicorn image ran
2 workers per core, the uvicorn-gunicorn image 1 per core, both at least 2. The lab keeps that
rule but counts the cores this process may run on (its CPU affinity, set by the deployment's
pinning), not every core of the machine.
"""

from __future__ import annotations

import os

from services.settings import Arch, Server, Settings, SyncWorker

WORKERS_PER_CORE = {Arch.SYNC: 2, Arch.ASYNC: 1}
MIN_WORKERS = 2


def usable_cores() -> int:
    return len(os.sched_getaffinity(0))


def worker_count(settings: Settings, arch: Arch, cores: int | None = None) -> int:
    if settings.workers is not None:
        return settings.workers
    cores = usable_cores() if cores is None else cores
    return max(MIN_WORKERS, WORKERS_PER_CORE[arch] * cores)


def sync_requests_per_worker(settings: Settings) -> int:
    """How many requests one sync worker has in its handler at once: one for the blocking
    workers (meinheld unpatched, sync), a thread each for gthread, a greenlet each (up to
    gunicorn's ``worker_connections``) for gevent, a blocking thread each on granian (which
    has no gunicorn worker class: services/granian_server.py)."""
    if settings.server is Server.GRANIAN:
        return settings.granian_blocking_threads
    if settings.sync_worker is SyncWorker.GTHREAD:
        return settings.gthread_threads
    if settings.sync_worker is SyncWorker.GEVENT:
        return settings.gevent_connections
    return 1
