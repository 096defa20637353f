"""Experiment 1 with the smoke profile, end to end on this machine: it deploys a private lab
(a copy of the single-host inventory with moved ports and run dir, tests/conftest.py) with
profiling on, profiles single requests and a window under load on both architectures, collects
the profiles through Ansible, reports, and redeploys the lab without profiling."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

import pytest

from experiments.exp1_profiling.breakdown import (
    combine,
    load_session,
    pyinstrument_breakdown,
    session_file,
)
from experiments.exp1_profiling.report import index_profiles, window_cpu
from services import profiling
from tests.conftest import ROOT, private_lab_inventory, require

pytestmark = pytest.mark.slow
ARCHS = ("sync", "async")


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    require("redis-server")
    require("taskset")
    lab = private_lab_inventory(tmp_path_factory.mktemp("exp1"))
    try:
        done = subprocess.run(
            [sys.executable, "-m", "experiments", "run", "1", "--profile", "smoke",
             "--inventory", str(lab.inventory), "--results-dir", str(lab.results)],
            cwd=ROOT, env=lab.env, capture_output=True, text=True, timeout=900)
        topology = json.loads((lab.root / "state/topology.json").read_text())
        yield done, lab, topology
    finally:
        lab.playbook("teardown.yml", timeout=300)


def _folder(lab):
    runs = [p for p in lab.results.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def test_the_run_succeeds_and_is_tagged_as_profiled(experiment):
    done, lab, _ = experiment
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    manifest = json.loads((_folder(lab) / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["experiment"] == "experiment-1"
    assert manifest["profiled"] is True and manifest["timing_results"] is False
    assert manifest["profile"] == "smoke"
    assert manifest["scenarios"] == []  # no timing result is recorded
    assert all(p["profiled"] for p in manifest["profiles"] + manifest["windows"])
    assert (_folder(lab) / "raw/hardware/localhost/system.json").exists()
    assert list((_folder(lab) / "raw/resources").glob("*.csv"))


def test_profiles_of_both_sides_and_both_architectures_are_collected(experiment):
    _, lab, _ = experiment
    folder = _folder(lab)
    manifest = json.loads((folder / "manifest.json").read_text())
    found = index_profiles(folder)
    seen = set()
    for entry in manifest["profiles"]:
        directory = found[entry["name"]]  # every profile the services named was collected
        want = "client" if entry["side"] == "client" else "localhost"
        assert directory == folder / "raw/profiles" / want
        meta = json.loads((directory / f"{entry['name']}.meta.json").read_text())
        # a result folder keeps pyinstrument's sessions gzipped (experiments/lab/collect.py)
        assert not list(directory.glob("*.pyisession"))
        suffixes = ((".html", ".txt", ".pyisession.gz") if meta["profiler"] == "pyinstrument"
                    else (".txt", ".callgrind", ".prof"))
        for suffix in suffixes:
            assert (directory / f"{entry['name']}{suffix}").stat().st_size > 0
        if meta["profiler"] == "yappi" and entry["side"] == "server":
            assert meta["clock"] == ("wall" if entry["arch"] == "async" else "cpu")
        seen.add((entry["arch"], entry["role"], meta["profiler"]))
    for arch in ARCHS:
        assert {(arch, r, "pyinstrument") for r in ("scoring", "model", "client")} <= seen
        assert {(arch, r, "yappi") for r in ("scoring", "model")} <= seen
    for window in manifest["windows"]:
        for role in ("scoring", "model"):
            wid = window["services"][role]["window_id"]
            names = [n for n in found if f"_win-{wid}_" in n]
            assert names, (window, role)
            meta = json.loads((found[names[0]] / f"{names[0]}.meta.json").read_text())
            assert meta["kind"] == "window" and meta["requests"] >= 1
    assert {w["arch"] for w in manifest["windows"]} == set(ARCHS)


def test_report_breakdown_comes_from_the_profiles(experiment):
    _, lab, _ = experiment
    folder = _folder(lab)
    manifest = json.loads((folder / "manifest.json").read_text())
    report = json.loads((folder / "report.json").read_text())
    text = (folder / "report.md").read_text()
    found = index_profiles(folder)
    for arch in ARCHS:
        for role in ("scoring", "model", "client"):
            names = [p["name"] for p in manifest["profiles"] if p["arch"] == arch
                     and p["role"] == role and p["profiler"] == "pyinstrument"]
            expected = combine([pyinstrument_breakdown(session_file(found[n], n))
                                for n in names])
            got = report["architectures"][arch]["request"][role]
            for category, seconds in expected["seconds"].items():
                assert got["seconds"][category] == pytest.approx(seconds)
            assert f"**{expected['sampled_s'] * 1000:.1f} ms**" in text
        scoring = report["architectures"][arch]["request"]["scoring"]
        # One request of either architecture is mostly waiting on its two model API calls.
        assert scoring["share"]["http_calls"] > 0.5, scoring
        assert manifest["headline"][arch]["model_calls_pct"] == pytest.approx(
            100 * scoring["share"]["http_calls"])
        assert f"**{arch}**: one scoring request took" in text
        # CPU per request under load, from the pyinstrument window's measured CPU.
        cpu = window_cpu(report["architectures"][arch], "scoring")
        assert cpu["method"] == "cpu_time" and cpu["total_ms"] > 0, cpu
        assert f"**{arch}** under load (window profile)" in text
    assert "p50" not in text  # no timing table in a profiled run's report


def test_a_build_is_deployed_and_profiled_under_its_own_load(experiment):
    # smoke: aiohttp instead of httpx, 8 users, after the default build's windows
    _, lab, _ = experiment
    folder = _folder(lab)
    manifest = json.loads((folder / "manifest.json").read_text())
    built = [w for w in manifest["windows"] if w["build"] == "aiohttp"]
    assert [(w["arch"], w["users"], w["profiler"]) for w in built] == [
        ("async", 8, "pyinstrument")]
    assert "SCORING_LAB_HTTP_CLIENT" in (folder / "raw/deploy-build-aiohttp.log").read_text()
    found = index_profiles(folder)
    wid = built[0]["services"]["scoring"]["window_id"]
    names = [n for n in found if f"_win-{wid}_" in n]
    # the handler that served the window called the model API through aiohttp, not httpx
    sessions = "".join(json.dumps(load_session(session_file(found[n], n))) for n in names)
    assert "/aiohttp/" in sessions and "/httpx/" not in sessions
    report = json.loads((folder / "report.json").read_text())
    windows = {(w["build"], w["users"]): w
               for w in report["architectures"]["async"]["windows"]}
    cpu = windows[("aiohttp", 8)]["services"]["scoring"]["cpu_per_request"]
    assert cpu["total_ms"] > 0 and cpu["requests"] >= 1
    text = (folder / "report.md").read_text()
    assert "## Where the scoring handler's CPU goes, by build and load" in text
    assert "| aiohttp | async | 8 |" in text and "| default | async |" in text
    # the summary keeps the default build's window at the window's own load
    assert report["architectures"]["async"]["windows"][0]["build"] == "default"


def test_the_lab_is_redeployed_without_profiling(experiment):
    done, lab, topology = experiment
    assert done.returncode == 0
    assert (_folder(lab) / "raw/deploy-unprofiled.log").exists()
    for arch in ARCHS:
        url = topology["services"][f"scoring-{arch}"]["url"] + f"/api/v1/ml/{arch}/predict"
        request = urllib.request.Request(url, data=b"[5.1,3.5,1.4,0.2]", headers={
            "Content-Type": "application/json", profiling.PROFILE_HEADER: "pyinstrument"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
            assert profiling.STATUS_HEADER not in response.headers
