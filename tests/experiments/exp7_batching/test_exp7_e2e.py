"""Experiment 7 with the smoke profile, end to end on a private deployed lab: the async scoring
handler against the on-demand model API and the micro-batcher, both on one device slot, each
deployed and served through the real servers, probed, stepped and searched with the model's
batch counters read around every run; the report with the model it measured, the batches per
load level and the regime verdict, rebuildable from the folder alone."""

from __future__ import annotations

import json

import pytest

from experiments.exp7_batching import EXPERIMENT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def folder(experiments_lab):
    return experiments_lab.run_smoke("exp7_batching", timeout=600)


def test_each_build_deployed_on_its_device_and_searched(folder):
    m = json.loads((folder / "manifest.json").read_text())
    assert m["status"] == "complete" and m["experiment"] == "experiment-7"
    assert [v["name"] for v in m["variants"]] == ["micro-1-slot", "on-demand-1-slot"]
    micro = m["variants"][0]
    assert micro["deploy_vars"]["model_api_batching"] == "micro"
    assert micro["deploy_vars"]["model_api_device_slots"] == 1
    assert all(c["ok"] for c in micro["deploy"]["verify"])
    assert set(m["capacity"]) == {"micro-1-slot", "on-demand-1-slot"}
    assert m["restore_default"]["verify"]


def test_the_report_names_the_model_and_the_batches_it_formed(folder):
    report = json.loads((folder / "report.json").read_text())
    rows = {r["variant"]: r for r in report["rows"]}
    assert set(rows) == {"micro-1-slot", "on-demand-1-slot"}
    micro, plain = rows["micro-1-slot"], rows["on-demand-1-slot"]
    # the model as the servers reported it: one slot, the micro-batcher's 5 ms wait
    assert micro["served_by"]["slots"] == 1 == plain["served_by"]["slots"]
    assert micro["served_by"]["batching"] == "micro" and micro["max_wait_ms"] == 5
    assert plain["served_by"]["batching"] == "off" and plain["max_wait_ms"] is None
    for r in (micro, plain):
        levels = r["levels"]
        assert levels[0]["level"] == "1 user" and any(lv["rate"] for lv in levels)
        for lv in levels:
            h = lv["histogram"]
            assert h["complete"], lv  # every model worker counted before and after
            assert h["items"] > 0, lv
        assert r["p50_1_user_ms"] and r["stack_cpu_ms_per_request"] > 0
    assert all(set(lv["histogram"]["sizes"]) == {"1"} for lv in plain["levels"])  # JSON keys
    # the micro-batcher forms batches: an async scoring request's two concurrent calls at least
    assert micro["levels"][0]["histogram"]["max_size"] >= 2
    # one slot: on demand an async request's two concurrent calls queue for it (two sleeps of
    # at least 40 ms), batched they share one
    assert plain["p50_1_user_ms"] >= 80 and micro["p50_1_user_ms"] < plain["p50_1_user_ms"]
    [verdict] = report["regimes"]
    assert verdict["device"] == "1-slot" and verdict["max_wait_ms"] == 5
    assert verdict["added_p50_ms"] < 0
    text = (folder / "report.md").read_text()
    for heading in ("## The model measured", "## Capacity, latency and cost",
                    "## Where batching wins", "## Batch sizes per load level"):
        assert heading in text
    assert "micro-batches of at most 32 items, 5 ms max wait" in text
    m = json.loads((folder / "manifest.json").read_text())
    assert m["headline"]["regime"] == {"async scoring + micro / 1-slot": verdict["regime"]}


def test_the_report_rebuilds_from_the_folder_alone(folder):
    before = (folder / "report.md").read_text()
    EXPERIMENT.rebuild(folder)
    assert (folder / "report.md").read_text() == before
