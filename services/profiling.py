"""Server-side profiling (experiment 1): switched on by a deployment setting, triggered per
request by a header, written under the service's own run directory with a name it chooses.

Switch: ``SCORING_LAB_PROFILING=true`` (needs ``SCORING_LAB_RUN_DIR``; the settings refuse to
load without it). Off, the apps install nothing: the request path is the benchmarked one, a
profile header is simply ignored and no profile header comes back (announcing "profiling is
off" would need a header scan on every request of the measured build). On, one middleware
(WSGI for Flask, ASGI for FastAPI) wraps the app and reads these request headers:

``X-Scoring-Lab-Profile: pyinstrument | yappi | yappi-wall | yappi-cpu``
    profile this one request. ``yappi`` is yappi with the architecture's clock: wall (and its
    coroutine awareness) for the async services, CPU for the sync ones.
``X-Scoring-Lab-Profile-Window: <seconds, 1-30>`` (with the header above, default pyinstrument)
    open a window profile of the whole service: the worker that gets the request writes a
    window marker under ``<run_dir>/profiles/``; every worker of the service that serves a
    request while the window is open profiles all it does (its whole thread, idle time
    included) until the window ends, then writes its own file. A sync worker cannot stop its
    profiler from another thread: it writes when its next request arrives after the window
    (before serving it), so the file may run past the window with idle time; async workers
    also close on a timer. The experiment sends a few requests after each window for that.

Response headers: ``X-Scoring-Lab-Profile-File: <name>`` (files ``<name>.*`` under
``<run_dir>/profiles/``), ``X-Scoring-Lab-Profile-Window-Id: <id>`` (in every file name of that
window) and ``X-Scoring-Lab-Profile-Status``: written, window-started, in-window, busy (one
profile at a time per worker: a busy worker serves the request unprofiled), capped or
not-written (the directory cannot be written; the request is served unprofiled). A bad
header value gets a 400 in the lab's error shape; no header value ever reaches a file name.

Disk cap: a profile is 150-440 KB per request (more for a window), so the files under
``<run_dir>/profiles/`` are capped at ``SCORING_LAB_PROFILES_MAX_BYTES`` (all services of the
run dir together; measured before each profile starts). At the cap a request is served
unprofiled with status ``capped``, no window opens or is joined, and the worker counts the
refusals and logs the first one and every 100th. A profile that cannot be written (disk full)
is logged and counted the same way. Neither ever turns the request into an error.

Names: ``<service>_<pid>_<UTC time>_<sequence>_<req|win-ID>_<profiler>``. Files: pyinstrument
``.html``, ``.txt``, ``.pyisession`` (its sample stacks, read by the experiment's analysis);
yappi ``.txt``, ``.callgrind``, ``.prof`` (pstats), ``.json`` (function stats); every profile a
``.meta.json`` naming the profiler, its clock and mode, the service and the request(s).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import itertools
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services import errors
from services.settings import Arch, Role, Settings

# pyinstrument's sample stacks; a result folder stores them gzipped (experiments/lab/collect.py)
SESSION_SUFFIX = ".pyisession"
PROFILE_HEADER = "X-Scoring-Lab-Profile"
WINDOW_HEADER = "X-Scoring-Lab-Profile-Window"
FILE_HEADER = "X-Scoring-Lab-Profile-File"
WINDOW_ID_HEADER = "X-Scoring-Lab-Profile-Window-Id"
STATUS_HEADER = "X-Scoring-Lab-Profile-Status"
PROFILERS = ("pyinstrument", "yappi", "yappi-wall", "yappi-cpu")
WINDOW_MIN_S, WINDOW_MAX_S = 1.0, 30.0
PYINSTRUMENT_INTERVAL_S = 0.001
_SAFE = re.compile(r"[^A-Za-z0-9.-]+")
log = logging.getLogger(__name__)


def bad_request(message: str) -> errors.ApiError:
    return errors.ApiError(400, "invalid_profile_request", message)


def parse_profiler(value: str | None, arch: Arch) -> tuple[str, str]:
    """(profiler, clock) of a header value; raises ApiError 400 for anything unknown."""
    name = (value or "pyinstrument").strip().lower()
    if name not in PROFILERS:
        raise bad_request(f"{PROFILE_HEADER} must be one of {', '.join(PROFILERS)}, "
                          f"got {value[:40]!r}")
    if name == "pyinstrument":
        return "pyinstrument", "wall"
    if name == "yappi":
        return "yappi", "wall" if arch is Arch.ASYNC else "cpu"
    return "yappi", name.removeprefix("yappi-")


def parse_window(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not WINDOW_MIN_S <= seconds <= WINDOW_MAX_S:  # NaN fails too
        raise bad_request(f"{WINDOW_HEADER} must be seconds between {WINDOW_MIN_S:g} and "
                          f"{WINDOW_MAX_S:g}, got {value[:40]!r}")
    return seconds


def _stamp(when: float) -> str:
    t = dt.datetime.fromtimestamp(when, tz=dt.UTC)
    return t.strftime("%Y%m%dT%H%M%S") + f"{t.microsecond // 1000:03d}Z"  # no dot in names


# ------------------------------------------------------------------------ one profile


@dataclass
class Capture:
    """One running profile: the profiler, where it will be written, what it covered."""

    profiler: str
    clock: str
    name: str
    kind: str  # "request" or "window"
    meta: dict[str, Any]
    whole_thread: bool
    started: float = field(default_factory=time.time)
    requests: int = 0
    _pyi: Any = None

    def start(self) -> None:
        if self.profiler == "pyinstrument":
            from pyinstrument import Profiler

            # async_mode "enabled": only this request's task (and what it awaits) is sampled;
            # a window samples the whole thread (the event loop, idle time included).
            self.meta["async_mode"] = "disabled" if self.whole_thread else "enabled"
            self._pyi = Profiler(interval=PYINSTRUMENT_INTERVAL_S,
                                 async_mode=self.meta["async_mode"])
            self._pyi.start()
        else:
            import yappi

            yappi.clear_stats()
            yappi.set_clock_type(self.clock)
            # yappi is process-wide: concurrent requests of this worker are included.
            yappi.start(builtins=False, profile_threads=True)

    def stop_and_write(self, directory: Path) -> list[str]:
        ended = time.time()
        self.meta.update(profiler=self.profiler, clock=self.clock, kind=self.kind,
                         name=self.name, started_at=_stamp(self.started),
                         ended_at=_stamp(ended), started_at_unix=self.started,
                         ended_at_unix=ended, duration_s=ended - self.started,
                         requests=self.requests)
        header = (f"# scoring-lab profile {self.name}\n# profiler: {self.profiler}, clock: "
                  f"{self.clock}, {self.kind} of {self.meta.get('service')} pid "
                  f"{self.meta.get('pid')}, {self.requests} request(s)\n")
        base = directory / self.name
        if self.profiler == "pyinstrument":
            written = self._write_pyinstrument(base, header)
        else:
            written = self._write_yappi(base, header)
        meta_path = base.with_name(base.name + ".meta.json")
        meta_path.write_text(json.dumps(self.meta, indent=2) + "\n")
        return [*written, meta_path.name]

    def _write_pyinstrument(self, base: Path, header: str) -> list[str]:
        import pyinstrument

        session = self._pyi.stop()
        self.meta["profiler_version"] = pyinstrument.__version__
        self.meta["interval_s"] = PYINSTRUMENT_INTERVAL_S
        out = {".html": self._pyi.output_html(),
               ".txt": header + self._pyi.output_text(unicode=True, color=False)}
        for suffix, text in out.items():
            base.with_name(base.name + suffix).write_text(text)
        session.save(str(base.with_name(base.name + SESSION_SUFFIX)))
        return [base.name + s for s in (".html", ".txt", SESSION_SUFFIX)]

    def _write_yappi(self, base: Path, header: str) -> list[str]:
        import importlib.metadata

        import yappi

        yappi.stop()
        self.meta["profiler_version"] = importlib.metadata.version("yappi")
        self.meta["coroutine_aware"] = True  # yappi >= 1.2 accounts awaits to the coroutine
        stats = yappi.get_func_stats()
        text = io.StringIO()
        text.write(header)
        stats.sort("ttot").print_all(out=text, columns={
            0: ("name", 60), 1: ("ncall", 10), 2: ("tsub", 10), 3: ("ttot", 10), 4: ("tavg", 10)})
        yappi.get_thread_stats().print_all(out=text)
        base.with_name(base.name + ".txt").write_text(text.getvalue())
        stats.save(str(base.with_name(base.name + ".callgrind")), type="callgrind")
        stats.save(str(base.with_name(base.name + ".prof")), type="pstat")
        rows = [{"name": s.name, "module": s.module, "lineno": s.lineno, "ncall": s.ncall,
                 "tsub": s.tsub, "ttot": s.ttot, "builtin": bool(s.builtin)} for s in stats]
        base.with_name(base.name + ".json").write_text(json.dumps(
            {"profiler": "yappi", "clock": self.clock, "functions": rows}) + "\n")
        yappi.clear_stats()
        return [base.name + s for s in (".txt", ".callgrind", ".prof", ".json")]


# --------------------------------------------------------------- a worker's profiling


class Profiling:
    """The profiling state of one worker process: at most one capture at a time."""

    def __init__(self, role: Role, arch: Arch, settings: Settings) -> None:
        if not settings.run_dir:  # Settings refuses this already; keep the invariant here
            raise ValueError("profiling needs SCORING_LAB_RUN_DIR")
        self.role, self.arch = role, arch
        self.service = _SAFE.sub("-", settings.service or f"{role}-{arch}").strip("-")
        self.directory = Path(settings.run_dir) / "profiles"
        self.marker = self.directory / f".window-{self.service}.json"
        self._sequence = itertools.count(1)
        self._lock = threading.Lock()
        self.capture: Capture | None = None
        self._window: tuple[int, dict[str, Any]] | None = None  # (marker mtime_ns, marker)
        self._done_windows: set[str] = set()
        self.max_bytes = settings.profiles_max_bytes
        self.refused = 0  # profiles this worker did not write: cap reached or write failed

    def bytes_used(self) -> int:
        """Bytes of the files under the profiles directory now (all services of the run dir)."""
        total = 0
        try:
            with os.scandir(self.directory) as entries:
                for entry in entries:
                    try:
                        if entry.is_file(follow_symlinks=False):
                            total += entry.stat(follow_symlinks=False).st_size
                    except OSError:  # removed meanwhile
                        continue
        except OSError:  # none yet, or not a directory: writing will tell (and is caught)
            return 0
        return total

    def capped(self) -> bool:
        return self.bytes_used() >= self.max_bytes

    def _refuse(self, why: str) -> None:
        self.refused += 1
        if self.refused == 1 or self.refused % 100 == 0:
            log.warning("%s pid %d: profile not written (%s); %d refused so far", self.service,
                        os.getpid(), why, self.refused)

    def _name(self, kind: str, profiler: str, clock: str) -> str:
        pid = os.getpid()
        tag = "pyinstrument" if profiler == "pyinstrument" else f"yappi-{clock}"
        return (f"{self.service}_{pid}_{_stamp(time.time())}_{next(self._sequence):04d}_"
                f"{kind}_{tag}")

    def _meta(self, **extra: Any) -> dict[str, Any]:
        return {"service": self.service, "role": str(self.role), "arch": str(self.arch),
                "pid": os.getpid(), **extra}

    # --- per request ----------------------------------------------------------------
    def begin(self, headers: Callable[[str], str | None], method: str, path: str
              ) -> tuple[dict[str, str], Capture | None]:
        """Before the app runs: response headers to add and the capture this request
        starts (to be ended with end()), after joining or opening a window. Raises
        ApiError 400 for a bad header value."""
        self.close_window_if_due()  # a request after the window is not part of it
        profile, window = headers(PROFILE_HEADER), headers(WINDOW_HEADER)
        out: dict[str, str] = {}
        if profile is None and window is None:
            self._join_window()
            if self.capture is not None and self.capture.kind == "window":
                self.capture.requests += 1
            return out, None
        profiler, clock = parse_profiler(profile, self.arch)
        seconds = parse_window(window) if window is not None else None
        self._join_window()
        if self.capture is not None or not self._lock.acquire(blocking=False):
            status = "in-window" if self.capture and self.capture.kind == "window" else "busy"
            if status == "in-window":
                self.capture.requests += 1
            out[STATUS_HEADER] = status
            return out, None
        if self.capped():
            self._lock.release()
            self._refuse(f"{self.directory} holds {self.max_bytes} bytes or more "
                         "(SCORING_LAB_PROFILES_MAX_BYTES)")
            out[STATUS_HEADER] = "capped"
            return out, None
        try:
            if seconds is not None:
                window_id = f"{int(time.time() * 1000):x}"
                marker = {"id": window_id, "profiler": profiler, "clock": clock,
                          "start_unix": time.time(), "end_unix": time.time() + seconds,
                          "window_s": seconds}
                self.directory.mkdir(parents=True, exist_ok=True)
                tmp = self.marker.with_name(f"{self.marker.name}.{os.getpid()}.tmp")
                tmp.write_text(json.dumps(marker))
                os.replace(tmp, self.marker)
                self._start_window(marker)
                self.capture.requests += 1
                out.update({STATUS_HEADER: "window-started", WINDOW_ID_HEADER: window_id})
                return out, None
            capture = Capture(profiler, clock, self._name("req", profiler, clock), "request",
                              self._meta(method=method, path=path), whole_thread=False)
            self.directory.mkdir(parents=True, exist_ok=True)
            capture.requests = 1
            capture.start()
            self.capture = capture
        except OSError as exc:  # the profiles directory cannot be written: serve unprofiled
            self.capture = None
            self._lock.release()
            self._refuse(f"cannot write under {self.directory}: {exc}")
            out[STATUS_HEADER] = "not-written"
            return out, None
        except BaseException:
            self.capture = None
            self._lock.release()
            raise
        out.update({STATUS_HEADER: "written", FILE_HEADER: capture.name})
        return out, capture

    def end(self, capture: Capture | None) -> None:
        """After the response: write this request's profile, or close an ended window."""
        if capture is not None:
            try:
                self._write(capture)
            finally:
                self.capture = None
                self._lock.release()
        else:
            self.close_window_if_due()

    def _write(self, capture: Capture) -> None:
        """Write a finished profile; a failed write (disk full, directory gone) is counted and
        logged, never raised into the request."""
        try:
            capture.stop_and_write(self.directory)
        except OSError as exc:
            self._refuse(f"writing {capture.name} failed: {exc}")

    # --- windows ----------------------------------------------------------------------
    def _join_window(self) -> None:
        """Open this worker's part of a window another worker (or this one) announced."""
        if self.capture is not None:
            return
        try:
            mtime = self.marker.stat().st_mtime_ns
        except OSError:  # no window (or no usable profiles directory): nothing to join
            return
        if self._window is None or self._window[0] != mtime:
            try:
                self._window = (mtime, json.loads(self.marker.read_text()))
            except (OSError, ValueError):
                return
        marker = self._window[1]
        if marker["id"] in self._done_windows or time.time() >= marker["end_unix"]:
            return
        if self.capped():
            self._done_windows.add(marker["id"])  # counted once per window, not per request
            self._refuse(f"window {marker['id']}: {self.directory} is at its cap")
            return
        if not self._lock.acquire(blocking=False):
            return
        try:
            self._start_window(marker)
        except BaseException:
            self.capture = None
            self._lock.release()
            raise

    def _start_window(self, marker: dict[str, Any]) -> None:
        """Called with the lock held."""
        self._done_windows.add(marker["id"])
        capture = Capture(
            marker["profiler"], marker["clock"],
            self._name(f"win-{marker['id']}", marker["profiler"], marker["clock"]), "window",
            self._meta(window_id=marker["id"], window_s=marker["window_s"],
                       window_end_unix=marker["end_unix"]), whole_thread=True)
        capture.start()
        self.capture = capture
        if self.arch is Arch.ASYNC:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            loop.call_later(max(0.0, marker["end_unix"] - time.time()) + 0.05,
                            self.close_window_if_due)

    def close_window_if_due(self) -> None:
        capture = self.capture
        if capture is None or capture.kind != "window":
            return
        if time.time() < capture.meta["window_end_unix"]:
            return
        try:
            self._write(capture)
        finally:
            self.capture = None
            self._lock.release()


# ------------------------------------------------------------------------ middlewares


def _error_body(error: errors.ApiError) -> bytes:
    return json.dumps(error.body()).encode()


class WsgiProfiling:
    """Wraps a Flask app's ``wsgi_app`` when profiling is on."""

    def __init__(self, app: Callable, role: Role, settings: Settings) -> None:
        self.app = app
        self.profiling = Profiling(role, Arch.SYNC, settings)

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Any:
        def header(name: str) -> str | None:
            return environ.get("HTTP_" + name.upper().replace("-", "_"))

        try:
            extra, capture = self.profiling.begin(header, environ.get("REQUEST_METHOD", ""),
                                                  environ.get("PATH_INFO", ""))
        except errors.ApiError as error:
            body = _error_body(error)
            start_response(f"{error.status} Bad Request", [
                ("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]

        def start(status: str, headers: list, exc_info: Any = None) -> Any:
            return start_response(status, [*headers, *extra.items()], exc_info)

        try:
            result = self.app(environ, start)
            try:
                body = list(result)  # the profile covers producing the whole body
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        finally:
            self.profiling.end(capture)
        return body


class AsgiProfiling:
    """Wraps a FastAPI app when profiling is on (pure ASGI: no per-request task switch)."""

    def __init__(self, app: Callable, role: Role, settings: Settings) -> None:
        self.app = app
        self.profiling = Profiling(role, Arch.ASYNC, settings)

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            extra, capture = self.profiling.begin(lambda n: raw.get(n.lower()),
                                                  scope.get("method", ""), scope.get("path", ""))
        except errors.ApiError as error:
            body = _error_body(error)
            await send({"type": "http.response.start", "status": error.status, "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        encoded = [(k.lower().encode(), v.encode()) for k, v in extra.items()]

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start" and encoded:
                message = {**message, "headers": [*message.get("headers", []), *encoded]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            self.profiling.end(capture)
