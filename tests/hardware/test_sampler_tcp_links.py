"""The sampler records which lab service process holds a connection to which, on real servers:
the sync scoring handler's pooled keep-alive connections to the sync model API."""

from __future__ import annotations

import time
import urllib.request

import psutil
import pytest

from experiments.analysis import pinning
from hardware.sampler import Sampler
from hardware.sockets import _endpoint
from hardware.summary import load_samples, write_resources
from tests.conftest import free_port, start_service, stop

pytestmark = pytest.mark.slow


def test_endpoint_decodes_proc_net_tcp_addresses():
    assert _endpoint("0100007F:1388") == "127.0.0.1:5000"
    assert _endpoint("00000000000000000000000001000000:0050") == "[::1]:80"


def test_sampler_records_scoring_to_model_connections(seeded_redis, tmp_path):
    run_dir = str(tmp_path)
    ports = {"model": free_port(), "scoring": free_port()}
    common = {"SCORING_LAB_RUN_DIR": run_dir, "SCORING_LAB_WORKERS": "2",
              "SCORING_LAB_REDIS_URL": seeded_redis.url}
    model = start_service("model", "sync", ports["model"], common, tmp_path / "model.log")
    scoring = None
    try:
        scoring = start_service(
            "scoring", "sync", ports["scoring"],
            {**common, "SCORING_LAB_MODEL_URL": f"http://127.0.0.1:{ports['model']}"},
            tmp_path / "scoring.log")
        # Enough requests that both scoring workers have served some (meinheld workers race
        # for accepts): each then holds a pooled connection to a model worker.
        url = f"http://127.0.0.1:{ports['scoring']}/api/v1/ml/sync/predict"
        for _ in range(40):
            req = urllib.request.Request(url, data=b"[1, 2]", method="POST",
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=10) as resp:
                assert resp.status == 200
        model_workers = {c.pid for c in psutil.Process(model.pid).children()}
        scoring_workers = {c.pid for c in psutil.Process(scoring.pid).children()}
        # One CI run's sample saw a single scoring-sync process and no links (passes here
        # every time): sample again for a few seconds before judging, and say what the
        # sampler found against the real process trees if it never sees the links.
        seen = []
        deadline = time.monotonic() + 10
        while True:
            sample = Sampler(run_dir).sample()
            svc = sample["services"]
            seen.append({name: s.get("pids") for name, s in svc.items()})
            if svc.get("scoring-sync", {}).get("tcp") or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        trees = {"scoring-sync": [scoring.pid, *sorted(scoring_workers)],
                 "model-sync": [model.pid, *sorted(model_workers)]}
    finally:
        if scoring is not None:
            stop(scoring)
        stop(model)
    svc = sample["services"]
    s_tcp, m_tcp = (svc.get(name, {}).get("tcp") or {} for name in ("scoring-sync", "model-sync"))
    assert s_tcp, f"sampler saw {seen[-3:]} ({len(seen)} samples); the processes: {trees}"
    assert set(map(int, s_tcp)) <= scoring_workers  # the workers hold them, not the master
    model_port_links = [c for conns in s_tcp.values() for c in conns
                        if c.endswith(f"->127.0.0.1:{ports['model']}")]
    assert model_port_links, s_tcp
    # Each of those is seen from the model side, reversed, by a model worker.
    reversed_ = {f"{b}->{a}" for conns in m_tcp.values() for a, _, b in
                 (c.partition("->") for c in conns)}
    assert set(model_port_links) <= reversed_
    assert set(map(int, m_tcp)) <= model_workers
    # Only connections between lab service processes: Redis's side of the scoring
    # workers' pooled connections is there, the test's own client connections are not.
    peers = {c.split("->")[1] for conns in s_tcp.values() for c in conns}
    assert peers <= {f"127.0.0.1:{ports['model']}", f"127.0.0.1:{seeded_redis.port}"}
    summary = pinning.model_connections([sample])
    assert summary is not None and summary["scoring_workers"] >= 1
    assert set(summary["model_pids"]) <= set(map(int, m_tcp))
    # The records survive the result folder's form (the CSV and its tcp file).
    write_resources([sample], tmp_path / "s.csv")
    again = load_samples(tmp_path / "s.csv")[0]
    assert again["services"]["scoring-sync"]["tcp"] == s_tcp
