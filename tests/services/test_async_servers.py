"""The async apps' servers (issue 26): uvicorn's parser and loop as settings, gunicorn's own
ASGI worker. Options and refusals here, without a server; through the real servers in
tests/services/test_async_servers_real.py."""

from __future__ import annotations

import pytest

from services import uvicorn_server
from services.serve import GUNICORN_ASGI_REFUSED, gunicorn_asgi_options, startup_error
from services.settings import Arch, Role, Settings
from services.uvicorn_server import options


def test_the_default_build_is_httptools_on_uvloop_with_the_lab_limits():
    built = options(Role.SCORING, Settings(port=9100, workers=3))
    assert built["http"] == "services.async_app.protocol:LabHttpToolsProtocol"
    assert built["loop"] == "uvloop"
    assert (built["port"], built["workers"], built["lifespan"]) == (9100, 3, "on")


def test_h11_and_asyncio_are_chosen_by_their_settings():
    built = options(Role.MODEL, Settings(uvicorn_http="h11", uvicorn_loop="asyncio"))
    assert built["http"] == "services.async_app.h11_protocol:LabH11Protocol"
    assert built["loop"] == "asyncio"


def test_a_profiled_service_runs_on_asyncio_whatever_the_loop_setting(tmp_path):
    settings = Settings(profiling=True, run_dir=str(tmp_path))
    assert options(Role.SCORING, settings)["loop"] == "asyncio"


def test_the_protocol_import_strings_resolve_to_uvicorn_protocols():
    from uvicorn.importer import import_from_string
    from uvicorn.protocols.http.h11_impl import H11Protocol
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    for http, base in (("httptools", HttpToolsProtocol), ("h11", H11Protocol)):
        assert issubclass(import_from_string(options(Role.SCORING, Settings(uvicorn_http=http))
                                             ["http"]), base)


def test_gunicorn_asgi_runs_the_asgi_worker_with_lifespan_and_the_sync_timeouts():
    settings = Settings(server="gunicorn-asgi", port=9101, workers=2, keep_alive_s=7)
    built = gunicorn_asgi_options(Role.SCORING, settings)
    assert built["worker_class"] == "asgi" and built["asgi_lifespan"] == "on"
    assert (built["bind"], built["workers"], built["keepalive"]) == ("127.0.0.1:9101", 2, 7)
    assert (built["timeout"], built["graceful_timeout"]) == (60, 10)
    assert built["asgi_loop"] == "uvloop"


def test_gunicorn_asgi_is_refused_with_its_reason_until_its_hang_is_contained():
    reason = startup_error(Arch.ASYNC, Settings(server="gunicorn-asgi"), Role.SCORING)
    assert reason == GUNICORN_ASGI_REFUSED and "\n" not in reason
    assert reason.startswith("SCORING_LAB_SERVER=gunicorn-asgi: ") and "timeout" in reason


@pytest.mark.parametrize(("arch", "given", "named"), [
    (Arch.SYNC, {"server": "gunicorn-asgi"}, "SCORING_LAB_SERVER=gunicorn-asgi"),
    (Arch.SYNC, {"uvicorn_http": "h11"}, "SCORING_LAB_UVICORN_HTTP=h11"),
    (Arch.SYNC, {"uvicorn_loop": "asyncio"}, "SCORING_LAB_UVICORN_LOOP=asyncio"),
    (Arch.SYNC, {"server": "granian", "uvicorn_http": "h11"}, "SCORING_LAB_UVICORN_HTTP=h11"),
    (Arch.ASYNC, {"server": "granian", "uvicorn_loop": "asyncio"},
     "SCORING_LAB_UVICORN_LOOP=asyncio"),
])
def test_settings_the_server_would_ignore_are_refused_in_one_line(arch, given, named):
    reason = startup_error(arch, Settings(**given), Role.SCORING)
    assert reason is not None and reason.startswith(named) and "\n" not in reason


def test_uvicorn_settings_on_uvicorn_are_accepted():
    settings = Settings(uvicorn_http="h11", uvicorn_loop="asyncio")
    assert startup_error(Arch.ASYNC, settings, Role.SCORING) is None
    assert uvicorn_server.loop(settings).value == "asyncio"
