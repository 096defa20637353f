"""The sampler as a real subprocess, and its counters across process deaths."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time

from hardware_testutil import BUSY, SLEEP, lab_child, popen_cli

from hardware.sampler import Sampler
from hardware.sockets import InetCounter
from hardware.summary import load_samples, service_usage

SAMPLE_KEYS = {"t", "cpu_percent_per_core", "cpu_times_per_core", "net", "services"}
SERVICE_KEYS = {
    "pids",
    "cpu_user_s",
    "cpu_system_s",
    "rss_bytes",
    "num_ctx_switches_voluntary",
    "num_ctx_switches_involuntary",
    "num_threads",
    "connections",
}


def _stop(proc, sig=signal.SIGTERM):
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sampler_follows_a_busy_service_and_stops_on_sigterm(tmp_path):
    out = tmp_path / "samples.jsonl"
    with lab_child(BUSY, "model-sync", tmp_path, cpus={0}) as child:
        sampler = popen_cli(
            "sample", "--out", str(out), "--interval", "0.5", "--run-dir", str(tmp_path)
        )
        try:
            time.sleep(3)
        finally:
            rc = _stop(sampler)
    assert rc == 0, sampler.stderr.read()

    lines = out.read_text().splitlines()
    assert len(lines) >= 2
    samples = [json.loads(line) for line in lines]  # every line is complete JSON
    for sample in samples:
        assert sample.keys() >= SAMPLE_KEYS
        assert len(sample["cpu_percent_per_core"]) == len(sample["cpu_times_per_core"])
    services = [s["services"]["model-sync"] for s in samples if "model-sync" in s["services"]]
    assert len(services) >= 2
    assert services[0].keys() >= SERVICE_KEYS
    assert services[0]["pids"] == [child.pid]
    cpu = [s["cpu_user_s"] + s["cpu_system_s"] for s in services]
    assert cpu == sorted(cpu) and cpu[-1] > cpu[0]
    # A busy loop is about one core; the window summary should say so (loosely: shared CI cores).
    usage = service_usage(samples, samples[0]["t"], samples[-1]["t"])["model-sync"]
    assert usage["cpu_percent_mean"] > 30
    assert usage["rss_peak_bytes"] > 0


def test_sampler_duration_ends_by_itself_and_sigint_is_clean(tmp_path):
    out = tmp_path / "a.jsonl"
    sampler = popen_cli("sample", "--out", str(out), "--interval", "0.2", "--duration", "0.6")
    try:
        assert sampler.wait(timeout=20) == 0, sampler.stderr.read()
    finally:
        _stop(sampler)
    assert 2 <= len(load_samples(out)) <= 4

    out = tmp_path / "b.jsonl"
    sampler = popen_cli("sample", "--out", str(out), "--interval", "0.2")
    try:
        time.sleep(1.2)
    finally:
        rc = _stop(sampler, signal.SIGINT)
    assert rc == 0
    assert "Traceback" not in sampler.stderr.read()
    assert len(load_samples(out)) >= 2


def test_sampler_refuses_a_non_empty_file(tmp_path):
    out = tmp_path / "samples.jsonl"
    out.write_text('{"t": 1}\n')
    sampler = popen_cli("sample", "--out", str(out), "--duration", "0.1")
    try:
        assert sampler.wait(timeout=20) == 2
    finally:
        _stop(sampler)
    assert "not empty" in sampler.stderr.read()
    assert out.read_text() == '{"t": 1}\n'


def test_cpu_of_an_exited_process_stays_in_its_service(tmp_path):
    burn = "import time\nend = time.time() + 0.3\nwhile time.time() < end: pass\n" + SLEEP
    sampler = Sampler(run_dir=str(tmp_path))
    with (
        lab_child(burn, "scoring-sync", tmp_path) as first,
        lab_child(SLEEP, "scoring-sync", tmp_path) as second,
    ):
        time.sleep(0.6)
        before = sampler.sample()["services"]["scoring-sync"]
        assert before["pids"] == sorted([first.pid, second.pid])
        first.kill()
        first.wait()
        after = sampler.sample()["services"]["scoring-sync"]
    assert after["pids"] == [second.pid]
    assert before["cpu_user_s"] + before["cpu_system_s"] >= 0.2
    for key in (
        "cpu_user_s",
        "cpu_system_s",
        "num_ctx_switches_voluntary",
        "num_ctx_switches_involuntary",
    ):
        assert after[key] >= before[key], key
    # Once every process is gone the service and its totals stay in the samples.
    gone = sampler.sample()["services"]["scoring-sync"]
    assert gone["pids"] == [] and gone["rss_bytes"] == 0
    assert gone["cpu_user_s"] >= after["cpu_user_s"]


def test_connections_count_distinct_inet_sockets(tmp_path):
    code = (
        "import socket, time\n"
        "a = socket.socket(); a.bind(('127.0.0.1', 0)); a.listen()\n"
        "b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); b.bind(('127.0.0.1', 0))\n"
        "u = socket.socket(socket.AF_UNIX)\n"
        "print('ready', flush=True)\n" + SLEEP
    )
    with lab_child(code, "redis", tmp_path, stdout=subprocess.PIPE, text=True) as child:
        assert child.stdout.readline().strip() == "ready"
        services = Sampler(run_dir=str(tmp_path)).sample()["services"]
    assert services["redis"]["connections"] == 2  # TCP listener + UDP; the unix socket is not inet


def test_socket_verdicts_are_cached_but_follow_new_and_closed_sockets():
    counter = InetCounter()
    me = {"self": [os.getpid()]}
    base = counter.count(me)["self"]
    with socket.socket() as tcp:
        tcp.bind(("127.0.0.1", 0))
        tcp.listen()
        assert counter.count(me)["self"] == base + 1
        reads = counter.table_reads
        assert counter.count(me)["self"] == base + 1
        assert counter.table_reads == reads  # nothing new: the kernel tables were not re-read
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            assert counter.count(me)["self"] == base + 2
    assert counter.count(me)["self"] == base
    assert counter.count({"nobody": []}) == {"nobody": 0}
