"""Start one lab service in the foreground: gunicorn for the sync apps, uvicorn for the async
ones. The process stays the server's master, so a supervisor's SIGTERM stops its workers."""

from __future__ import annotations

import importlib
import logging

from gunicorn.app.base import BaseApplication

from services import admission, device, granian_server
from services.settings import Arch, ModelBatching, Role, Server, Settings, SyncWorker
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
_SYNC_FACTORIES = {
    Role.MODEL: "services.sync_app.model_api:create_app",
    Role.SCORING: "services.sync_app.scoring_api:create_app",
}
_ASYNC_FACTORIES = {
    Role.MODEL: "services.async_app.asgi:model_app",
    Role.SCORING: "services.async_app.asgi:scoring_app",
}


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
    batching = settings.model_batching
    if role is Role.MODEL and arch is Arch.SYNC and batching is not ModelBatching.OFF:
        return (f"SCORING_LAB_MODEL_BATCHING={batching.value}: only the async "
                "model API batches (the sync one serves each request as a batch of one)")
    return None


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
        _Gunicorn(_SYNC_FACTORIES[role], gunicorn_options(role, settings)).run()
        return
    import uvicorn

    from services.async_app.protocol import LabHttpToolsProtocol

    logging.basicConfig(level=logging.INFO)
    uvicorn.run(
        _ASYNC_FACTORIES[role],
        factory=True,
        host=settings.host,
        port=settings.port_for(role, arch),
        workers=worker_count(settings, arch),
        # pyinstrument's async mode cannot see awaits under uvloop (it records the bare loop):
        # a profiled service runs on asyncio's own loop (services/profiling.py).
        loop="asyncio" if settings.profiling else "uvloop",
        # httptools with the lab's request timeout, header limit and error shape.
        http=LabHttpToolsProtocol,
        timeout_keep_alive=settings.keep_alive_s,
        access_log=False,
        log_level="info",
        lifespan="on",
        timeout_graceful_shutdown=10,
    )
