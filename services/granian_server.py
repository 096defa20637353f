"""A lab service on granian (``SCORING_LAB_SERVER=granian``; issue 26): Flask on granian's WSGI
interface, FastAPI on its ASGI interface, the same app factories as gunicorn and uvicorn.

How it maps the lab's process model (granian 2.8, its embedded ``granian.server.Server``):
- The process that calls ``run`` stays granian's master: it binds the socket, starts the
  workers and, on SIGTERM or SIGINT, stops them (SIGTERM to each, then SIGKILL after
  ``GRACEFUL_S``), and exits. A worker that dies is replaced, as gunicorn's master does.
  A worker installs its own SIGTERM handler only once its app is built; before, it runs the
  master's handler it inherited at the fork, which only flags the master's own loop, so the
  worker would ignore the signal (then be killed after ``GRACEFUL_S``). So the master's
  handler (``_LabServer``) takes the default action in any process but the master, which
  covers a worker from its fork on, and ``build_app`` restores the default action while it
  builds: a worker stopped before it serves exits at once (it serves nothing yet).
- Workers are ``multiprocessing`` processes, forked on Linux (Python 3.12's start method; a
  spawned one would inherit the environment all the same), after ``serve.py`` has put the
  model device's FIFO path in ``os.environ`` (services/device.py): every worker finds it.
- ``factory=True``: each worker imports the factory and calls it once, after the fork, so the
  app's Redis and HTTP clients are per worker, as on gunicorn (no preload) and uvicorn.
- The sync app runs in ``granian_blocking_threads`` threads per worker; admission control
  (services/sync_app/admission.py) gates in the app, as for gevent: its lock is thread-safe.
  A request waiting for a free blocking thread waits inside granian (its ``backpressure``),
  where no Python code sees it, as meinheld's backlog is unseen. The async app's admission
  middleware is unchanged; arrival is when it runs (granian does not say when it parsed).

The lab's limits on granian (what README "Servers: granian" lists):
- ``request_timeout_s`` -> http1 ``header_read_timeout``: a head not complete in time closes
  the connection (no 408 body: granian answers nothing). hyper starts that timer for every
  request head, so it also closes a kept-alive connection idle that long.
- ``max_header_bytes`` -> http1 ``max_buffer_size`` (at least hyper's floor of 8192): a head
  past it is refused by granian before the app, with its own bodiless 431.
- The body has no granian timer: the async apps bound it themselves (``build_app`` wraps them
  in services/async_app/body_deadline.py, ``request_timeout_s`` from when the app sees the
  request: 408); a sync request whose body never completes holds its blocking thread.
- ``keep_alive_s``: not enforceable. granian's HTTP/1 keep-alive is on or off, with no idle
  timeout of its own; an idle connection is closed only by the head timeout above.
- ``max_body_bytes``, bad JSON, bad query: the apps' own checks, unchanged.
"""

from __future__ import annotations

import copy
import importlib
import logging
import os
import signal
from typing import Any

from services import admission
from services.apps import FACTORIES
from services.settings import Arch, Role, Settings, SyncWorker, UvicornHttp, UvicornLoop
from services.workers import worker_count

# gunicorn's graceful_timeout and uvicorn's timeout_graceful_shutdown in serve.py.
GRACEFUL_S = 10
# hyper refuses a read buffer below this (granian's http1 max_buffer_size).
HYPER_MIN_BUFFER = 8192


def startup_error(arch: Arch, settings: Settings) -> str | None:
    """Why this service cannot run on granian as configured (one line), or None."""
    if arch is Arch.SYNC and settings.meinheld_patch:
        return ("SCORING_LAB_MEINHELD_PATCH=true: meinheld's greenlet patching needs the "
                "meinheld worker; granian runs Flask in its own threads (SCORING_LAB_SERVER="
                "granian)")
    if arch is Arch.SYNC and settings.sync_worker is not SyncWorker.MEINHELD:
        return (f"SCORING_LAB_SYNC_WORKER={settings.sync_worker.value}: a gunicorn worker "
                "class; granian has no gunicorn (its knob is SCORING_LAB_GRANIAN_BLOCKING_"
                "THREADS, SCORING_LAB_SERVER=granian)")
    if arch is Arch.ASYNC and settings.uvicorn_http is not UvicornHttp.HTTPTOOLS:
        return (f"SCORING_LAB_UVICORN_HTTP={settings.uvicorn_http.value}: uvicorn's parser; "
                "granian parses HTTP itself (SCORING_LAB_SERVER=granian)")
    if arch is Arch.ASYNC and settings.uvicorn_loop is not UvicornLoop.UVLOOP:
        return (f"SCORING_LAB_UVICORN_LOOP={settings.uvicorn_loop.value}: uvicorn's loop; "
                "granian runs uvloop (SCORING_LAB_SERVER=granian)")
    if arch is Arch.SYNC and settings.profiling:
        # services/profiling.py profiles a sync worker's one thread (a window: "all the worker
        # does"); granian runs the sync app in many blocking threads, so a profile would miss
        # the others' work. The async app runs on one event loop per worker, as on uvicorn.
        return ("SCORING_LAB_PROFILING=true: the sync profiler sees one thread, granian runs "
                "Flask in SCORING_LAB_GRANIAN_BLOCKING_THREADS threads (SCORING_LAB_SERVER="
                "granian)")
    return None


def _log_config() -> dict[str, Any]:
    """granian's own logging config plus the root logger at INFO, so the apps' log lines
    (the admission counters among them) reach the service's log as on the default servers.
    granian replaces its config's top-level keys with ours, so its loggers are kept."""
    from granian.log import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["root"] = {"handlers": ["console"], "level": "INFO"}
    return config


def granian_options(role: Role, arch: Arch, settings: Settings) -> dict[str, Any]:
    """The keyword arguments of ``granian.server.Server`` for one service (pure: no socket)."""
    from granian.constants import HTTPModes, Interfaces, Loops
    from granian.http import HTTP1Settings

    wsgi = arch is Arch.SYNC
    return {
        "target": FACTORIES[(role, arch)],
        "factory": True,  # the target is a factory (run passes build_app, which calls it)
        "address": settings.host,
        "port": settings.port_for(role, arch),
        "interface": Interfaces.WSGI if wsgi else Interfaces.ASGI,  # ASGI: lifespan runs
        "workers": worker_count(settings, arch),
        # Only WSGI runs the app in blocking threads; granian refuses > 1 for ASGI.
        "blocking_threads": settings.granian_blocking_threads if wsgi else 1,
        # uvloop as on uvicorn; pyinstrument's async mode cannot see awaits under uvloop, so a
        # profiled service runs on asyncio's own loop (as serve.py does for uvicorn).
        "loop": Loops.asyncio if settings.profiling else Loops.uvloop,
        # The lab speaks HTTP/1.1 only (no h2c on the default servers either).
        "http": HTTPModes.http1,
        "websockets": False,
        "http1_settings": HTTP1Settings(
            header_read_timeout=max(1, round(settings.request_timeout_s * 1000)),
            keep_alive=True,
            max_buffer_size=max(HYPER_MIN_BUFFER, settings.max_header_bytes),
        ),
        "log_access": False,
        "log_level": "info",
        "log_dictconfig": _log_config(),
        "respawn_failed_workers": True,  # as gunicorn's master replaces a dead worker
        "workers_kill_timeout": GRACEFUL_S,
    }


def build_app(target: str) -> Any:
    """granian's target loader, run in each worker after the fork: the factory's app, built
    with SIGTERM and SIGINT at their default action (the module says why)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    module, name = target.split(":")
    app = getattr(importlib.import_module(module), name)()
    if target in (FACTORIES[(role, Arch.ASYNC)] for role in (Role.MODEL, Role.SCORING)):
        # granian times the head only: the body gets the lab's deadline from the app.
        from services.async_app.body_deadline import BodyDeadline

        app = BodyDeadline(app, Settings().request_timeout_s)
    return app


def _log_admission() -> None:
    """The admission counters of this worker, one line: gunicorn's worker_exit line."""
    logging.getLogger("scoring_lab.admission").info(
        "admission counters: %s", admission.for_process(Settings()).stats_json().decode())


def wsgi_worker_logging_admission(*args: Any, **kwargs: Any) -> None:
    """granian's WSGI worker, then its admission counters once it has stopped serving (the
    async app logs them from its lifespan's shutdown, which granian's ASGI interface runs).
    Module level: the master hands it to each worker process as its target."""
    from granian.server import Server

    try:
        Server._spawn_wsgi_worker(*args, **kwargs)
    finally:
        _log_admission()


def _lab_server(options: dict[str, Any]) -> Any:
    """granian's server whose SIGTERM/SIGINT handler acts as the default action in a forked
    worker that still has it (the module says why): checked by pid, not by when the worker
    replaces it, so no window is left between the fork and ``build_app``."""
    from granian.server import Server

    master = os.getpid()

    class _LabServer(Server):
        def signal_handler_interrupt(self, signum=signal.SIGTERM, *args, **kwargs):
            if os.getpid() != master:
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)
                return
            super().signal_handler_interrupt(signum, *args, **kwargs)

    return _LabServer(**options)


def run(role: Role, arch: Arch, settings: Settings) -> None:
    """Serve in the foreground until SIGTERM/SIGINT; this process is granian's master."""
    server = _lab_server(granian_options(role, arch, settings))
    if arch is Arch.SYNC and role is Role.SCORING and admission.enabled(settings):
        server.serve(spawn_target=wsgi_worker_logging_admission, target_loader=build_app)
    else:
        server.serve(target_loader=build_app)
