"""One source for every headline: each committed run's manifest headline is what its
experiment's report code derives from the run's raw data today, report.json carries the same,
and the results index shows it. A change to a report's headline code fails here until
`make report-all` rebuilds the committed runs (and they are committed again).

Also `python -m experiments report --all` on copies of committed runs: it restores a stale
headline from the raw data, leaves raw/ as it was, and names a folder it cannot rebuild."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from experiments.registry import BY_NAME
from experiments.results_index import headline_text, run_folders

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "results"
# Complete runs: an interrupted one keeps its raw data and its "incomplete" mark, no report
# (test_an_interrupted_run_is_kept_marked_incomplete).
ALL_RUNS = run_folders(RESULTS)
RUNS = [r for r in ALL_RUNS
        if json.loads((r / "manifest.json").read_text())["status"] == "complete"]
# Experiments whose headline keys name each build themselves (variant/arch, "best", a tier,
# default/sync 1x, async scoring + micro / 1-slot); the others measure the default builds and
# must say so in a "builds" key.
BUILDS_IN_KEYS = {"experiment-4", "experiment-5", "experiment-6", "experiment-7", "experiment-9"}


def _manifest(run: Path) -> dict:
    return json.loads((run / "manifest.json").read_text())


def _same(a: object, b: object) -> bool:
    # as JSON text: a NaN in both is the same figure
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def test_there_are_committed_runs_to_check():
    assert len(RUNS) >= 14


def test_an_interrupted_run_is_kept_marked_incomplete():
    index = (RESULTS / "README.md").read_text().splitlines()
    for run in (r for r in ALL_RUNS if r not in RUNS):
        assert _manifest(run)["status"] == "incomplete" and (run / "raw").is_dir()
        row = next(line for line in index if line.startswith(f"| [{run.name}]"))
        assert "incomplete" in row, row


# slow: it re-derives every committed run's analysis from its raw data (about a minute)
@pytest.mark.slow
@pytest.mark.parametrize("run", RUNS, ids=[r.name[:34] for r in RUNS])
def test_manifest_headline_is_what_the_report_code_derives_from_raw(run):
    manifest = _manifest(run)
    derived = BY_NAME[manifest["experiment"]].derived_headline(run)
    assert _same(manifest["headline"], derived), (
        f"{run.name}: the manifest's headline is not its report code's; "
        "rebuild with `make report-all`\n"
        f"manifest: {json.dumps(manifest['headline'])[:600]}\n"
        f"derived:  {json.dumps(derived)[:600]}")


@pytest.mark.parametrize("run", RUNS, ids=[r.name[:34] for r in RUNS])
def test_report_json_and_the_index_say_what_the_manifest_says(run):
    manifest = _manifest(run)
    experiment = BY_NAME[manifest["experiment"]]
    report = json.loads((run / "report.json").read_text())
    # report.json is the analysis written out (experiment 1's is the analysis itself)
    from_report = report["headline"] if "headline" in report else experiment.headline(report)
    assert _same(from_report, manifest["headline"])
    row = next(line for line in (RESULTS / "README.md").read_text().splitlines()
               if line.startswith(f"| [{run.name}]"))
    assert headline_text(manifest["headline"]) in row
    assert manifest["status"] in row


@pytest.mark.parametrize("run", RUNS, ids=[r.name[:34] for r in RUNS])
def test_headline_names_the_builds_it_compares(run):
    manifest = _manifest(run)
    headline = manifest["headline"]
    if manifest["experiment"] in BUILDS_IN_KEYS:
        assert "builds" not in headline
        return
    assert headline["builds"] == "default"
    assert headline_text(headline).startswith("builds: default; ")


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_report_all_restores_stale_headlines_and_leaves_raw_data_alone(tmp_path, capsys):
    from experiments.cli import main

    # the two smallest committed runs (experiment 2's timeit, experiment 1's profiles)
    runs = [next(r for r in RUNS if "_experiment-2_" in r.name),
            next(r for r in RUNS if "_experiment-1_" in r.name)]
    results = tmp_path / "results"
    for run in runs:
        shutil.copytree(run, results / run.name)
    (results / "README.md").write_text("# Results\n")
    stale = results / runs[0].name / "manifest.json"
    manifest = json.loads(stale.read_text())
    manifest["headline"] = {"improvement_pct": 99.9}
    stale.write_text(json.dumps(manifest))
    # a folder of an experiment the lab does not know: named, the others still rebuilt
    (results / "20990101T000000Z_experiment-99_x_y").mkdir()
    (results / "20990101T000000Z_experiment-99_x_y" / "manifest.json").write_text(
        json.dumps({"experiment": "experiment-99", "status": "complete"}))
    raw_before = {r.name: _digest(results / r.name / "raw") for r in runs}

    assert main(["report", "--all", str(results)]) == 1
    out, err = capsys.readouterr()
    assert "experiment-99" in err and "1 folder(s) not rebuilt" in err
    for run in runs:
        rebuilt = json.loads((results / run.name / "manifest.json").read_text())
        assert _same(rebuilt["headline"], _manifest(run)["headline"])
        assert rebuilt["report_rebuilt"]["at"]
        assert _digest(results / run.name / "raw") == raw_before[run.name]
        assert f"{run.name}: {headline_text(rebuilt['headline'])}" in out
    index = (results / "README.md").read_text()
    assert "99.9" not in index and all(r.name in index for r in runs)


def test_report_needs_a_folder_or_all(capsys):
    from experiments.cli import main

    assert main(["report"]) == 2
    assert "needs a run folder (or --all)" in capsys.readouterr().err
