"""Experiment 8's report from a synthetic result folder (job logs, worker times, request logs
and depth samples written as the runner writes them): the levels beside the in-line steps, the
queue's capacity off the sweep, the burst's rejections and drain, the headline the manifest
keeps, the plots, and a rebuild byte for byte."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from experiments.exp8_queue import EXPERIMENT, report
from experiments.load.job_log import JOB_LOG_COLUMNS

T0 = 1_700_000_000.0
MS = 0.01  # unix times near T0 carry about 0.2 us: differences in ms are that close
HEADER = "start_unix,response_time_ms,status,ok,error,scheduled_unix\n"


def _run_dir(d: Path, rate: float, span: float, start: float = T0) -> Path:
    """A Locust run folder's result.json and one stream's counts."""
    d.mkdir(parents=True)
    (d / "result.json").write_text(json.dumps({
        "started_at": start - 1, "ended_at": start + span + 1, "valid": True, "reasons": [],
        "open_model": {"rate": rate, "schedule_s": span}}))
    (d / "open_model_1.json").write_text(json.dumps({"schedule_start_unix": start}))
    return d


def _jobs(d: Path, start: float, rate: float, n: int, ttr_s=lambda k: 0.2,
          rejected=lambda k: False, prefix: str = "j") -> None:
    """n jobs from `start` at `rate`: done ttr_s(k) after their schedule (the worker ended
    50 ms before the poll saw it, after 5 ms in the queue), or rejected."""
    with (d / "jobs_1.csv").open("w", newline="") as f, \
            (d / "worker_times.csv").open("w", newline="") as t:
        jw, tw = csv.writer(f), csv.writer(t)
        jw.writerow(JOB_LOG_COLUMNS)
        tw.writerow(["job_id", "queued_unix", "started_unix", "ended_unix"])
        for k in range(n):
            s = start + k / rate
            if rejected(k):
                jw.writerow([s, s, 3.0, 503, "", "rejected", "", 0, 0, "queue_full"])
                continue
            job_id, seen = f"{prefix}{k}", s + ttr_s(k)
            jw.writerow([s, s, 4.0, 202, job_id, "done", seen, 3, 0, ""])
            tw.writerow([job_id, s + 0.004, s + 0.009, seen - 0.05])


def _requests(d: Path, start: float, rate: float, n: int, latency_ms=lambda k: 60.0,
              timeout=lambda k: False) -> None:
    with (d / "requests_1.csv").open("w") as f:
        f.write(HEADER)
        for k in range(n):
            s = start + k / rate
            if timeout(k):
                f.write(f"{s:.6f},10000,0,0,HTTP 0: timed out,{s:.6f}\n")
            else:
                f.write(f"{s:.6f},{latency_ms(k)},200,1,,{s:.6f}\n")


@pytest.fixture
def folder(tmp_path) -> Path:
    cfg = EXPERIMENT.configure("smoke")
    run = tmp_path / "run"
    raw = run / "raw" / "locust"
    levels = raw / "levels" / "sync"
    # 0.5x (2/s): every job done in 200 ms; 1x (4/s): every 10th rejected (10 % not done)
    _jobs(_run_dir(levels / "00_0.5x/queue", 2.0, 10), T0, 2.0, 20)
    _requests(_run_dir(levels / "00_0.5x/inline", 2.0, 10), T0, 2.0, 20)
    _jobs(_run_dir(levels / "01_1x/queue", 4.0, 10), T0, 4.0, 40, rejected=lambda k: k % 10 == 9)
    _requests(_run_dir(levels / "01_1x/inline", 4.0, 10), T0, 4.0, 40, lambda k: 80.0)
    burst = raw / "burst" / "sync"
    # 2/s for 10 s; the burst adds 6/s from 2 s to 4 s (its last arrival at 3.833 s), the last
    # two of them rejected, the others waiting longer and longer
    _jobs(_run_dir(burst / "queue", 2.0, 10), T0, 2.0, 20)
    _jobs(_run_dir(burst / "queue/burst", 6.0, 2, T0 + 2), T0 + 2, 6.0, 12,
          ttr_s=lambda k: 0.3 + 0.2 * k, rejected=lambda k: k >= 10, prefix="b")
    (burst / "queue/trigger.json").write_text(json.dumps({"fault": "burst"}))
    _requests(_run_dir(burst / "inline", 2.0, 10), T0, 2.0, 20)
    _requests(_run_dir(burst / "inline/burst", 6.0, 2, T0 + 2), T0 + 2, 6.0, 12,
              timeout=lambda k: k % 2 == 1)
    depths = [0, 0, 0, 3, 6, 8, 5, 2, 1, 0, 0, 0, 0]
    (run / "raw" / "queue_depth.csv").write_text(
        "t_unix,sync\n" + "".join(f"{T0 + t},{d}\n" for t, d in enumerate(depths)))
    (run / "manifest.json").write_text(json.dumps({
        "experiment": "experiment-8", "status": "complete", "profile": "smoke",
        "protocol": {**cfg.to_dict(), "architectures": ["sync"]},
        "topology": {"services": {"queue-sync": {"host": "localhost", "cpus": [0]}}}}))
    return run


def test_the_analysis_reads_the_levels_the_capacity_and_the_burst(folder):
    res = report.analyse(folder)
    assert res["job_bound_ms"] == 350 and res["bound_ms"] == 250
    c = res["cells"]["sync"]
    low, one = c["levels"]
    q = low["queue"]
    assert (low["factor"], q["jobs"], q["outcomes"]["done"], q["meets_bound"]) == (
        0.5, 20, 20, True)
    assert q["ttr_p50_ms"] == pytest.approx(200.0, abs=MS) and q["submit_p50_ms"] == 4.0
    w = q["worker"]
    assert w["jobs"] == 20 and w["completion_p50_ms"] == pytest.approx(150.0, abs=MS)
    assert w["queue_wait_p50_ms"] == pytest.approx(5.0, abs=MS)
    assert w["work_p50_ms"] == pytest.approx(141.0, abs=MS)
    assert w["poll_lag_p50_ms"] == pytest.approx(50.0, abs=MS)
    assert q["utilisation"] is None  # no resource samples in this folder
    assert low["inline"]["goodput_rps"] == 2.0
    assert low["inline"]["p50_ms"] == pytest.approx(60.0, abs=MS)
    assert one["queue"]["rejected"] == 4 and not one["queue"]["meets_bound"]
    # 20 jobs in time cannot pass at 95 %; 4 of 40 refused confidently fail: an upper bound
    assert (q["verdict"], one["queue"]["verdict"]) == ("undecided", "fail")
    assert c["queue_capacity"] == {"rps": None, "status": "upper_bound", "failed_at_rps": 4.0,
                                   "figure": "< 4.00"}
    b = c["burst"]["queue"]
    assert b["summary"]["jobs"] == 32 and b["summary"]["rejected"] == 2
    assert b["start_s"] == pytest.approx(2.0) and b["end_s"] == pytest.approx(2 + 11 / 6)
    assert b["first_rejection_s"] == pytest.approx(10 / 6) and b["peak_depth"] == 8
    # the depth is back at 1 at 8 s: 8 - 3.833 s after the burst's last arrival
    assert b["drain_s"] == pytest.approx(8 - (2 + 11 / 6))
    assert b["utilisation_series"] == []  # no resource samples in this folder
    i = c["burst"]["inline"]
    assert i["summary"]["errors"]["client_timeout"] == 6 and i["summary"]["lost"] == 6
    # the last timeout was scheduled at 3.67 s: from the 4 s window on, all answered in time
    assert i["served_again_s"] == pytest.approx(4 - (2 + 11 / 6), abs=1e-4)
    h = report.headline(res)["sync"]
    assert h["ttr_p50_ms_low"] == 200.0 and h["completion_p50_ms_low"] == 150.0
    assert h["queue_capacity_rps"] == "< 4.00" and h["burst_rejected"] == 2
    assert h["burst_drain_s"] == 4.2 and h["inline_burst_failed"] == 6
    assert h["inline_burst_served_again_s"] == 0.2


def test_the_report_writes_tables_plots_and_rebuilds_the_same(folder):
    res = report.analyse(folder)
    written = report.write_report(folder, res)
    text = written.markdown.read_text()
    assert "| 0.5x | 2.0 | 4.0 / 4.0 | 200.0 / 200.0, undecided | 2.0 | none |" in text
    assert ("**< 4.00 jobs/s** (an upper bound: 4.00/s confidently failed and no step below "
            "it passed)") in text
    assert "**2 rejected**" in text and "**4.2 s** after the burst's end" in text
    assert {p.name for p in written.plots} == {"plot_levels.png", "plot_burst_sync.png"}
    doc = json.loads(written.json.read_text())
    assert doc["headline"] == written.headline
    EXPERIMENT.rebuild(folder)
    assert written.markdown.read_text() == text


def test_the_queue_workers_cpu_over_time_is_read_from_the_spans_the_samples_cover():
    # one sample a second, 0.3 s into each second; the workers burn 0.5 s of CPU a second on
    # a set of one core, then 1.0 s a second from 4 s on
    samples, cpu = [], 0.0
    for k in range(9):
        samples.append({"t": T0 + k + 0.3, "services": {"queue-sync": {
            "cpu_user_s": cpu, "cpu_system_s": 0.0}}})
        cpu += 0.5 if k < 4 else 1.0
    ctx = {"sources": {"localhost": samples}, "cores": 1, "arch": "sync"}
    series = report._utilisation_series(ctx, T0, T0 + 8)
    assert [t for t, _ in series] == [0, 2, 4, 6]
    assert [u for _, u in series] == pytest.approx([0.5, 0.5, 1.0, 1.0])
    assert report._utilisation_series({**ctx, "sources": {}}, T0, T0 + 8) == []
