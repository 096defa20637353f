"""Experiment 2 (timeit) with the smoke profile, end to end on a private deployed lab."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

pytestmark = pytest.mark.slow



@pytest.fixture(scope="module")
def folder(experiments_lab):
    return experiments_lab.run_smoke("exp2_timeit", timeout=600)


def test_manifest_complete_and_every_timing_in_the_csv(folder):
    m = json.loads((folder / "manifest.json").read_text())
    assert m["status"] == "complete" and m["experiment"] == "experiment-2"
    assert m["validity"]["valid"], m["validity"]
    with (folder / m["timeit"]["csv"]).open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * 3 * 2  # N in 1..3, 3 repeats, 2 architectures
    assert m["timeit"]["calls"] == {"sync": 18, "async": 18}
    assert m["timeit"]["failed_calls"] == 0
    # Interleaved: each (repeat, N) pair has both architectures, each first sometimes.
    firsts = {r["arch"] for r in rows if r["order"] == "0"}
    assert firsts == {"sync", "async"}
    assert (folder / "raw/resources/localhost.csv").exists()
    assert m["headline"]["improvement_pct"] is not None


def test_report_numbers_come_from_the_csv(folder):
    report = json.loads((folder / "report.json").read_text())
    text = (folder / "report.md").read_text()
    with (folder / "raw/timeit/timings.csv").open() as f:
        rows = list(csv.DictReader(f))
    for n in (1, 2, 3):
        point = report["points"][str(n)]
        for arch in ("sync", "async"):
            ms = [float(r["seconds"]) * 1000 for r in rows
                  if r["arch"] == arch and int(r["n"]) == n]
            assert point[arch]["mean"] == pytest.approx(np.mean(ms))
            assert point[arch]["low"] <= point[arch]["mean"] <= point[arch]["high"]
            assert f"{point[arch]['mean']:.1f}" in text
        imp = (point["sync"]["mean"] - point["async"]["mean"]) / point["sync"]["mean"] * 100
        assert point["improvement_pct"] == pytest.approx(imp)
    # Two sequential 40-50 ms model calls against two concurrent ones: async is faster.
    assert report["points"]["3"]["sync"]["mean"] > report["points"]["3"]["async"]["mean"]
    assert "the original reported +29 %" in text
    assert (folder / "plot_timeit.png").stat().st_size > 0
