"""A result folder's resource files stay small however many connections the lab holds: the real
sampler over labelled processes holding dozens of loopback connections, stored by the real
collect step (experiments/lab/collect.py store)."""

from __future__ import annotations

import json
import subprocess

from hardware_testutil import lab_child

from experiments.lab.collect import store
from experiments.results import RunFolder
from hardware import tcplog
from hardware.sampler import Sampler
from hardware.summary import load_samples, write_resources

# Accepts and holds every connection, printing how many it holds.
SERVER = """
import socket
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(256)
print(srv.getsockname()[1], flush=True)
held = []
while True:
    held.append(srv.accept()[0])
    print(len(held), flush=True)
"""
# "open N" / "close N" (the oldest N) on stdin, "ok" when done.
CLIENT = """
import socket, sys
port, conns = int(sys.argv[1]), []
for line in sys.stdin:
    verb, n = line.split()
    for _ in range(int(n)):
        if verb == "open":
            conns.append(socket.create_connection(("127.0.0.1", port)))
        else:
            conns.pop(0).close()
    print("ok", flush=True)
"""

PIPES = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "text": True}


def _tell(client: subprocess.Popen, line: str) -> None:
    client.stdin.write(line + "\n")
    client.stdin.flush()
    assert client.stdout.readline().strip() == "ok"


def _accepted(server: subprocess.Popen, total: int) -> None:
    while int(server.stdout.readline()) < total:
        pass


def test_csv_width_and_tcp_lines_do_not_follow_the_connections(tmp_path):
    run_dir = tmp_path / "lab"
    run_dir.mkdir()
    sampler = Sampler(str(run_dir))
    samples = []
    with lab_child(SERVER, "model-sync", run_dir, **PIPES) as server:
        port = server.stdout.readline().strip()
        client_code = CLIENT.replace("int(sys.argv[1])", port)
        with (lab_child(client_code, "scoring-sync", run_dir, **PIPES) as sync,
              lab_child(client_code, "scoring-async", run_dir, **PIPES) as async_):
            _tell(sync, "open 3")
            _tell(async_, "open 2")
            _accepted(server, 5)
            for i in range(40):
                if i == 10:  # a burst: 5 -> 65 connections
                    _tell(sync, "open 30")
                    _tell(async_, "open 30")
                    _accepted(server, 65)
                if i == 25:  # the sync side drops 20 of its 33
                    _tell(sync, "close 20")
                samples.append(sampler.sample())
    held = [sum(len(c) for c in s["services"]["scoring-sync"]["tcp"].values())
            + sum(len(c) for c in s["services"]["scoring-async"]["tcp"].values())
            for s in samples]
    assert held[0] == 5 and held[10] == 65 and held[25] == 45  # the sampler saw them

    staging = tmp_path / "staging"
    (staging / "localhost" / "monitor").mkdir(parents=True)
    with open(staging / "localhost" / "monitor" / "samples.jsonl", "w") as f:
        f.writelines(json.dumps(s) + "\n" for s in samples)
    run = RunFolder(tmp_path / "run", {})
    run.resources_dir().mkdir(parents=True)
    stored = store(run, staging, samples[0]["t"], samples[-1]["t"])
    csv_path = run.resources_dir() / "localhost.csv"
    assert stored["resources"] == ["raw/resources/localhost.csv",
                                   "raw/resources/localhost.tcp.jsonl.gz"]

    # The CSV has the columns of the first sample alone (5 connections): none per connection.
    header = csv_path.read_text().splitlines()[0]
    write_resources(samples[:1], tmp_path / "first.csv")
    assert header == (tmp_path / "first.csv").read_text().splitlines()[0]
    assert "tcp" not in header
    # The tcp file: the first sample, the burst, the drop; nothing for the 37 repeats.
    records = tcplog.read(tcplog.sidecar(csv_path))
    assert [r["t"] for r in records] == [samples[i]["t"] for i in (0, 10, 25)]
    # Nothing lost: the folder's files give back every sample, connections included.
    assert load_samples(csv_path) == samples


def test_tcp_records_round_trip_gzipped_and_an_old_plain_file_is_still_read(tmp_path):
    records = [{"t": 1.0, "services": {"scoring-sync": {"7": ["a->b"]}}},
               {"t": 2.0, "services": {"scoring-sync": None}}]
    csv_path = tmp_path / "localhost.csv"
    gz = tcplog.gz_sidecar(csv_path)
    tcplog.write(records, gz)
    assert gz.read_bytes()[:2] == b"\x1f\x8b" and tcplog.read(gz) == records
    first = gz.read_bytes()
    tcplog.write(records, gz)
    assert gz.read_bytes() == first  # no time in the header: same records, same bytes
    assert tcplog.sidecar(csv_path) == gz
    # a folder from before: only the plain file, which is what sidecar names
    gz.unlink()
    plain = tmp_path / "localhost.tcp.jsonl"
    tcplog.write(records, plain)
    assert tcplog.sidecar(csv_path) == plain and tcplog.read(plain) == records
