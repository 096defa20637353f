"""The gunicorn worker class the lab runs meinheld with: meinheld's own worker, minus two of
meinheld 1.0.2's defects (the project is unmaintained; the sync architecture stays meinheld).

1. meinheld's ``MeinheldWorker.__init__`` assigns ``gunicorn.glogging.Logger.error`` (the class
   attribute) a function of the signature ``(exc_type, value, tb)``. gunicorn builds each worker
   object in the *master* before forking, so the master's logger is replaced too. When a worker
   dies of SIGKILL, the master logs ``log.error("Worker (pid:%s) was sent %s! Perhaps out of
   memory?", pid, "SIGKILL")``, which lands in that function as ``format_exception(str, int,
   str)`` and raises; the main loop's handler then calls ``log.error(..., exc_info=True)``,
   which raises TypeError out of ``Arbiter.run``: the master dies and every worker follows it.
   This class never patches gunicorn's Logger; meinheld's C server gets its own small logger
   object with the signatures it calls (``error(exc_type, value, tb)``, ``access(environ)``).

2. meinheld answers a CONNECT, or an ``Upgrade`` that is not a websocket, in C with an HTML 400
   but leaves a Python exception ("unknow protocol") pending in the worker's thread state
   (server.c, ``parse_new_protocol``). The next request of that worker then fails inside the
   app with that exception and gets meinheld's HTML 500: one client fails another's request.
   meinheld's C loop clears a pending exception only after calling an access logger
   (log.c, ``call_access_logger``), which it calls in ``clean_client`` after every response,
   its own error pages included. So this worker always installs one, a no-op: the poison is
   cleared when the poisoning connection closes, before the next request is read. When the
   CONNECT is pipelined behind a good request on one connection, meinheld calls the app for
   the good one before that close: the worker's WSGI entry point clears it first, too.

Not contained (no hook runs before meinheld's C parser; meinheld_limits.py, docs/services.md "Known
limits"): a chunked request with a trailer field kills the worker with SIGSEGV. After the last
header, ``headers_complete_cb`` adds it and sets the pending field and value to NULL; the
parser then reports trailer fields through the same ``header_field_cb``, which calls
``add_header`` again and reads the NULL value (http_request_parser.c). The master replaces the
worker (fast: serve.py imports the app's modules in the master).
"""

from __future__ import annotations

import ctypes

from gunicorn.workers.base import Worker
from meinheld import server
from meinheld.gmeinheld import MeinheldWorker


class _ServerLog:
    """What meinheld's C server calls, routed to the worker's gunicorn logger."""

    def __init__(self, log) -> None:
        self._log = log

    def error(self, exc_type, value, tb) -> None:
        # meinheld calls this with an exception it caught in C (a failed app call, an I/O error).
        self._log.error("meinheld: %s", value, exc_info=(exc_type, value, tb))

    def access(self, environ) -> None:
        # Installed for defect 2 above, so it stays cheap: the lab writes no access logs
        # (gunicorn's `accesslog` is None).
        self.clear_pending()

    def clear_pending(self) -> None:
        # A ctypes call into the C API raises the exception pending in the thread state, if
        # any, as an ordinary one: caught here (which clears it) and logged in one line.
        try:
            _raise_pending()
        except Exception as exc:  # noqa: BLE001 - whatever meinheld left pending
            self._log.warning("meinheld left an exception pending after refusing a request "
                              "(%s: %s); cleared", type(exc).__name__, exc)


# ctypes checks PyErr_Occurred() after every call into the Python C API (pythonapi) and raises
# what it finds: that is the point here. PyErr_Occurred itself has no side effect.
_raise_pending = ctypes.pythonapi.PyErr_Occurred
_raise_pending.restype = ctypes.c_void_p
_raise_pending.argtypes = []


class LabMeinheldWorker(MeinheldWorker):
    def __init__(self, *args, **kwargs) -> None:
        # gunicorn's base __init__ only: MeinheldWorker.__init__ is where the Logger patch is.
        Worker.__init__(self, *args, **kwargs)

    def init_process(self) -> None:
        # In the worker, after the fork: the master's copy of meinheld is never configured.
        self._server_log = _ServerLog(self.log)
        server.set_error_logger(self._server_log)
        server.set_access_logger(self._server_log)
        super().init_process()

    def load_wsgi(self) -> None:
        super().load_wsgi()
        app, clear_pending = self.wsgi, self._server_log.clear_pending

        def guarded(environ, start_response):
            clear_pending()  # a pipelined CONNECT/Upgrade parsed before this request ran
            return app(environ, start_response)

        self.wsgi = guarded
