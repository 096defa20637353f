"""Local ports and processes, for whatever starts the lab's services on this machine: the
test suite (tests/conftest.py) and the probes under experiments/tools/."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time


def free_port() -> int:
    """A loopback TCP port free right now (the kernel's pick; free until someone binds it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout: float, what: str, interval: float = 0.1) -> None:
    """Poll predicate until true; TimeoutError naming `what` after timeout seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


def stop(process: subprocess.Popen, timeout: float = 10) -> None:
    """Stop a process we started with start_new_session=True, and its workers (gunicorn's
    master and workers share its process group): SIGTERM, SIGKILL after timeout seconds."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):  # gone between the timeout and the kill
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
