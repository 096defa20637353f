"""Experiment 9 with the smoke profile, end to end on a private deployed lab: the admission
build deployed, both architectures swept past their (tiny) capacity, every fault injected into
the real services and removed, the default build restored, the report and its plots written
and rebuildable from the folder alone."""

from __future__ import annotations

import json
import urllib.request

import psutil
import pytest

from experiments.exp9_overload import EXPERIMENT
from experiments.lab.faults import Supervisor

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def folder(experiments_lab):
    return experiments_lab.run_smoke("exp9_overload", timeout=600)


def test_every_fault_was_injected_and_removed_and_the_lab_is_whole(folder):
    m = json.loads((folder / "manifest.json").read_text())
    assert m["status"] == "complete" and m["experiment"] == "experiment-9"
    assert [b["name"] for b in m["builds"]] == ["admission"]
    assert all(c["ok"] for c in m["builds"][0]["deploy"]["verify"])
    assert all(c["ok"] for c in m["restore_default"]["verify"])
    for arch in ("sync", "async"):
        for fault in ("none", "model_slow", "model_down", "redis_frozen", "redis_restart",
                      "worker_kill", "chunked_trailer"):
            d = folder / "raw/locust/faults/admission" / arch / fault
            record = json.loads((d / "fault.json").read_text())
            assert "error" not in record and "stop_error" not in record, record
            assert record["started_at"] < record["ended_at"] <= record["removed_at"]
            if fault == "none":  # the control: timed as a fault, nothing done
                assert record["start"] == {"injected": False}, record
            if fault == "redis_restart":
                assert record["stop"]["running"], record
            if fault == "chunked_trailer":
                # the admission build's sync side is gthread, not meinheld: answered, none died
                assert record["start"]["answer"].startswith("HTTP/1.1"), record
                assert record["start"]["died"] == [], record
        meta = folder / "raw/locust/metastability/admission" / arch
        trigger = json.loads((meta / "burst" / "trigger.json").read_text())
        assert "error" not in trigger and trigger["stop"]["requests"] > 0, trigger
        slow = json.loads((meta / "model_slow" / "trigger.json").read_text())
        assert "error" not in slow and slow["stop"]["removed"], slow
    services = m["topology"]["services"]
    run_dir = services["redis"]["run_dir"]
    sup = Supervisor(run_dir)
    for program in ("redis", "model-sync", "model-async", "scoring-sync", "scoring-async"):
        assert sup.running(program), program
    assert psutil.Process(sup.pid("redis")).status() != psutil.STATUS_STOPPED
    for name in ("model-sync", "scoring-async"):
        with urllib.request.urlopen(services[name]["url"] + "/api/v1/healthcheck",
                                    timeout=5) as r:
            assert r.status == 200


def test_the_report_has_the_sweep_the_timelines_and_the_headline(folder):
    report = json.loads((folder / "report.json").read_text())
    cells = report["cells"]
    assert set(cells) == {"admission/sync", "admission/async"}
    for key, c in cells.items():
        assert [r["factor"] for r in c["sweep"]] == [1.0, 2.0], key
        assert all(r["requests"] > 0 for r in c["sweep"])
        assert c["after_sweep"]["recovered"], key
        for name, t in c["faults"].items():
            e = t["effect"]
            assert e is not None and e["wrong"] == 0, (key, name)
            assert t["windows"] and t["start_s"] < t["end_s"]
        # the model API down for 2 s at the offered load: the clients saw it; the control
        # (no fault, the same schedule) failed nothing
        assert c["faults"]["model_down"]["effect"]["failed"] > 0, key
        assert c["faults"]["none"]["effect"]["failed"] == 0, key
        burst = c["metastability"]["burst"]
        assert burst["offered_rps"] > 0 and burst["start_s"] < burst["end_s"], key
    head = json.loads((folder / "manifest.json").read_text())["headline"]
    assert head == report["headline"] and head["bound_ms"] == 250
    assert set(head["goodput"]) == {"admission/sync", "admission/async"}
    text = (folder / "report.md").read_text()
    assert "## Overload sweep" in text and "## Fault timelines" in text and "## Goals" in text
    for plot in ("plot_sweep_admission.png", "plot_faults_model_down.png"):
        assert (folder / plot).stat().st_size > 0


def test_the_report_rebuilds_from_the_folder_alone(folder):
    before = (folder / "report.md").read_text()
    EXPERIMENT.rebuild(folder)
    assert (folder / "report.md").read_text() == before
