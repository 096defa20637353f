"""Result folders: naming, never overwritten, incomplete on interruption, atomic manifest,
index regeneration."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from experiments import metadata, results
from experiments.metadata import collect_git
from experiments.results import new_run_folder, open_run_folder
from experiments.results_index import update_index

WHEN = 1_790_000_000.0  # a fixed instant: 2026-09-21T...Z


def test_name_layout_and_initial_manifest(tmp_path):
    run = new_run_folder(tmp_path, "experiment-3", "local_2cores", "abc1234", when=WHEN)
    assert re.fullmatch(r"\d{8}T\d{6}Z_experiment-3_local-2cores_abc1234", run.name)
    for sub in ("locust", "resources", "hardware", "profiles"):
        assert (run.path / "raw" / sub).is_dir()
    m = json.loads(run.manifest_path.read_text())
    assert m["format_version"] == 1 and m["status"] == "incomplete"
    assert m["validity"] == {"valid": True, "reasons": []}
    meta = m["metadata"]
    for key in (
        "git_commit",
        "git_dirty",
        "uv_lock_sha256",
        "python_version",
        "packages",
        "hostname",
        "kernel",
    ):
        assert key in meta, key
    assert meta["packages"]["locust"]
    # flake.lock may be missing in a checkout: then a warning, never a crash
    assert "flake_lock_sha256" in meta or any("flake" in w for w in m["metadata_warnings"])
    d = run.locust_dir("load_test", "sync")
    assert d == run.path / "raw" / "locust" / "load_test" / "sync" and d.is_dir()


def test_names_sort_by_time(tmp_path):
    a = new_run_folder(tmp_path, "experiment-3", "x", "s", when=WHEN, collect=False)
    b = new_run_folder(tmp_path, "experiment-3", "x", "s", when=WHEN + 61, collect=False)
    c = new_run_folder(tmp_path, "experiment-1", "x", "s", when=WHEN + 3600 * 30, collect=False)
    assert sorted([c.name, b.name, a.name]) == [a.name, b.name, c.name]


def test_existing_folder_is_never_reused(tmp_path):
    run = new_run_folder(tmp_path, "experiment-3", "local", "abc", when=WHEN, collect=False)
    (run.path / "marker").write_text("measured")
    with pytest.raises(FileExistsError, match="never reused"):
        new_run_folder(tmp_path, "experiment-3", "local", "abc", when=WHEN, collect=False)
    assert (run.path / "marker").read_text() == "measured"


def test_a_failing_collector_leaves_a_warning(tmp_path, monkeypatch):
    def broken(repo):
        raise RuntimeError("no git here")

    monkeypatch.setattr(metadata, "COLLECTORS", (broken, metadata.collect_python))
    run = new_run_folder(tmp_path, "experiment-3", "local", "abc", when=WHEN)
    m = json.loads(run.manifest_path.read_text())
    assert m["metadata"]["python_version"]
    assert m["metadata_warnings"] == ["broken failed: RuntimeError: no git here"]


@pytest.mark.parametrize("exc", [RuntimeError("deploy failed"), KeyboardInterrupt()])
def test_interrupted_run_stays_incomplete_and_keeps_data(tmp_path, exc):
    run = new_run_folder(tmp_path, "experiment-3", "local", "abc", when=WHEN, collect=False)
    with pytest.raises(type(exc)), run.recording():
        run.add_scenario({"name": "response_time", "arch": "sync", "valid": True, "reasons": []})
        (run.locust_dir("response_time", "sync") / "requests_1.csv").write_text("x\n")
        raise exc
    m = json.loads(run.manifest_path.read_text())
    assert m["status"] == "incomplete"
    assert m["interrupted_at"] and m["interrupted_reason"]
    if isinstance(exc, KeyboardInterrupt):
        assert "KeyboardInterrupt" in m["interrupted_reason"]
    else:
        assert "deploy failed" in m["interrupted_reason"]
    assert m["scenarios"][0]["name"] == "response_time"
    assert (run.path / "raw/locust/response_time/sync/requests_1.csv").exists()


def test_complete_only_at_the_end_and_invalid_scenarios_invalidate(tmp_path):
    run = new_run_folder(tmp_path, "experiment-3", "local", "abc", when=WHEN, collect=False)
    with run.recording():
        run.update(profile="smoke", arrival="spread", topology={"hosts": ["localhost"]})
        run.add_scenario(
            {
                "name": "stress",
                "arch": "async",
                "valid": False,
                "reasons": ["load generator CPU saturated"],
            }
        )
        assert json.loads(run.manifest_path.read_text())["status"] == "incomplete"
        run.complete(headline={"sync": {"max_rps": 10.0}})
    m = json.loads(open_run_folder(run.path).manifest_path.read_text())
    assert m["status"] == "complete" and m["headline"]["sync"]["max_rps"] == 10.0
    assert m["validity"]["valid"] is False
    assert m["validity"]["reasons"] == ["stress/async: load generator CPU saturated"]


def test_manifest_update_is_atomic(tmp_path, monkeypatch):
    run = new_run_folder(tmp_path, "experiment-3", "local", "abc", when=WHEN, collect=False)
    before = run.manifest_path.read_text()
    replaced = []
    real_replace = os.replace

    def spy(src, dst):
        # the complete new document exists under another name before it replaces the old one
        assert json.loads(Path(src).read_text())["profile"] == "quick"
        assert run.manifest_path.read_text() == before
        replaced.append(dst)
        real_replace(src, dst)

    monkeypatch.setattr(results.os, "replace", spy)
    run.update(profile="quick")
    assert replaced == [run.manifest_path]
    assert json.loads(run.manifest_path.read_text())["profile"] == "quick"
    assert not list(run.path.glob(".*.tmp"))


def test_index_lists_runs_sorted_with_headlines(tmp_path):
    a = new_run_folder(tmp_path, "experiment-3", "local", "aaa", when=WHEN, collect=False)
    a.update(profile="quick")
    a.complete(
        headline={
            "sync": {"breaking_point_users": 120, "max_rps": 118.5},
            "async": {"breaking_point_users": 60, "max_rps": 59.0},
        }
    )
    b = new_run_folder(tmp_path, "experiment-3", "local", "bbb", when=WHEN + 100, collect=False)
    b.mark_interrupted("interrupted by the user (KeyboardInterrupt)")
    (tmp_path / "not-a-run").mkdir()
    index = update_index(tmp_path)
    text = index.read_text()
    assert text.index(a.name) < text.index(b.name)
    assert "not-a-run" not in text
    row_a = next(line for line in text.splitlines() if line.startswith(f"| [{a.name}]"))
    assert "complete" in row_a and "breaking_point_users 120" in row_a and "118.5" in row_a
    row_b = next(line for line in text.splitlines() if line.startswith(f"| [{b.name}]"))
    assert "**incomplete**" in row_b and "KeyboardInterrupt" in row_b
    # regenerated, not appended
    update_index(tmp_path)
    assert index.read_text() == text


def test_scenario_entry_from_a_locust_result(tmp_path):
    from experiments.exp3_load import EXPERIMENT as EXP3
    from experiments.load.run import LocustResult

    run = new_run_folder(tmp_path, "experiment-3", "local", "abc", when=WHEN, collect=False)
    sc = EXP3.configure("smoke").scenario("stress")
    out = run.locust_dir("stress", "sync")
    res = LocustResult(scenario="stress", arch="sync", out_dir=out, host_url="http://h",
                       path="/p", arrival="spread", workers=0, cpus=None, command=[],
                       planned_s=6.0, started_at=WHEN, ended_at=WHEN + 8)
    res.invalidate("load generator CPU saturated")
    entry = results.scenario_entry(run, sc, "sync", res, note="x")
    assert entry["locust"]["dir"] == "raw/locust/stress/sync"
    assert entry["params"]["users"] == 10 and entry["note"] == "x"
    assert entry["started_at"].endswith("Z") and entry["ended_at_unix"] == WHEN + 8
    run.add_scenario(entry)
    m = json.loads(run.manifest_path.read_text())
    assert m["validity"]["valid"] is False
    assert m["scenarios"][0]["reasons"] == ["load generator CPU saturated"]


def test_git_dirty_means_code_changed_not_the_results_index(tmp_path):
    """A run rewrites results/README.md; the next run must not call its code dirty for it."""
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    (tmp_path / "services").mkdir()
    (tmp_path / "results").mkdir()
    (tmp_path / "services/app.py").write_text("x = 1\n")
    (tmp_path / "results/README.md").write_text("| runs |\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-qm", "init")
    (tmp_path / "results/README.md").write_text("| runs |\n| a new run |\n")
    (tmp_path / "results/new-run").mkdir()
    assert collect_git(tmp_path)["git_dirty"] is False
    (tmp_path / "services/app.py").write_text("x = 2\n")
    info = collect_git(tmp_path)
    assert info["git_dirty"] is True and info["git_dirty_paths"] == ["services/app.py"]


MAX_TRACKED_RESULT_BYTES = 2 * 1024 * 1024  # a committed result file stays reviewable


def test_no_tracked_result_file_exceeds_2_mib():
    root = Path(__file__).resolve().parents[2]
    listed = subprocess.run(["git", "ls-files", "-z", "results"], cwd=root, capture_output=True,
                            check=True).stdout.decode().split("\0")
    files = [root / name for name in listed if name]
    assert files, "git ls-files found nothing under results/"
    big = {str(p.relative_to(root)): p.stat().st_size for p in files
           if p.exists() and p.stat().st_size > MAX_TRACKED_RESULT_BYTES}
    assert not big, f"tracked result files over 2 MiB (store them sparsely): {big}"


def test_the_index_marks_a_run_superseded_by_a_later_one(tmp_path):
    old = new_run_folder(tmp_path, "experiment-3", "local", "abc", when=WHEN, collect=False)
    old.complete({"sync": {"capacity_rps": 9.2}})
    new = new_run_folder(tmp_path, "experiment-3", "local", "def", when=WHEN + 3600,
                         collect=False)
    new.update(supersedes=[old.path.name])
    index = update_index(tmp_path).read_text()
    assert "superseded" not in index  # the new run is not complete yet
    new.complete({"sync": {"capacity_rps": 10.1}})
    row = next(line for line in update_index(tmp_path).read_text().splitlines()
               if line.startswith(f"| [{old.path.name}]"))
    assert f"(superseded by [{new.path.name}]({new.path.name}/))" in row
    assert (old.path / "manifest.json").exists()  # the old folder stays as it was


def test_run_refuses_to_supersede_a_run_that_is_not_there(tmp_path, capsys):
    from experiments.cli import main

    assert main(["run", "3", "--results-dir", str(tmp_path), "--supersedes", "nope"]) == 2
    assert "--supersedes nope: no run folder of that name" in capsys.readouterr().err
