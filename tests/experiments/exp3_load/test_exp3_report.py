"""The report is built from a result folder alone, and its numbers are the CSVs' numbers."""

from __future__ import annotations

import csv
import json
import math
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from experiments.exp3_load import EXPERIMENT
from experiments.exp3_load.report import analyse, headline
from experiments.load.stages import write_scenario_file
from experiments.protocol import Scenario
from experiments.results import new_run_folder
from experiments.results_index import headline_text, update_index

ROOT = Path(__file__).resolve().parents[3]
T0 = 1_790_000_000.0
PROTOCOL = EXPERIMENT.configure("smoke")


def _write_run(
    d: Path,
    scenario,
    arch: str,
    start: float,
    users_at,
    duration: int,
    base_ms: float,
    seed: int,
    fail_every: int = 0,
    valid: bool = True,
) -> list:
    """Paced users with spread offsets; returns the rows written."""
    rng = random.Random(seed)
    rows, offsets = [], {}
    for sec in range(duration):
        for u in range(users_at(sec)):
            off = offsets.setdefault(u, rng.random())
            s = start + sec + off
            rt = base_ms + rng.random() * base_ms * 0.5 + (users_at(sec) > 6) * 40 * (sec - 6)
            ok = not (fail_every and len(rows) % fail_every == fail_every - 1)
            rows.append((s, round(rt, 3), 200 if ok else 500, ok))
    with (d / "requests_100.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["start_unix", "response_time_ms", "status", "ok", "error"])
        for s, rt, st, ok in rows:
            w.writerow([f"{s:.6f}", f"{rt:.3f}", st, int(ok), "" if ok else "HTTP 500"])
    with (d / "locust_stats_history.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Timestamp", "User Count", "Type", "Name", "Requests/s", "Failures/s"])
        for sec in range(duration + 1):
            w.writerow(
                [
                    int(start) + sec,
                    users_at(sec) if sec < duration else 0,
                    "",
                    "Aggregated",
                    "0.0",
                    "0.0",
                ]
            )
    for name in ("locust_stats.csv", "locust_failures.csv", "locust_exceptions.csv"):
        (d / name).write_text("Type,Name\n")
    write_scenario_file(
        d / "scenario.json",
        scenario,
        path_url=PROTOCOL.paths[arch],
        arrival="spread",
        payload=PROTOCOL.payload,
    )
    (d / "result.json").write_text(
        json.dumps(
            {
                "scenario": scenario.name,
                "arch": arch,
                "started_at": start - 1,
                "ended_at": start + duration + 1,
                "valid": valid,
                "reasons": [] if valid else ["load generator CPU saturated: test"],
            }
        )
    )
    return rows


def _expected(rows, warmup_s):
    """The report's definitions, recomputed independently from the rows."""
    starts = [r[0] for r in rows]
    ends = [r[0] + r[1] / 1000 for r in rows]
    t0 = math.floor(min(starts))
    n_bins = math.floor(max(ends) - t0)
    skip = math.ceil(warmup_s)
    w0, w1 = t0 + skip, t0 + n_bins
    win = [r for r, e in zip(rows, ends, strict=True) if w0 <= e < w1]
    ok_rt = [r[1] for r in win if r[3]]
    return {
        "requests": len(win),
        "failures": sum(1 for r in win if not r[3]),
        "rps": len(ok_rt) / (n_bins - skip),
        "p50_ms": float(np.percentile(ok_rt, 50)),
        "p95_ms": float(np.percentile(ok_rt, 95)),
        "p99_ms": float(np.percentile(ok_rt, 99)),
        "total_requests": len(rows),
    }


@pytest.fixture
def fixture_run(tmp_path):
    run = new_run_folder(tmp_path, "experiment-3", "fixture", "abc1234", when=T0, collect=False)
    run.update(
        profile="smoke",
        protocol=PROTOCOL.to_dict(),
        arrival="spread",
        topology={"label": "fixture"},
    )
    expected, t = {}, T0 + 10
    ramp = lambda sec: 1 + 2 * (sec // 2)  # noqa: E731
    plan = [
        ("response_time", lambda sec: 1, 10),
        ("load_test", ramp, 12),
        ("max_performance", lambda sec: 5, 10),
        ("stress", lambda sec: 8, 10),
    ]
    for arch, base, seed in (("sync", 20.0, 1), ("async", 12.0, 2)):
        for name, users, dur in plan:
            sc = PROTOCOL.scenario(name)
            if sc.needs_breaking_point:
                sc = sc.with_users(5)
            if sc.open_model:  # rows written here are closed-loop ones: the same 5 users
                sc = Scenario(name=name, kind="constant", users=5, spawn_rate=5.0,
                              duration_s=sc.duration_s)
            valid = not (arch == "async" and name == "stress")
            rows = _write_run(
                run.locust_dir(name, arch),
                sc,
                arch,
                t,
                users,
                dur,
                base,
                seed,
                fail_every=10 if name == "stress" else 0,
                valid=valid,
            )
            expected[(name, arch)] = _expected(rows, PROTOCOL.analysis.warmup_s)
            expected[(name, arch, "window")] = (t - 1, t + dur + 1)
            t += dur + 5
    # resource samples: one service per architecture, cumulative CPU seconds
    with (run.resources_dir() / "localhost.jsonl").open("w") as f:
        cpu = {"scoring-sync": 0.0, "scoring-async": 0.0}
        for k in range(int(t - T0) + 5):
            ts = T0 + k
            for svc in cpu:
                cpu[svc] += 0.25 if svc == "scoring-sync" else 0.125
            f.write(
                json.dumps(
                    {
                        "t": ts,
                        "cpu_percent_per_core": [30.0, 10.0],
                        "services": {
                            svc: {
                                "cpu_user_s": c * 0.8,
                                "cpu_system_s": c * 0.2,
                                "rss_bytes": 100 * 2**20,
                            }
                            for svc, c in cpu.items()
                        },
                    }
                )
                + "\n"
            )
    hw = run.hardware_dir("localhost")
    (hw / "system.json").write_text(json.dumps({"lshw": "missing: lshw not installed"}))
    (hw / "system.md").write_text("# localhost\n")
    run.complete()
    return run, expected


def test_report_numbers_match_the_csvs(fixture_run):
    run, expected = fixture_run
    out = EXPERIMENT.rebuild(run.path)
    numbers = json.loads(out.json.read_text())["numbers"]
    text = out.markdown.read_text()
    for name in ("response_time", "load_test", "max_performance", "stress"):
        for arch in ("sync", "async"):
            got, exp = numbers[name][arch], expected[(name, arch)]
            for key, value in exp.items():
                assert got[key] == pytest.approx(value), (name, arch, key)
        # the table shows the same numbers, formatted
        section = text.split(f"## Scenario: {name}")[1].split("## ")[0]
        for key, fmt, label in (
            ("rps", "{:.2f}", "requests/s"),
            ("p50_ms", "{:.1f}", "p50 ms"),
            ("p95_ms", "{:.1f}", "p95 ms"),
            ("p99_ms", "{:.1f}", "p99 ms"),
            ("failures", "{}", "failures (window)"),
        ):
            row = next(line for line in section.splitlines() if line.startswith(f"| {label} |"))
            cells = [c.strip() for c in row.split("|")[2:4]]
            assert cells == [fmt.format(expected[(name, a)][key]) for a in ("sync", "async")]
    # plots, resource usage, hardware, traps, rebuildable
    for p in out.plots:
        assert p.exists() and p.stat().st_size > 1000
    assert {p.name for p in out.plots} >= {"plot_load_test.png", "plot_cpu.png"}
    assert "## Resource usage" in text and "scoring-sync" in text
    assert "**lshw: missing: lshw not installed**" in text
    assert "Arrival pattern: **spread**" in text and "CPU guard" in text
    assert "The breaking point is the first load" in text


def test_cpu_per_request_is_from_the_samples(fixture_run):
    run, expected = fixture_run
    res = json.loads(EXPERIMENT.rebuild(run.path).json.read_text())["resources"]
    start, end = expected[("stress", "sync", "window")]
    u = res["stress"]["sync"]["scoring-sync"]
    # samples every second at 0.25 CPU s/s; the window holds whole seconds from start to end
    assert u["cpu_total_s"] == pytest.approx(0.25 * (math.floor(end) - math.ceil(start)))
    assert u["cpu_s_per_request"] == pytest.approx(
        u["cpu_total_s"] / expected[("stress", "sync")]["total_requests"]
    )


def test_validity_warnings_are_at_the_top_in_bold(fixture_run):
    run, _ = fixture_run
    text = EXPERIMENT.rebuild(run.path).markdown.read_text()
    top = text.split("## ")[0]
    assert "**INVALID: stress/async: load generator CPU saturated: test**" in top
    head = headline(analyse(run.path))
    assert head["async"]["valid"] is False and head["sync"]["valid"] is True
    assert head["sync"]["p50_ms_1_user"] > head["async"]["p50_ms_1_user"]
    assert "cpu_ms_per_request" in head["sync"]


def test_incomplete_run_is_flagged(fixture_run):
    run, _ = fixture_run
    run.mark_interrupted("KeyboardInterrupt")
    text = EXPERIMENT.rebuild(run.path).markdown.read_text()
    assert text.split("## ")[0].count("**INCOMPLETE RUN (interrupted at") == 1


def test_report_rebuilds_from_the_command_line(fixture_run):
    run, _ = fixture_run
    assert not (run.path / "report.md").exists()
    subprocess.run(
        [sys.executable, "-m", "experiments", "report", str(run.path)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert (run.path / "report.md").exists()


def test_a_rebuilt_report_gives_a_complete_run_its_headline_and_the_index_follows(fixture_run):
    run, _ = fixture_run
    old = {"async": {"p50_ms_1_user": -1.0}}  # what an older report's code said
    run.complete(headline=old)
    assert headline_text(old) in update_index(run.path.parent).read_text()
    subprocess.run([sys.executable, "-m", "experiments", "report", str(run.path)], cwd=ROOT,
                   check=True, capture_output=True, timeout=120)
    manifest = json.loads((run.path / "manifest.json").read_text())
    assert manifest["headline"] == EXPERIMENT.headline(EXPERIMENT.analyse(run.path))
    assert manifest["headline"]["async"]["p50_ms_1_user"] > 0
    assert manifest["report_rebuilt"]["code"]
    index = (run.path.parent / "README.md").read_text()
    assert headline_text(old) not in index and headline_text(manifest["headline"]) in index
