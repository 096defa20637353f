"""Experiment 4 with the smoke profile (three variants), end to end on a private deployed lab:
redeploys per variant, probes, capacity searches, step loads, the default build restored,
collection, the report with the ceiling model's prediction beside each measurement."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from experiments.analysis.summary import analyse_run_dir
from experiments.reporting import LOWER_BOUNDS

pytestmark = pytest.mark.slow

VARIANTS = ("original", "default", "async-sequential")


@pytest.fixture(scope="module")
def folder(experiments_lab):
    return experiments_lab.run_smoke("exp4_ladder", timeout=1500)


def _requests(d: Path) -> list[dict]:
    rows = []
    for path in d.glob("requests_*.csv"):
        with path.open() as f:
            rows += list(csv.DictReader(f))
    return rows


def test_manifest_is_complete_with_a_window_per_variant(folder):
    m = json.loads((folder / "manifest.json").read_text())
    assert m["status"] == "complete" and m["experiment"] == "experiment-4"
    assert m["profile"] == "smoke"
    assert [v["name"] for v in m["variants"]] == list(VARIANTS)
    for v in m["variants"]:
        assert v["window_start"] < v["window_end"]
        assert v["deploy"]["verify"] and all(c["ok"] for c in v["deploy"]["verify"])
        assert (folder / v["deploy"]["log"]).exists()
        assert v["workers"]["scoring-sync"]["workers"] >= 1
    assert m["variants"][0]["deploy_vars"]["scoring_handler_env"][
        "SCORING_LAB_CLIENT_PER_REQUEST"] == "true"
    assert m["variants"][1]["deploy_vars"] == {}
    assert m["restore_default"]["verify"]
    ran = {(s["variant"], s["step"], s["arch"]) for s in m["scenarios"]}
    assert ("original", "probe-model", "sync") in ran
    assert ("async-sequential", "load_test-spread", "async") in ran
    assert ("async-sequential", "load_test-spread", "sync") not in ran
    assert (folder / "raw/resources/localhost.csv").exists()


def test_the_default_build_runs_again_after_the_ladder(folder, experiments_lab):
    topology = json.loads((Path(experiments_lab.env["LAB_STATE_DIR"]) / "topology.json")
                          .read_text())
    pid = topology["services"]["scoring-async"]["pids"]
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert not any(e.startswith(b"SCORING_LAB_SEQUENTIAL_MODEL_CALLS") for e in environ)
    assert not any(e.startswith(b"SCORING_LAB_CLIENT_PER_REQUEST") for e in environ)


def test_report_puts_predicted_beside_measured_from_the_csvs(folder):
    report = json.loads((folder / "report.json").read_text())
    text = (folder / "report.md").read_text()
    rows = {(r["variant"], r["arch"], r["arrival"]): r for r in report["rows"]}
    assert set(rows) == {("original", "sync", "spread"), ("original", "async", "spread"),
                         ("default", "sync", "spread"), ("default", "async", "spread"),
                         ("async-sequential", "async", "spread")}
    for (variant, arch, _), r in rows.items():
        assert r["predicted_rps"] and r["predicted_rps"] > 0, r
        assert r["binding"], r
        assert r["max_rps"] > 0
        assert f"| {variant} | {arch} | spread | {r['p50_1_user_ms']:.1f} |" in text
        probe = folder / "raw/locust" / variant / "probe" / arch
        ok_ms = [float(x["response_time_ms"]) for x in _requests(probe) if x["ok"] == "1"]
        assert min(ok_ms) <= r["p50_1_user_ms"] <= max(ok_ms)
        assert r["p50_1_user_ms"] == pytest.approx(
            analyse_run_dir(probe, warmup_s=1.0).numbers.p50_ms)
    # Blocking sync stack: a worker stage; uvicorn: CPU only.
    assert rows[("default", "sync", "spread")]["model_hold_ms"] > 30
    assert any(s["kind"] == "workers" for s in rows[("default", "sync", "spread")]["model"]
               ["stages"])
    assert rows[("default", "async", "spread")]["binding"].startswith("cpu:")
    # Sequential model calls: about one more model sleep at one user.
    assert (rows[("async-sequential", "async", "spread")]["p50_1_user_ms"]
            > rows[("default", "async", "spread")]["p50_1_user_ms"] + 25)
    assert "Where the delta comes from" in text and "Low-load latency" in text
    assert (folder / "plot_ladder.png").stat().st_size > 0
    dec = report["decomposition"]
    assert dec["latency"]["concurrency_ms"] > 25
    assert set(dec["original"]) == {"sync", "async"}


def test_every_rung_has_a_capacity_search_the_report_rederives(folder):
    m = json.loads((folder / "manifest.json").read_text())
    report = json.loads((folder / "report.json").read_text())
    rows = {(r["variant"], r["arch"]): r for r in report["rows"] if r["arrival"] == "spread"}
    searched = {(v, a) for v, by_arch in m["capacity"].items() for a in by_arch}
    assert searched == set(rows) == {(v, a) for v, by_arch in report["capacity"].items()
                                     for a in by_arch}
    for (variant, arch), r in rows.items():
        live = m["capacity"][variant][arch]["shared"]
        assert live["status"] in {"found", "above_range", "below_range", "unfinished"}
        assert live["p99_bound_ms"] == 250
        steps = sorted((folder / "raw/locust" / variant / "capacity" / arch).iterdir())
        derived = report["capacity"][variant][arch]["shared"]
        assert len(steps) == len(derived["steps"]) == len(live["steps"]) >= 1
        for step in steps:
            counts = json.loads((step / "result.json").read_text())["open_model"]
            assert counts["scheduled"] > 0
        # from the step folders alone, the same capacity as the live search
        assert derived["capacity"] == live["capacity"]
        assert derived["first_failing"] == live["first_failing"]
        assert r["capacity_rps"] == live["capacity"]
        assert r["capacity_status"] == derived["status"]
        if live["capacity"] is not None:
            assert r["capacity_over_predicted"] == pytest.approx(
                live["capacity"] / r["predicted_rps"])
            # a lower bound is written as one in the headline (">= x")
            head = m["headline"]["capacity_rps"][f"{variant}/{arch}"]
            if r["capacity_status"] in LOWER_BOUNDS:
                assert head == f">= {round(live['capacity'], 1)}"
            else:
                assert head == pytest.approx(live["capacity"], abs=0.05)
    assert "## Capacity per rung" in (folder / "report.md").read_text()
