"""The async apps on uvicorn (the default async server): its options from the settings, and the
start. The parser (SCORING_LAB_UVICORN_HTTP) and the loop (SCORING_LAB_UVICORN_LOOP) are
settings; every committed run used httptools and uvloop, which ``uvicorn[standard]`` installs.

Both parsers run with the lab's request timeout, head limits and error shape:
services/async_app/protocol.py for httptools, services/async_app/h11_protocol.py for h11
(whose docstring lists what differs between them).
"""

from __future__ import annotations

import logging

from services.apps import FACTORIES
from services.settings import Arch, Role, Settings, UvicornHttp, UvicornLoop
from services.workers import worker_count

_PROTOCOLS = {
    UvicornHttp.HTTPTOOLS: "services.async_app.protocol:LabHttpToolsProtocol",
    UvicornHttp.H11: "services.async_app.h11_protocol:LabH11Protocol",
}


def loop(settings: Settings) -> UvicornLoop:
    """The event loop a service runs on. pyinstrument's async mode cannot see awaits under
    uvloop (it records the bare loop): a profiled service runs on asyncio's own loop
    (services/profiling.py), whatever the setting."""
    return UvicornLoop.ASYNCIO if settings.profiling else settings.uvicorn_loop


def options(role: Role, settings: Settings) -> dict[str, object]:
    """uvicorn.run's keyword arguments for one async service."""
    return {
        "factory": True,
        "host": settings.host,
        "port": settings.port_for(role, Arch.ASYNC),
        "workers": worker_count(settings, Arch.ASYNC),
        "loop": loop(settings).value,
        # An import string, not the class: uvicorn resolves it in each worker.
        "http": _PROTOCOLS[settings.uvicorn_http],
        "timeout_keep_alive": settings.keep_alive_s,
        "access_log": False,
        "log_level": "info",
        "lifespan": "on",
        "timeout_graceful_shutdown": 10,
    }


def run(role: Role, arch: Arch, settings: Settings) -> None:
    import uvicorn

    logging.basicConfig(level=logging.INFO)
    uvicorn.run(FACTORIES[(role, Arch.ASYNC)], **options(role, settings))
