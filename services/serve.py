"""Start one lab service in the foreground: gunicorn for the sync apps, uvicorn for the async
ones (services/uvicorn_server.py), or granian for either (SCORING_LAB_SERVER=granian,
services/granian_server.py); gunicorn's own ASGI worker for them
(SCORING_LAB_SERVER=gunicorn-asgi) is refused for now (GUNICORN_ASGI_REFUSED). The process
stays the server's master, so a supervisor's SIGTERM stops its workers."""

from __future__ import annotations

import importlib

from gunicorn.app.base import BaseApplication

from services import admission, device, granian_server, uvicorn_server
from services.apps import FACTORIES
from services.settings import (
    Arch,
    ModelBatching,
    Role,
    Server,
    Settings,
    SyncWorker,
    UvicornHttp,
    UvicornLoop,
)
from services.sync_app import meinheld_patch
from services.workers import worker_count

_GUNICORN_WORKER = {
    # meinheld's own worker minus two of its defects (see the module).
    SyncWorker.MEINHELD: "services.sync_app.meinheld_worker.LabMeinheldWorker",
    SyncWorker.SYNC: "sync",
    SyncWorker.GTHREAD: "gthread",
    # gunicorn's own; it calls gevent's monkey.patch_all() in the worker, after the fork. Each
    # worker then logs gevent's MonkeyPatchWarning that ssl was imported first (gunicorn
    # imports it in the master): harmless here, no lab connection uses TLS.
    SyncWorker.GEVENT: "gevent",
}
# uvicorn's settings, and the server that reads them (their defaults are what any other runs).
_UVICORN_DEFAULTS = {"uvicorn_http": UvicornHttp.HTTPTOOLS, "uvicorn_loop": UvicornLoop.UVLOOP}


# Why the async apps do not run on gunicorn's ASGI worker (gunicorn 27.0.1), measured on the
# model API (README, "Servers: uvicorn's parser and loop, gunicorn's ASGI worker"): no timer
# before or during a request, so an idle connection, a cut-off head and a cut-off body each
# still held their connection after 30 s (uvicorn with either parser: 5 s idle, 408 at 3 s);
# and its parser's refusals are plain text, not the lab's error shape (the bounded fuzz, 100
# cases a role: 17 of 96 model cases failed on them; scoring's cut-off requests hung).
# gunicorn_asgi_options below is what it would run with, once that is contained.
GUNICORN_ASGI_REFUSED = (
    "SCORING_LAB_SERVER=gunicorn-asgi: gunicorn 27.0.1's ASGI worker has no request or idle "
    "timeout (a cut-off request holds its connection: > 30 s measured) and answers its "
    "parser's refusals in plain text; refused until that is contained")


class StartupError(RuntimeError):
    """A service that cannot run as configured: one line, before any worker starts."""


def startup_error(arch: Arch, settings: Settings, role: Role = Role.MODEL) -> str | None:
    """Why this service would crash or not do what it was told once it serves (so it must
    not start), or None."""
    if settings.server is Server.GRANIAN and (
            reason := granian_server.startup_error(arch, settings)) is not None:
        return reason
    if arch is Arch.SYNC and settings.meinheld_patch:
        return meinheld_patch.incompatibility()
    if arch is Arch.SYNC and settings.server is Server.GUNICORN_ASGI:
        return (f"SCORING_LAB_SERVER={settings.server.value}: gunicorn's ASGI worker serves "
                "the async apps only (the sync ones are WSGI)")
    if settings.server is Server.GUNICORN_ASGI:
        return GUNICORN_ASGI_REFUSED
    uvicorn_runs = arch is Arch.ASYNC and settings.server is Server.DEFAULT
    for name, default in _UVICORN_DEFAULTS.items():
        value = getattr(settings, name)
        if value is not default and not uvicorn_runs:
            return (f"SCORING_LAB_{name.upper()}={value.value}: only uvicorn reads it (the "
                    f"async services on SCORING_LAB_SERVER=default), this one runs "
                    f"{_server_name(arch, settings)}")
    batching = settings.model_batching
    if role is Role.MODEL and arch is Arch.SYNC and batching is not ModelBatching.OFF:
        return (f"SCORING_LAB_MODEL_BATCHING={batching.value}: only the async "
                "model API batches (the sync one serves each request as a batch of one)")
    return None


def _server_name(arch: Arch, settings: Settings) -> str:
    if settings.server is Server.DEFAULT:
        return "gunicorn" if arch is Arch.SYNC else "uvicorn"
    return settings.server.value


class _Gunicorn(BaseApplication):
    def __init__(self, factory_path: str, options: dict[str, object]) -> None:
        self._factory_path = factory_path
        self._options = options
        super().__init__()
        # The app's modules (Flask, requests, redis: ~1 s of imports on a loaded machine) are
        # imported once in the master, so a worker that replaces a dead one (a SIGSEGV in
        # meinheld's parser, an OOM kill) serves after a fork and `create_app`, not a second.
        # Only modules: the app itself, its sockets and pools, are still made per worker.
        # Not for gevent: its worker patches after the fork, and a module imported before that
        # keeps the unpatched objects it bound at import (urllib3's `from threading import
        # RLock`, werkzeug's `Lock`): a native lock held across a greenlet switch blocks the
        # whole worker. (services/cli.py imports redis in the master: redis binds only
        # `time.sleep` early, for retry backoffs, and the lab's Redis retry has none.)
        if options.get("worker_class") != _GUNICORN_WORKER[SyncWorker.GEVENT]:
            importlib.import_module(factory_path.split(":")[0])

    def load_config(self) -> None:
        for name, value in self._options.items():
            self.cfg.set(name, value)

    def load(self):
        # Runs in each worker after the fork (no preload), so clients are per worker.
        module, name = self._factory_path.split(":")
        factory = getattr(__import__(module, fromlist=[name]), name)
        return factory()


def _log_admission(server, worker) -> None:
    """gunicorn's worker_exit hook (runs in the worker): its admission counters, one line."""
    worker.log.info("admission counters: %s",
                    admission.for_process(Settings()).stats_json().decode())


def gunicorn_options(role: Role, settings: Settings) -> dict[str, object]:
    options: dict[str, object] = {
        "bind": f"{settings.host}:{settings.port_for(role, Arch.SYNC)}",
        "workers": worker_count(settings, Arch.SYNC),
        "worker_class": _GUNICORN_WORKER[settings.sync_worker],
        "proc_name": settings.service or f"{role}-sync",
        "timeout": 60,
        "graceful_timeout": 10,
        "accesslog": None,
        "loglevel": "info",
        # gunicorn >= 25 opens a control socket in ~/.gunicorn by default: one path shared by
        # every gunicorn of the user, so several lab services would fight over it.
        "control_socket_disable": True,
    }
    if settings.sync_worker is SyncWorker.GTHREAD:
        options["threads"] = settings.gthread_threads
    if role is Role.SCORING and admission.enabled(settings):
        # Off, gunicorn's own classes run, as in every committed run.
        if settings.sync_worker is SyncWorker.GTHREAD:
            # The bound before the thread queue (the module says why).
            options["worker_class"] = "services.sync_app.gthread_worker.LabThreadWorker"
        options["worker_exit"] = _log_admission
    if settings.sync_worker is SyncWorker.GEVENT:
        options["worker_connections"] = settings.gevent_connections
    if settings.meinheld_patch:
        options["post_fork"] = meinheld_patch.patch_worker
    return options


def gunicorn_asgi_options(role: Role, settings: Settings) -> dict[str, object]:
    """gunicorn's own ASGI worker (gunicorn/workers/gasgi.py) for an async service: the worker
    count of uvicorn, the sync path's timeouts, the app's lifespan run (the async apps open
    their HTTP client and Redis pool in it)."""
    return {
        "bind": f"{settings.host}:{settings.port_for(role, Arch.ASYNC)}",
        "workers": worker_count(settings, Arch.ASYNC),
        "worker_class": "asgi",
        "asgi_loop": uvicorn_server.loop(settings).value,
        # "on": a lifespan that fails stops the worker instead of serving without clients.
        "asgi_lifespan": "on",
        "proc_name": settings.service or f"{role}-async",
        "keepalive": settings.keep_alive_s,
        "timeout": 60,
        "graceful_timeout": 10,
        "accesslog": None,
        "loglevel": "info",
        "control_socket_disable": True,
    }


def serve(role: Role, arch: Arch, settings: Settings) -> None:
    if role is Role.QUEUE:
        # No HTTP server: a master of queue worker processes (services/queue_workers.py).
        from services.queue_workers import supervise

        supervise(arch, settings)
        return
    if (reason := startup_error(arch, settings, role)) is not None:
        raise StartupError(reason)
    if role is Role.MODEL:
        # Before any worker exists: one device for all of them (services/device.py).
        device.share_with_workers(settings)
    if settings.server is Server.GRANIAN:
        granian_server.run(role, arch, settings)
        return
    if arch is Arch.SYNC:
        _Gunicorn(FACTORIES[(role, Arch.SYNC)], gunicorn_options(role, settings)).run()
        return
    if settings.server is Server.GUNICORN_ASGI:  # not reached while GUNICORN_ASGI_REFUSED holds
        _Gunicorn(FACTORIES[(role, Arch.ASYNC)], gunicorn_asgi_options(role, settings)).run()
        return
    uvicorn_server.run(role, arch, settings)
