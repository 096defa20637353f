"""The recovery wait before a capacity step, against a real HTTP server on loopback whose
latency the test sets: idle, draining a backlog for a while, or stuck until restarted."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from experiments.analysis.capacity import Bound, StepResult, judge, read_recovery
from experiments.lab.recovery import PROBES_PER_GROUP, Probe, Waiter
from experiments.reporting import capacity_section


@dataclass
class Stack:
    """What the fake stack does now: each answer takes `slow_s` until `slow_until`
    (time.monotonic()), `fast_s` after; `status` is its HTTP status."""

    fast_s: float = 0.005
    slow_s: float = 0.25
    slow_until: float = 0.0
    status: int = 200

    def backlog(self, seconds: float) -> None:
        self.slow_until = time.monotonic() + seconds


@contextmanager
def fake_stack() -> Iterator[tuple[Stack, str]]:
    stack = Stack()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):  # noqa: N802 - http.server's naming
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            time.sleep(stack.slow_s if time.monotonic() < stack.slow_until else stack.fast_s)
            body = json.dumps({"detail": 0.05}).encode()
            self.send_response(stack.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield stack, f"http://127.0.0.1:{httpd.server_address[1]}/api/v1/ml/async/predict"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _waiter(url: str, **kw) -> Waiter:
    kw.setdefault("max_wait_s", 3.0)
    kw.setdefault("tolerance", 1.5)
    return Waiter(Probe(url, [5.1, 3.5, 1.4, 0.2], timeout_s=2.0), **kw)


def test_an_idle_stack_is_learnt_and_recorded(tmp_path):
    with fake_stack() as (_, url):
        waiter = _waiter(url)
        record = waiter.wait(tmp_path / "00_10.00rps")
    assert record["recovered"] and record["learnt_idle"]
    assert 0 < record["idle_ms"] < 200
    assert record["threshold_ms"] == pytest.approx(
        max(1.5 * record["idle_ms"], record["idle_ms"] + 10), abs=0.02)
    # groups until two agree, every probe kept with its status
    assert len(record["probes"]) % PROBES_PER_GROUP == 0
    assert len(record["probes"]) >= 2 * PROBES_PER_GROUP
    assert all(status == 200 for _, status, _ in record["probes"])
    assert read_recovery(tmp_path / "00_10.00rps") == record


def test_a_draining_stack_is_waited_for(tmp_path):
    with fake_stack() as (stack, url):
        waiter = _waiter(url, max_wait_s=10.0)
        waiter.wait(tmp_path / "a")
        idle = waiter.idle_ms
        stack.backlog(1.5)  # the previous step left 1.5 s of work behind
        record = waiter.wait(tmp_path / "b")
    assert record["recovered"] and not record["learnt_idle"]
    assert record["waited_s"] >= 1.0
    assert any(ms >= 200 for _, _, ms in record["probes"])  # it saw the backlog ...
    assert record["idle_ms"] <= round(idle, 2)  # ... and did not learn it as idle


def test_a_stuck_stack_is_restarted_once_the_wait_runs_out(tmp_path):
    with fake_stack() as (stack, url):
        calls = []

        def restart(why):
            calls.append(why)
            stack.slow_until = 0.0  # a restart clears the stack
            return {"token": "t1"}

        waiter = _waiter(url, max_wait_s=1.5, restart=restart)
        waiter.wait(tmp_path / "a")
        stack.backlog(3600)
        record = waiter.wait(tmp_path / "b")
    assert record["recovered"] and record["restart"] == {"token": "t1"}
    assert len(calls) == 1 and "not recovered after" in calls[0]


def test_a_stuck_stack_without_a_restart_makes_the_step_invalid(tmp_path):
    with fake_stack() as (stack, url):
        waiter = _waiter(url, max_wait_s=1.5)
        waiter.wait(tmp_path / "a")
        stack.backlog(3600)
        record = waiter.wait(tmp_path / "b")
    assert not record["recovered"] and "restart" not in record
    assert 1.0 <= record["waited_s"] < 10  # bounded by max_wait_s (plus one group)
    step = StepResult(10.0, 10.0, 100, 0, 50.0, 40.0, 0.1,
                      recovery_wait_s=record["waited_s"], recovered=False)
    verdict = judge(step, Bound(p99_ms=250))
    assert verdict.outcome == "invalid" and "recovered" in verdict.reason


def test_a_slow_or_failing_stack_is_never_learnt_as_idle(tmp_path):
    with fake_stack() as (stack, url):
        stack.fast_s = 0.05  # steady, but slower than the search's bound: busy, not idle
        record = _waiter(url, max_wait_s=1.0, max_idle_ms=20.0).wait(tmp_path / "a")
        assert not record["recovered"] and record["idle_ms"] is None
        stack.fast_s, stack.status = 0.005, 503  # fast errors are not an idle stack either
        record = _waiter(url, max_wait_s=1.0).wait(tmp_path / "b")
        assert not record["recovered"]
        assert {status for _, status, _ in record["probes"]} == {503}


def test_the_report_shows_each_wait():
    steps = [
        {**StepResult(10.0, 10.0, 100, 0, 50.0, 40.0, 0.1, recovery_wait_s=0.2,
                      recovered=True, restarted=False).__dict__,
         "outcome": "pass", "reason": "ok"},
        {**StepResult(20.0, 20.0, 100, 0, 50.0, 40.0, 0.1, recovery_wait_s=75.0,
                      recovered=True, restarted=True).__dict__,
         "outcome": "pass", "reason": "ok"},
        {**StepResult(40.0, 40.0, 100, 0, 50.0, 40.0, 0.1).__dict__, "outcome": "pass",
         "reason": "ok"},
    ]
    entry = {"shared": {"p99_bound_ms": 250, "capacity": 40.0, "first_failing": None,
                        "status": "above_range", "steps": steps}}
    text = "\n".join(capacity_section({"async": entry}))
    assert "| async | 10.0 | step | 0.2 |" in text
    assert "75.0 (services restarted)" in text
    assert "| async | 40.0 | step | - |" in text  # a step from before waits existed


def test_a_quiet_time_comes_before_the_probes(tmp_path):
    with fake_stack() as (_, url):
        waiter = _waiter(url)
        waiter.wait(tmp_path / "a")
        record = waiter.wait(tmp_path / "b", quiet_s=0.6)
    assert record["recovered"] and record["quiet_s"] == 0.6
    assert record["waited_s"] >= 0.6
    assert min(t for t, _, _ in record["probes"]) >= 0.6  # no probe during the quiet time


def test_a_stack_slower_than_the_bound_when_idle_is_learnt_after_a_restart(tmp_path):
    # sync calling a 200 ms model twice: steady, but above the 250 ms bound at one request at
    # a time. Not learnt as idle while it may be draining; once restarted it holds no
    # backlog, so its steady latency is its idle one and the steps can fail on it (valid)
    with fake_stack() as (stack, url):
        stack.fast_s = 0.05
        calls = []
        waiter = _waiter(url, max_wait_s=1.0, max_idle_ms=20.0,
                         restart=lambda why: calls.append(why) or {"token": "t"})
        record = waiter.wait(tmp_path / "a")
    assert record["recovered"] and record["restart"] == {"token": "t"} and len(calls) == 1
    assert 45 <= record["idle_ms"] < 200

