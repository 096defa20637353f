"""Experiment 9's report from a synthetic result folder (requests written as the load
generator writes them): the sweep's goodput and errors, a fault's detect and recover times, a
burst's return, the headline the manifest keeps, the plots, and a rebuild byte for byte."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.exp9_overload import EXPERIMENT, report

T0 = 1_700_000_000.0
HEADER = "start_unix,response_time_ms,status,ok,error,scheduled_unix\n"


def _step(d: Path, rate: float, span: float, rows: list[tuple], start: float = T0) -> None:
    """A Locust run folder: result.json, one stream's counts and its request log."""
    d.mkdir(parents=True)
    (d / "result.json").write_text(json.dumps({
        "started_at": start - 1, "ended_at": start + span + 1, "valid": True, "reasons": [],
        "open_model": {"rate": rate, "schedule_s": span}}))
    (d / "open_model_1.json").write_text(json.dumps({"schedule_start_unix": start}))
    with (d / "requests_1.csv").open("w") as f:
        f.write(HEADER)
        for scheduled, rt_ms, status, ok, error in rows:
            f.write(f"{scheduled:.6f},{rt_ms},{status},{1 if ok else 0},{error},"
                    f"{scheduled:.6f}\n")


def _steady(start: float, rate: float, span: float, latency=lambda t: 50.0,
            fails=lambda t: None) -> list[tuple]:
    rows = []
    for k in range(int(rate * span)):
        t = k / rate
        failure = fails(t)  # None, or (status, error text)
        rows.append((start + t, 300.0, failure[0], False, failure[1]) if failure else
                    (start + t, latency(t), 200, True, ""))
    return rows


@pytest.fixture
def folder(tmp_path) -> Path:
    cfg = EXPERIMENT.configure("smoke")
    run = tmp_path / "run"
    raw = run / "raw" / "locust"
    cap = cfg.capacity_of("admission", "async")  # 8 req/s
    _step(raw / "sweep/admission/async/00_1x", cap, 10, _steady(T0, cap, 10))
    # 2x: half the requests answered in time, the rest 503s
    _step(raw / "sweep/admission/async/01_2x", 2 * cap, 10,
          _steady(T0, 2 * cap, 10,
                  fails=lambda t: (503, "HTTP 503") if int(t * 16) % 2 else None))
    rows = _steady(T0, 10, 20, latency=lambda t: 500.0 if 10 <= t < 12 else
                   120.0 if 16 <= t < 17 else 50.0,
                   fails=lambda t: (0, "HTTP 0: ConnectionResetError: reset") if 5 <= t < 10
                   else None)
    # the failed rows' status is 0: a reset connection, lost
    _step(raw / "faults/admission/async/worker_kill", 10, 20, rows)
    (raw / "faults/admission/async/worker_kill/fault.json").write_text(json.dumps(
        {"fault": "worker_kill", "started_at": T0 + 5, "ended_at": T0 + 10,
         "removed_at": T0 + 10.1}))
    # the control: the same schedule, no fault, run 100 s earlier; its one slow second at
    # 16-17 s is the schedule's, and the killed worker's run shows it too
    control = raw / "faults/admission/async/none"
    _step(control, 10, 20, _steady(T0 - 100, 10, 20,
                                   latency=lambda t: 120.0 if 16 <= t < 17 else 50.0),
          start=T0 - 100)
    (control / "fault.json").write_text(json.dumps(
        {"fault": "none", "started_at": T0 - 95, "ended_at": T0 - 90,
         "removed_at": T0 - 90}))
    for part in ("idle", "recovery"):
        d = raw / "sweep/admission/async" / part
        d.mkdir()
        (d / "recovery.json").write_text(json.dumps(
            {"recovered": True, "waited_s": 2.5 if part == "recovery" else 0.3,
             "idle_ms": 40.0, "threshold_ms": 60.0}))
    meta = raw / "metastability/admission/async/burst"
    _step(meta, 7.2, 20, _steady(T0, 7.2, 20, latency=lambda t: 900.0 if 5 <= t < 13 else 50.0))
    _step(meta / "burst", 8.8, 5, _steady(T0 + 5, 8.8, 5, latency=lambda t: 900.0),
          start=T0 + 5)
    (meta / "trigger.json").write_text(json.dumps(
        {"fault": "burst", "started_at": T0 + 4, "ended_at": T0 + 9}))
    (run / "manifest.json").write_text(json.dumps({
        "experiment": "experiment-9", "status": "complete", "profile": "smoke",
        "protocol": {**cfg.to_dict(), "architectures": ["async"]},
        "builds": [{"name": "admission", "description": "admission control"}]}))
    return run


def test_the_analysis_reads_the_sweep_faults_and_triggers(folder):
    res = report.analyse(folder)
    cell = res["cells"]["admission/async"]
    one, two = cell["sweep"]
    assert (one["factor"], one["goodput_rps"], one["errors"]["503"]) == (1.0, 8.0, 0)
    assert two["factor"] == 2.0 and two["goodput_rps"] == 8.0 and two["errors"]["503"] == 80
    assert one["cpu_ms_per_answer"] is None  # no resource samples in this folder
    assert cell["after_sweep"]["waited_s"] == 2.5
    e = cell["faults"]["worker_kill"]["effect"]
    assert e["detect_s"] == pytest.approx(0.3) and e["recover_s"] == pytest.approx(2.0)
    assert e["lost"] == 50 and e["wrong"] == 0
    # the control failed nothing; without it, its slow second (the schedule's) would have
    # put the killed worker's recovery at 7 s
    assert cell["faults"]["none"]["effect"]["failed"] == 0
    assert cell["faults"]["none"]["effect"]["recover_s"] == pytest.approx(7.0)
    t = cell["metastability"]["burst"]
    assert t["start_s"] == pytest.approx(5.0) and t["offered_rps"] == pytest.approx(7.2)
    assert t["return_s"] is not None and 3 <= t["return_s"] <= 4.5
    h = report.headline(res)
    assert h["goodput"]["admission/async"] == {"1x": 8.0, "2x": 8.0, "recover_s": 2.5}
    assert h["faults"]["admission/async/worker_kill"] == {
        "detect_s": 0.3, "detect_by": "error", "recover_s": 2.0, "lost": 50, "wrong": 0}
    # issue 25's goals: 2x goodput at capacity within the bound (met); the killed worker's
    # 50 lost requests miss the fault goal though it recovered in 2 s; the burst came back
    g = res["goals"]["admission/async"]
    assert g["overload"] == {"goodput_ratio": 1.0, "p99_ms": g["overload"]["p99_ms"],
                             "met": True} and g["overload"]["p99_ms"] <= 250
    assert g["faults"] == {"missed": ["worker_kill"], "met": False}
    assert g["metastability"]["met"] is True


def test_a_goal_is_missed_by_goodput_a_late_p99_a_slow_recovery_or_a_late_return():
    sweep = [{"factor": 2.0, "goodput_rps": 8.9, "p99_ms": 240.0}]
    fault = {"effect": {"recover_s": 2.0, "lost": 0, "wrong": 0}}
    cell = {"capacity": 10.0, "sweep": sweep, "faults": {"model_down": fault},
            "metastability": {"burst": {"return_s": 5.0}}}
    g = report.goals(cell, 250)
    assert not g["overload"]["met"] and g["faults"]["met"] and g["metastability"]["met"]
    sweep[0].update(goodput_rps=9.0, p99_ms=260.0)
    assert not report.goals(cell, 250)["overload"]["met"]
    sweep[0]["p99_ms"] = 250.0
    assert report.goals(cell, 250)["overload"]["met"]
    fault["effect"]["recover_s"] = 2.1
    cell["metastability"]["burst"]["return_s"] = None  # never back within the run
    g = report.goals(cell, 250)
    assert g["faults"] == {"missed": ["model_down"], "met": False}
    assert not g["metastability"]["met"]
    # a run without a 2x step, faults or triggers did not measure those goals
    assert report.goals({"capacity": 10.0, "sweep": [], "faults": {}, "metastability": {}},
                        250) == {"overload": None, "faults": None, "metastability": None}


def test_the_report_writes_tables_plots_and_rebuilds_the_same(folder):
    res = report.analyse(folder)
    written = report.write_report(folder, res)
    text = written.markdown.read_text()
    assert "| 2x | 16.0 | 8.0 | 80 |" in text
    assert ("| admission/async | worker_kill | 50.0 | 0.30 (error) | 2.0 | 50 | 50 | 0 | "
            "reset 50 | ok |") in text
    # the burst: back 3-4.5 s after its end, its 900 ms answers the worst window
    assert "| admission/async | burst | 7.2 | 3" in text and "| 900.0 | none |" in text
    assert "| admission/async | **met** | 100% | 50.0 | **missed** | worker_kill | **met** |" \
        in text
    assert {p.name for p in written.plots} == {"plot_sweep_admission.png",
                                               "plot_faults_none.png",
                                               "plot_faults_worker_kill.png",
                                               "plot_metastability_burst.png"}
    doc = json.loads(written.json.read_text())
    assert "_windows" not in json.dumps(doc) and doc["headline"] == written.headline
    EXPERIMENT.rebuild(folder)
    assert written.markdown.read_text() == text


def test_builds_of_one_architecture_sit_side_by_side():
    def cell(build, arch, rows):
        return {"build": build, "arch": arch, "sweep": [
            {"factor": f, "goodput_rps": g, "p99_ms": p} for f, g, p in rows]}
    res = {"cells": {
        "admission/async": cell("admission", "async", [(1.0, 60.0, 120.0), (2.0, 58.0, 240.0)]),
        "admission-fixed/async": cell("admission-fixed", "async", [(1.0, 61.0, 130.0)]),
        "admission/sync": cell("admission", "sync", [(1.0, 6.0, 200.0)])}}
    lines = report._side_by_side(res)
    assert "| load | admission | admission-fixed |" in lines
    assert "| 2x | 58.0 (240.0) | - |" in lines
    assert "### sync" not in lines  # one build only: nothing to set beside it
    assert report._side_by_side({"cells": {"admission/sync": res["cells"]["admission/sync"]}}) \
        == []
