"""Faults injected into the deployed lab for a fixed window, and always removed.

Each fault is an object with ``start()`` and ``stop()``; ``stop`` undoes whatever ``start``
did, is safe to call after a ``start`` that failed half-way, and runs whatever happened in
between (``injected``: a context manager, so an exception or Ctrl-C inside still ends the
fault). ``FaultWindow`` runs one fault in a thread from ``start_after_s`` for ``window_s``
while the caller's load runs in the main thread; leaving it (normally, on an error or on
KeyboardInterrupt) removes the fault before the caller goes on. ``sigterm_as_interrupt`` makes
a SIGTERM to the runner take the same path (Python's default SIGTERM would skip every
``finally``).

The faults (issue 25), each on the lab the session deployed, through what the lab already has:
- ``ModelSlow``: the model API's waits x factor (services/slowdown.py: a file the deployed
  model APIs read when their build sets SCORING_LAB_MODEL_SLOWDOWN_FILE); removed = file gone.
- ``ModelDown``: the model API's program stopped by the lab's supervisord, started again.
- ``RedisFrozen``: SIGSTOP of the Redis process the lab's supervisord runs, SIGCONT after.
- ``RedisRestarted``: the Redis program restarted by supervisord at the window's start (it
  comes back from the lab's snapshot of the features: services/seed.py); removal makes sure it
  runs and answers PING.
- ``WorkerKilled``: SIGKILL of one scoring worker; its master starts a new one (gunicorn,
  uvicorn); removal waits for the worker count to be whole again, else restarts the program.
- ``ChunkedTrailer``: one chunked request with a trailer field to the scoring handler, as a
  client could send it: meinheld 1.0.2's parser crashes the worker that reads it (a known,
  documented limit); other servers answer it. Removal as WorkerKilled's.
- ``NoFault``: nothing at all, timed as the others are: the control timeline. Every timeline
  of a cell replays the same arrival schedule (one seed), so the control shows what that
  schedule does to the stack without a fault (a cluster of arrivals at a stack with a handful
  of slots is late whatever else happens), and recovery is judged against it.
Every fault acts on processes of the controller's host (a one-host lab): a remote service
raises FaultError before anything is touched.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from services import slowdown

LOCAL_ADDRESSES = ("127.0.0.1", "localhost", "::1")
COMMAND_TIMEOUT_S = 60.0


class FaultError(RuntimeError):
    """A fault cannot be injected or removed here; the message says which and why."""


@dataclass(frozen=True)
class Supervisor:
    """The lab's supervisord on this host (ansible/roles/lab: one per run dir)."""

    run_dir: str

    @property
    def command(self) -> list[str]:
        return [f"{self.run_dir}/app/.venv/bin/supervisorctl", "-c",
                f"{self.run_dir}/supervisor/supervisord.conf"]

    def run(self, *args: str) -> str:
        done = subprocess.run([*self.command, *args], capture_output=True, text=True,
                              timeout=COMMAND_TIMEOUT_S)
        out = (done.stdout + done.stderr).strip()
        # supervisorctl exits non-zero for a program that is not running (status, pid)
        if done.returncode != 0 and args[0] not in ("status", "pid"):
            raise FaultError(f"supervisorctl {' '.join(args)} failed ({done.returncode}): {out}")
        return out

    def pid(self, program: str) -> int:
        out = self.run("pid", program)
        if not out.isdigit() or int(out) == 0:
            raise FaultError(f"supervisorctl pid {program}: {out!r} (is it running?)")
        return int(out)

    def running(self, program: str) -> bool:
        return "RUNNING" in self.run("status", program)


def local_supervisor(services: dict[str, dict[str, Any]], name: str) -> Supervisor:
    """The supervisor of service ``name`` (topology's services), which must run here."""
    entry = services[name]
    if str(entry.get("address", "")) not in LOCAL_ADDRESSES or not entry.get("run_dir"):
        raise FaultError(f"service {name} runs on {entry.get('host')!r} "
                         f"({entry.get('address')}): faults are injected on a one-host lab only")
    return Supervisor(str(entry["run_dir"]))


@dataclass
class ModelSlow:
    path: str
    factor: float = 3.0
    name: str = "model_slow"

    def start(self) -> dict[str, Any]:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        slowdown.write_factor(self.path, self.factor)
        return {"file": self.path, "factor": self.factor}

    def stop(self) -> dict[str, Any]:
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.path)
        # the workers re-read the file at most every READ_EVERY_S: the fault is over then
        time.sleep(slowdown.READ_EVERY_S)
        return {"removed": not os.path.exists(self.path)}


@dataclass
class ModelDown:
    supervisor: Supervisor
    program: str
    health_url: str
    name: str = "model_down"
    ready_timeout_s: float = 60.0

    def start(self) -> dict[str, Any]:
        return {"stopped": self.supervisor.run("stop", self.program)}

    def stop(self) -> dict[str, Any]:
        if not self.supervisor.running(self.program):
            self.supervisor.run("start", self.program)
        ready = wait_until_healthy(self.health_url, self.ready_timeout_s)
        return {"running": self.supervisor.running(self.program), "healthy_after_s": ready}


@dataclass
class RedisFrozen:
    supervisor: Supervisor
    program: str = "redis"
    name: str = "redis_frozen"
    pid: int | None = None

    def start(self) -> dict[str, Any]:
        self.pid = self.supervisor.pid(self.program)
        os.kill(self.pid, signal.SIGSTOP)
        return {"pid": self.pid}

    def stop(self) -> dict[str, Any]:
        if self.pid is None:
            return {"skipped": "never stopped"}
        # SIGCONT of a process that is not stopped is harmless: always send it
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGCONT)
        with contextlib.suppress(psutil.NoSuchProcess):
            return {"pid": self.pid, "status": psutil.Process(self.pid).status()}
        return {"pid": self.pid, "status": "gone"}


def redis_answers(url: str, timeout_s: float = 1.0) -> bool:
    """Redis at ``url`` answers PING (+PONG, or -NOAUTH from a Redis with a password: it
    answers, which is all this asks)."""
    u = urllib.parse.urlsplit(url)
    try:
        with socket.create_connection((u.hostname or "127.0.0.1", u.port or 6379),
                                      timeout=timeout_s) as sock:
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
    except OSError:
        return False
    return reply.startswith((b"+PONG", b"-NOAUTH"))


@dataclass
class RedisRestarted:
    supervisor: Supervisor
    url: str
    program: str = "redis"
    name: str = "redis_restart"
    ready_timeout_s: float = 60.0
    answers: Callable[[str], bool] = field(default=redis_answers)

    def start(self) -> dict[str, Any]:
        started = time.monotonic()
        out = self.supervisor.run("restart", self.program)
        return {"restarted": out, "restart_s": round(time.monotonic() - started, 3)}

    def stop(self) -> dict[str, Any]:
        if not self.supervisor.running(self.program):
            self.supervisor.run("start", self.program)
        started = time.monotonic()
        while not self.answers(self.url):
            if time.monotonic() - started > self.ready_timeout_s:
                raise FaultError(f"Redis at {self.url} did not answer PING within "
                                 f"{self.ready_timeout_s:g} s")
            time.sleep(0.2)
        return {"running": True, "answers_after_s": round(time.monotonic() - started, 3)}


def workers_of(master: int) -> list[psutil.Process]:
    """A server master's worker processes: its children, less multiprocessing's helpers
    (uvicorn's spawned workers share a resource tracker)."""
    out = []
    for child in psutil.Process(master).children():
        with contextlib.suppress(psutil.Error):
            if not any("resource_tracker" in part for part in child.cmdline()):
                out.append(child)
    return out


@dataclass
class WorkerKilled:
    supervisor: Supervisor
    program: str
    health_url: str
    name: str = "worker_kill"
    restore_timeout_s: float = 30.0
    master: int | None = None
    workers: int = 0
    killed: int | None = None
    list_workers: Callable[[int], list[psutil.Process]] = field(default=workers_of)

    def start(self) -> dict[str, Any]:
        self.master = self.supervisor.pid(self.program)
        workers = self.list_workers(self.master)
        if len(workers) < 2:
            raise FaultError(f"{self.program} has {len(workers)} worker(s): killing one would "
                             f"take the whole service down, not one worker")
        self.workers = len(workers)
        victim = max(workers, key=lambda p: p.pid)
        self.killed = victim.pid
        victim.send_signal(signal.SIGKILL)
        return {"master": self.master, "workers": self.workers, "killed": self.killed}

    def stop(self) -> dict[str, Any]:
        if self.master is None:
            return {"skipped": "nothing killed"}
        return restore_workers(self.supervisor, self.program, self.health_url, self.master,
                               self.workers, {self.killed}, self.restore_timeout_s,
                               self.list_workers)


def restore_workers(supervisor: Supervisor, program: str, health_url: str, master: int,
                    workers: int, gone: set[int | None], timeout_s: float,
                    list_workers: Callable[[int], list[psutil.Process]]) -> dict[str, Any]:
    """Wait for ``master`` to have ``workers`` workers again, none of them the ``gone`` pids;
    if it does not within timeout_s, restart the program so the lab is whole."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(psutil.Error):
            alive = [p for p in list_workers(master) if p.pid not in gone]
            if len(alive) >= workers:
                return {"workers_back": len(alive)}
        time.sleep(0.2)
    supervisor.run("restart", program)
    return {"restarted": True, "healthy_after_s": wait_until_healthy(health_url, timeout_s)}


@dataclass
class NoFault:
    """The control: on and off like a fault, touching nothing."""
    name: str = "none"

    def start(self) -> dict[str, Any]:
        return {"injected": False}

    def stop(self) -> dict[str, Any]:
        return {"removed": True}


# The request that crashes a meinheld 1.0.2 worker (README, "known limit of the sync server").
CHUNKED_TRAILER = (b"GET /api/v1/healthcheck HTTP/1.1\r\nHost: lab\r\n"
                   b"Transfer-Encoding: chunked\r\n\r\n0\r\nX-T: t\r\n\r\n")


@dataclass
class ChunkedTrailer:
    supervisor: Supervisor
    program: str
    url: str  # the scoring handler's base URL
    health_url: str
    name: str = "chunked_trailer"
    restore_timeout_s: float = 30.0
    master: int | None = None
    before: set[int] = field(default_factory=set)
    list_workers: Callable[[int], list[psutil.Process]] = field(default=workers_of)

    def start(self) -> dict[str, Any]:
        self.master = self.supervisor.pid(self.program)
        self.before = {p.pid for p in self.list_workers(self.master)}
        u = urllib.parse.urlsplit(self.url)
        try:
            with socket.create_connection((u.hostname, u.port), timeout=2.0) as sock:
                sock.sendall(CHUNKED_TRAILER)
                reply = sock.recv(64)
            answer = reply.split(b"\r\n", 1)[0].decode(errors="replace") or "closed, no answer"
        except OSError as exc:
            answer = f"{type(exc).__name__}: {exc}"
        time.sleep(0.5)  # a crashed worker is reaped by its master within milliseconds
        with contextlib.suppress(psutil.Error):
            died = sorted(self.before - {p.pid for p in self.list_workers(self.master)})
            return {"answer": answer, "workers_before": len(self.before), "died": died}
        return {"answer": answer, "workers_before": len(self.before), "died": None}

    def stop(self) -> dict[str, Any]:
        if self.master is None:
            return {"skipped": "nothing sent"}
        return restore_workers(self.supervisor, self.program, self.health_url, self.master,
                               len(self.before), set(), self.restore_timeout_s,
                               self.list_workers)


def wait_until_healthy(url: str, timeout_s: float) -> float:
    """Seconds until ``url`` answers 200; FaultError after timeout_s."""
    started = time.monotonic()
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return round(time.monotonic() - started, 3)
        except OSError:
            pass
        if time.monotonic() - started > timeout_s:
            raise FaultError(f"{url} did not answer 200 within {timeout_s:g} s")
        time.sleep(0.2)


@contextlib.contextmanager
def injected(fault: Any, record: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The fault on inside the block, off after it whatever happened; ``record`` gets the
    unix times it started and ended and what start and stop said (or their errors)."""
    record["fault"] = fault.name
    try:
        record["started_at"] = time.time()
        record["start"] = fault.start()
        yield record
    except BaseException as exc:
        record.setdefault("error", f"{type(exc).__name__}: {exc}")
        raise
    finally:
        record["ended_at"] = time.time()
        try:
            record["stop"] = fault.stop()
        except Exception as exc:  # noqa: BLE001 - recorded, and raised once recorded
            record["stop_error"] = f"{type(exc).__name__}: {exc}"
            raise
        record["removed_at"] = time.time()


class FaultWindow:
    """``fault`` on from ``start_after_s`` after entering, for ``window_s`` (a thread), and
    certainly off on leaving: leaving early (an error, Ctrl-C) cuts the window short."""

    def __init__(self, fault: Any, start_after_s: float, window_s: float) -> None:
        self.fault, self.start_after_s, self.window_s = fault, start_after_s, window_s
        self.record: dict[str, Any] = {"planned_start_after_s": start_after_s,
                                       "planned_window_s": window_s}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"fault-{fault.name}")

    def _run(self) -> None:
        if self._stop.wait(self.start_after_s):
            self.record["skipped"] = "left before the fault's start"
            return
        try:
            with injected(self.fault, self.record):
                self._stop.wait(self.window_s)
        except Exception:  # noqa: BLE001 - in the record; the caller reads it
            pass

    def __enter__(self) -> FaultWindow:
        self.record["entered_at"] = time.time()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        # the fault's stop() is bounded (subprocess and wait timeouts): wait for it, however
        # long a second Ctrl-C may make that look
        while self._thread.is_alive():
            self._thread.join(0.5)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Inside the block, SIGTERM raises KeyboardInterrupt (as Ctrl-C does), so every fault's
    removal runs before the process ends. Only the main thread can set a handler."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
