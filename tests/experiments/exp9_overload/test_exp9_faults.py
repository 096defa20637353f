"""The fault injectors (experiments/lab/faults.py) start their fault and, above all, always end
it: on a normal exit, on an exception, on Ctrl-C and on SIGTERM in the middle of the fault.
Real processes (a `sleep` stands for Redis or a worker), a fake supervisor: no lab needed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

import psutil
import pytest

from experiments.lab.faults import (
    CHUNKED_TRAILER,
    ChunkedTrailer,
    FaultError,
    FaultWindow,
    ModelSlow,
    NoFault,
    RedisFrozen,
    RedisRestarted,
    WorkerKilled,
    injected,
    local_supervisor,
    redis_answers,
    sigterm_as_interrupt,
)
from services import slowdown


@dataclass
class FakeSupervisor:
    pids: dict[str, int]
    calls: list[tuple[str, ...]] = field(default_factory=list)

    def pid(self, program: str) -> int:
        return self.pids[program]

    def run(self, *args: str) -> str:
        self.calls.append(args)
        return ""


@pytest.fixture
def sleeper():
    p = subprocess.Popen(["sleep", "60"])
    yield p
    os.kill(p.pid, signal.SIGCONT)
    p.kill()
    p.wait()


def status(pid: int) -> str:
    return psutil.Process(pid).status()


def wait_for(what, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if what():
            return True
        time.sleep(0.02)
    return False


def test_redis_frozen_is_stopped_inside_and_continued_after_an_exception(sleeper):
    fault = RedisFrozen(FakeSupervisor({"redis": sleeper.pid}))
    record: dict = {}
    with pytest.raises(RuntimeError, match="boom"), injected(fault, record):
        assert wait_for(lambda: status(sleeper.pid) == psutil.STATUS_STOPPED)
        raise RuntimeError("boom")
    assert wait_for(lambda: status(sleeper.pid) != psutil.STATUS_STOPPED)
    assert record["fault"] == "redis_frozen" and record["error"] == "RuntimeError: boom"
    assert record["started_at"] <= record["ended_at"] <= record["removed_at"]


def test_a_window_cut_short_by_ctrl_c_removes_its_fault(sleeper):
    window = FaultWindow(RedisFrozen(FakeSupervisor({"redis": sleeper.pid})), 0.0, 60.0)
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt), window:
        assert wait_for(lambda: status(sleeper.pid) == psutil.STATUS_STOPPED)
        raise KeyboardInterrupt
    assert time.monotonic() - started < 10  # not the 60 s window
    assert status(sleeper.pid) != psutil.STATUS_STOPPED
    assert window.record["stop"]["pid"] == sleeper.pid


def test_sigterm_mid_fault_takes_the_same_path(sleeper):
    window = FaultWindow(RedisFrozen(FakeSupervisor({"redis": sleeper.pid})), 0.0, 60.0)
    with pytest.raises(KeyboardInterrupt), sigterm_as_interrupt(), window:
        assert wait_for(lambda: status(sleeper.pid) == psutil.STATUS_STOPPED)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # interrupted long before
    assert status(sleeper.pid) != psutil.STATUS_STOPPED
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_window_runs_its_fault_for_its_length_then_ends_it(tmp_path):
    path = str(tmp_path / "faults" / "slow")
    window = FaultWindow(ModelSlow(path, 3.0), 0.05, 0.2)
    with window:
        assert wait_for(lambda: os.path.exists(path))
        assert slowdown.read_factor(path) == 3.0
        assert wait_for(lambda: not os.path.exists(path))
    r = window.record
    assert r["start"]["factor"] == 3.0 and r["stop"]["removed"]
    assert 0.15 <= r["ended_at"] - r["started_at"] < 2


def test_the_control_is_timed_as_a_fault_and_touches_nothing():
    # its window is what the control timeline's report reads as "the fault's" start and end
    window = FaultWindow(NoFault(), 0.05, 0.2)
    with window:
        assert wait_for(lambda: "removed_at" in window.record)
    r = window.record
    assert r["fault"] == "none" and r["start"] == {"injected": False}
    assert r["stop"] == {"removed": True} and 0.15 <= r["ended_at"] - r["started_at"] < 2


def test_a_window_left_before_its_start_never_injects(tmp_path):
    path = str(tmp_path / "slow")
    window = FaultWindow(ModelSlow(path), 30.0, 1.0)
    with window:
        pass
    assert not os.path.exists(path) and "skipped" in window.record


def _master_with_workers(n: int) -> subprocess.Popen:
    """A master that keeps n `sleep` workers alive (as gunicorn keeps its workers)."""
    code = ("import subprocess, time\n"
            f"ws = [subprocess.Popen(['sleep', '60']) for _ in range({n})]\n"
            "while True:\n"
            "    ws = [w if w.poll() is None else subprocess.Popen(['sleep', '60']) "
            "for w in ws]\n"
            "    time.sleep(0.05)\n")
    return subprocess.Popen([sys.executable, "-c", code])


def test_a_killed_worker_is_replaced_before_the_fault_counts_as_removed():
    master = _master_with_workers(2)
    try:
        assert wait_for(lambda: len(psutil.Process(master.pid).children()) == 2)
        sup = FakeSupervisor({"scoring-sync": master.pid})
        fault = WorkerKilled(sup, "scoring-sync", "http://127.0.0.1:9/unused")
        with injected(fault, {}):
            assert fault.killed is not None and fault.workers == 2
        assert len(psutil.Process(master.pid).children()) == 2
        assert not psutil.pid_exists(fault.killed) or \
            psutil.Process(fault.killed).status() == psutil.STATUS_ZOMBIE
        assert sup.calls == []  # replaced by its master: no restart needed
    finally:
        for child in psutil.Process(master.pid).children():
            child.kill()
        master.kill()
        master.wait()


def test_a_lone_worker_is_not_killed():
    master = _master_with_workers(1)
    try:
        assert wait_for(lambda: len(psutil.Process(master.pid).children()) == 1)
        fault = WorkerKilled(FakeSupervisor({"scoring-async": master.pid}), "scoring-async",
                             "http://127.0.0.1:9/unused")
        with pytest.raises(FaultError, match="1 worker"), injected(fault, {}):
            pass
        assert len(psutil.Process(master.pid).children()) == 1
    finally:
        for child in psutil.Process(master.pid).children():
            child.kill()
        master.kill()
        master.wait()


def test_faults_act_on_a_one_host_lab_only():
    services = {"redis": {"host": "db1", "address": "10.0.0.5", "run_dir": "/x"},
                "model-sync": {"host": "localhost", "address": "127.0.0.1", "run_dir": "/r"}}
    with pytest.raises(FaultError, match="redis runs on 'db1'"):
        local_supervisor(services, "redis")
    assert local_supervisor(services, "model-sync").command[-1] == \
        "/r/supervisor/supervisord.conf"


@dataclass
class CountingSupervisor:
    """A supervisord stand-in that says a program runs once started."""

    is_running: bool = True
    calls: list[tuple[str, ...]] = field(default_factory=list)

    def run(self, *args: str) -> str:
        self.calls.append(args)
        if args[0] in ("start", "restart"):
            self.is_running = True
        return f"{args[-1]}: {args[0]}ed"

    def running(self, program: str) -> bool:
        return self.is_running

    def pid(self, program: str) -> int:
        return 4242


def test_redis_restart_restarts_it_and_its_removal_waits_for_ping():
    answers = iter([False, False, True])
    sup = CountingSupervisor()
    fault = RedisRestarted(sup, "redis://127.0.0.1:1/0", answers=lambda url: next(answers))
    record: dict = {}
    with injected(fault, record):
        pass
    assert sup.calls == [("restart", "redis")]
    assert record["stop"]["running"] and record["stop"]["answers_after_s"] >= 0.4
    # stopped meanwhile (a restart that failed half-way): removal starts it
    sup = CountingSupervisor(is_running=False)
    RedisRestarted(sup, "redis://x:1/0", answers=lambda url: True).stop()
    assert sup.calls == [("start", "redis")]


def test_redis_that_never_answers_is_a_fault_error():
    fault = RedisRestarted(CountingSupervisor(), "redis://x:1/0", ready_timeout_s=0.3,
                           answers=lambda url: False)
    with pytest.raises(FaultError, match="did not answer PING within 0.3 s"):
        fault.stop()


def test_redis_answers_reads_a_real_reply(tmp_path):
    import socket
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve(reply: bytes) -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(64)
            conn.sendall(reply)

    for reply, expected in ((b"+PONG\r\n", True), (b"-NOAUTH Authentication required.\r\n",
                                                    True), (b"-ERR busy\r\n", False)):
        t = threading.Thread(target=serve, args=(reply,))
        t.start()
        assert redis_answers(f"redis://127.0.0.1:{port}/0") is expected
        t.join()
    server.close()
    assert redis_answers(f"redis://127.0.0.1:{port}/0", timeout_s=0.5) is False  # nobody


def test_a_chunked_trailer_is_sent_and_a_dead_worker_waited_for():
    import socket
    import threading
    from types import SimpleNamespace

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    got: list[bytes] = []

    def crash() -> None:  # a worker that dies on the request: the connection just closes
        conn, _ = server.accept()
        got.append(conn.recv(256))
        conn.close()

    t = threading.Thread(target=crash)
    t.start()
    workers = [[SimpleNamespace(pid=1), SimpleNamespace(pid=2)],  # before
               [SimpleNamespace(pid=1)],                          # after: 2 died
               [SimpleNamespace(pid=1)],                          # removal: not yet back
               [SimpleNamespace(pid=1), SimpleNamespace(pid=3)]]  # replaced
    calls = iter(workers)
    fault = ChunkedTrailer(CountingSupervisor(), "scoring-sync", f"http://127.0.0.1:{port}",
                           "http://127.0.0.1:1/health", list_workers=lambda master: next(calls))
    record: dict = {}
    with injected(fault, record):
        pass
    t.join()
    server.close()
    assert got[0] == CHUNKED_TRAILER and b"Transfer-Encoding: chunked" in got[0]
    assert record["start"] == {"answer": "closed, no answer", "workers_before": 2, "died": [2]}
    assert record["stop"] == {"workers_back": 2}
