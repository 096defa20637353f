"""`make experiment-3` with the smoke profile, end to end on this machine: a real Ansible deploy
(pinned cores), real gunicorn/uvicorn/Redis, real Locust runs, collection and the report.

The lab gets its own copy of the default inventory, with ports and run directory moved by a
host_vars file, so the test never touches a developer's running lab."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess

import numpy as np
import pytest

from experiments.analysis.capacity import read_recovery
from experiments.exp3_load import EXPERIMENT as EXP3
from experiments.repeats import locust_root
from hardware.summary import load_samples
from tests.conftest import ROOT, free_port, require

pytestmark = pytest.mark.slow

SCENARIOS = ("response_time", "load_test", "max_performance", "stress")
ARCHS = ("sync", "async")
# The smoke profile's repeats (1; with 2 the restart between repeats is checked too, about
# 3 more minutes: passed so on 2026-11-30, 8 tests in 7 min).
REPEATS = tuple(range(1, EXP3.configure("smoke").repeats + 1))


def _locust(folder, k):
    """Repeat k's Locust folder: raw/locust (one repeat) or raw/repeat-<k>/locust."""
    return locust_root(folder / "raw", k, len(REPEATS))


def _repeat_doc(report, k):
    """Repeat k's part of report.json (a run of one keeps the layout of runs before repeats)."""
    return report["repeats"][k - 1] if "repeats" in report else report


def _values(figure):
    """A headline figure's per-repeat values (one repeat: a bare number)."""
    return figure["values"] if isinstance(figure, dict) else [figure]
SERVICES = ("redis", "model-sync", "model-async", "scoring-sync", "scoring-async", "loadgen")


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    require("redis-server")
    require("taskset")
    tmp = tmp_path_factory.mktemp("exp3")
    inventory = tmp / "inventory"
    shutil.copytree(ROOT / "ansible/inventories/single-host", inventory)
    (inventory / "host_vars").mkdir()
    ports = {name: free_port() for name in
             ("redis", "model_sync", "model_async", "scoring_sync", "scoring_async")}
    (inventory / "host_vars/localhost.yml").write_text(json.dumps(
        {"lab_run_dir": str(tmp / "run"), "lab_ports": ports, "feature_store_entities": 50}))
    env = {**os.environ, "LAB_STATE_DIR": str(tmp / "state")}
    make_vars = [f"INVENTORY={inventory}", f"RESULTS_DIR={tmp / 'results'}"]
    try:
        done = subprocess.run(["make", "experiment-3", "PROFILE=smoke", *make_vars], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=900)
        yield done, tmp / "results"
    finally:
        subprocess.run(["make", "teardown", *make_vars], cwd=ROOT, env=env,
                       capture_output=True, timeout=300)


def _folder(results):
    runs = [p for p in results.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def test_make_experiment_3_succeeds_and_prints_the_headline(experiment):
    done, results = experiment
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    folder = _folder(results)
    assert f"result folder: {folder}" in done.stdout
    assert "p50_ms_1_user" in done.stdout


def test_manifest_is_complete_and_versioned(experiment):
    manifest = json.loads((_folder(experiment[1]) / "manifest.json").read_text())
    assert manifest["format_version"] == 1
    assert manifest["status"] == "complete"
    assert manifest["profile"] == "smoke" and manifest["arrival"] == "spread"
    assert manifest["metadata"]["git_commit"]
    assert len(manifest["metadata"]["uv_lock_sha256"]) == 64
    assert set(manifest["topology"]["services"]) >= {"redis", "scoring-sync", "scoring-async"}
    ran = {(s["name"], s["arch"], s["repeat"]) for s in manifest["scenarios"]}
    assert ran == {(s, a, k) for s in SCENARIOS for a in ARCHS for k in REPEATS}
    assert set(manifest["breaking_points"]) == set(ARCHS)
    for arch in ARCHS:
        p50 = _values(manifest["headline"][arch]["p50_ms_1_user"])
        assert len(p50) == len(REPEATS) and min(p50) > 0


def test_repeats_alternate_and_restart_the_services(experiment):
    folder = _folder(experiment[1])
    manifest = json.loads((folder / "manifest.json").read_text())
    records = manifest["repeats"]
    assert [r["order"] for r in records] == [
        ["sync", "async"] if k % 2 else ["async", "sync"] for k in REPEATS]
    assert "renewed" not in records[0]
    report = json.loads((folder / "report.json").read_text())
    text = (folder / "report.md").read_text()
    assert "## Repeats" in text
    if len(REPEATS) == 1:
        assert "One repeat" in text and "## Repeat 1" not in text
        assert {c["verdict"] for c in report["repeat_comparisons"].values()} == {
            "one repeat: not testable"}
        return
    renewed = records[1]["renewed"]
    assert all(c["ok"] for c in renewed["verify"])
    assert (folder / renewed["log"]).is_file()
    # the order the scenarios really ran in: repeat 2 starts with async
    first = {k: min((s for s in manifest["scenarios"] if s["repeat"] == k),
                    key=lambda s: s["started_at_unix"])["arch"] for k in REPEATS}
    assert first == {1: "sync", 2: "async"}
    # the restart gave every model API and scoring handler a new process
    pids = renewed["pids"]
    assert set(pids["before"]) == {"model-sync", "model-async", "scoring-sync", "scoring-async"}
    assert all(pids["before"][s] != pids["after"][s] for s in pids["before"]), pids
    assert [r["repeat"] for r in report["repeats"]] == list(REPEATS)
    assert "p50_ms_1_user" in report["repeat_comparisons"]
    assert "## Repeat 2 (order: async, sync)" in text


def test_hardware_report_and_resource_samples_for_every_service(experiment):
    raw = _folder(experiment[1]) / "raw"
    system = json.loads((raw / "hardware/localhost/system.json").read_text())
    assert system["cpu"]["logical_threads"] >= 1
    if shutil.which("lshw"):
        json.loads((raw / "hardware/localhost/lshw.json").read_text())
    # The deployed affinity is recorded for every service process.
    services = {p["service"] for p in system["lab_processes"]}
    assert services >= set(SERVICES) - {"loadgen"}
    seen = set()
    for sample in load_samples(raw / "resources/localhost.csv"):
        seen |= set(sample["services"])
    assert seen >= set(SERVICES)


def test_locust_csvs_for_every_scenario_and_architecture(experiment):
    folder = _folder(experiment[1])
    for scenario in SCENARIOS:
        for arch, k in ((a, k) for a in ARCHS for k in REPEATS):
            run = _locust(folder, k) / scenario / arch
            for name in ("locust_stats.csv", "locust_stats_history.csv", "locust_failures.csv"):
                assert (run / name).stat().st_size > 0, run / name
            assert list(run.glob("requests_*.csv"))


def test_report_numbers_match_the_csvs(experiment):
    folder = _folder(experiment[1])
    report = json.loads((folder / "report.json").read_text())
    text = (folder / "report.md").read_text()
    for scenario, k in ((s, k) for s in SCENARIOS for k in REPEATS):
        for arch in ARCHS:
            numbers = _repeat_doc(report, k)["numbers"][scenario][arch]
            rows = []
            for path in (_locust(folder, k) / scenario / arch).glob("requests_*.csv"):
                with path.open() as f:
                    rows += list(csv.DictReader(f))
            assert numbers["total_requests"] == len(rows)
            t0, t1 = numbers["window"]
            ends = [(float(r["start_unix"]) + float(r["response_time_ms"]) / 1000, r)
                    for r in rows if r["ok"] == "1"]
            # open model (max performance): latency from the scheduled send, not the send
            ok_ms = [(end - float(r["scheduled_unix"] or r["start_unix"])) * 1000
                     if r.get("scheduled_unix") else float(r["response_time_ms"])
                     for end, r in ends if t0 <= end < t1]
            assert numbers["p50_ms"] == pytest.approx(float(np.percentile(ok_ms, 50)))
            assert f"{numbers['p50_ms']:.1f}" in text
    # One request at a time: two sequential model calls for sync, two concurrent for async.
    one_user = _repeat_doc(report, 1)["numbers"]["response_time"]
    assert one_user["sync"]["p50_ms"] > 1.5 * one_user["async"]["p50_ms"]


def test_results_index_lists_the_run(experiment):
    folder = _folder(experiment[1])
    assert folder.name in (experiment[1] / "README.md").read_text()


def test_capacity_search_and_max_performance_held_at_it(experiment):
    folder = _folder(experiment[1])
    manifest = json.loads((folder / "manifest.json").read_text())
    report = json.loads((folder / "report.json").read_text())
    for arch in ARCHS:
        live = manifest["capacity"][arch]["shared"]
        assert live["status"] in {"found", "above_range", "below_range", "unfinished"}
        steps = sorted((_locust(folder, 1) / "capacity" / arch).iterdir())
        first = _repeat_doc(report, 1)
        assert len(steps) == len(first["capacity"][arch]["shared"]["steps"]) >= 1
        for step in steps:
            counts = json.loads((step / "result.json").read_text())["open_model"]
            assert counts["scheduled"] > 0 and counts["streams_reported"] == counts["streams"]
            # each step waited for the stack to be idle first, through the real services
            recovery = read_recovery(step)
            assert recovery["recovered"] and recovery["idle_ms"] > 0
            assert all(status == 200 for _, status, _ in recovery["probes"])
        # the report re-derives the capacity from the step folders alone
        assert first["capacity"][arch]["shared"]["capacity"] == live["capacity"]
        assert "relative" in first["capacity"][arch]
        if len(REPEATS) > 1:  # repeat 2 searched too, from repeat 1's capacity if found
            second = manifest["repeats"][1]["capacity"][arch]["shared"]
            assert second["hint_rate"] == (live["capacity"] or None)
            assert list((_locust(folder, 2) / "capacity" / arch).iterdir())
        held = next(s for s in manifest["scenarios"]
                    if s["name"] == "max_performance" and s["arch"] == arch)
        assert held["capacity_rps"] == live["capacity"]
        capacity = _values(manifest["headline"][arch]["capacity_rps"])  # over the repeats
        assert capacity[0] == pytest.approx(live["capacity"], 0.01)
        assert first["numbers"]["max_performance"][arch]["open_model"] is True
    assert "## Capacity under a latency bound" in (folder / "report.md").read_text()
