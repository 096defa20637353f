"""Experiment 6 with the smoke profile (the baseline and 5 ms of CPU per prediction, default
builds), end to end on a private deployed lab: the factor reaches the real model APIs (their
CPU per scoring request grows by two predictions' burn), both architectures are searched at
each point, and the report arranges them per factor, rebuildable from the folder alone."""

from __future__ import annotations

import json

import pytest

from experiments.exp6_crossover import EXPERIMENT

pytestmark = pytest.mark.slow

BURN = "model_cpu_ms-5-default"


@pytest.fixture(scope="module")
def folder(experiments_lab):
    return experiments_lab.run_smoke("exp6_crossover", timeout=1200)


def test_each_point_deployed_with_its_factor_and_searched(folder):
    m = json.loads((folder / "manifest.json").read_text())
    assert m["status"] == "complete" and m["experiment"] == "experiment-6"
    assert [v["name"] for v in m["variants"]] == ["baseline-default", BURN]
    burn = m["variants"][1]
    assert burn["deploy_vars"] == {"model_api_env": {"SCORING_LAB_CPU_BURN_S": "0.005"}}
    assert all(c["ok"] for c in burn["deploy"]["verify"])
    assert m["ladder"]["crossover"]["points"][BURN] == {"factor": "model_cpu_ms", "value": 5.0,
                                                        "tier": "default"}
    assert {(v, a) for v, by_arch in m["capacity"].items() for a in by_arch} == {
        (v, a) for v in ("baseline-default", BURN) for a in ("sync", "async")}


def test_the_burn_reaches_the_model_apis(folder):
    report = json.loads((folder / "report.json").read_text())
    rows = {(r["variant"], r["arch"]): r for r in report["rows"]}
    for arch in ("sync", "async"):
        base = rows[("baseline-default", arch)]["cpu_ms_per_request"][f"model-{arch}"]
        burn = rows[(BURN, arch)]["cpu_ms_per_request"][f"model-{arch}"]
        # two predictions per scoring request, 5 ms of CPU each
        assert burn - base >= 0.8 * 2 * 5, (arch, base, burn)


def test_the_report_arranges_the_points_per_factor(folder):
    report = json.loads((folder / "report.json").read_text())
    series = report["factors"]["model_cpu_ms"]["default"]
    assert [p["value"] for p in series["series"]] == [0.0, 5.0]
    for p in series["series"]:
        assert p["sync_predicted_rps"] and p["async_predicted_rps"]
    assert series["crossing"]["kind"] in {"crosses", "below", "above", "unknown"}
    text = (folder / "report.md").read_text()
    assert "## Where async's advantage falls" in text and "## Rule of thumb" in text
    assert (folder / "plot_crossover.png").stat().st_size > 0
    m = json.loads((folder / "manifest.json").read_text())
    assert "model_cpu_ms/default" in m["headline"]["crossing"]
    before = text
    EXPERIMENT.rebuild(folder)
    assert (folder / "report.md").read_text() == before
