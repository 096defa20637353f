"""`compare` on fixture result folders: a significant difference, one that is not, refusals
(different experiment, different protocol) and the environment warnings; and on the committed
runs, which have no repeats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.compare import CompareError, compare_runs, figures, render

ROOT = Path(__file__).resolve().parents[2]
PROTOCOL = {"experiment": "experiment-3", "profile": "quick", "repeats": 3,
            "scenarios": [{"name": "capacity", "kind": "open", "duration_s": 20.0}]}
META = {"kernel": "6.1", "python_version": "3.12.1", "packages": {"uvicorn": "0.54.0"}}


def _summary(values):
    ordered = sorted(values)
    return {"median": ordered[len(ordered) // 2], "values": values}


def _run(tmp_path: Path, name: str, sync, async_, *, protocol=None, metadata=None,
         experiment="experiment-3") -> Path:
    folder = tmp_path / name
    (folder / "raw" / "hardware" / "localhost").mkdir(parents=True)
    manifest = {"experiment": experiment, "status": "complete",
                "protocol": protocol or PROTOCOL, "metadata": metadata or META,
                "topology": {"services": {"scoring-sync": {"host": "localhost", "cpus": [0]}}}}
    report = {"headline": {"sync": {"capacity_rps": _summary(sync)},
                           "async": {"capacity_rps": _summary(async_)}, "valid": True}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / "report.json").write_text(json.dumps(report))
    (folder / "raw" / "hardware" / "localhost" / "system.json").write_text(
        json.dumps({"cpu": {"model": "AMD EPYC", "logical_threads": 2}}))
    return folder


def test_figures_flatten_headlines_and_repeat_summaries():
    headline = {"sync": {"max_rps": 22.0, "cpu": {"scoring": 3.4}, "valid": True},
                "async": {"capacity_rps": {"median": 130.0, "values": [129.0, 130.0, 133.0]}}}
    assert figures(headline) == {"sync.max_rps": [22.0], "sync.cpu.scoring": [3.4],
                                 "async.capacity_rps": [129.0, 130.0, 133.0]}


def test_significant_and_not_significant_rows(tmp_path):
    a = _run(tmp_path, "a", [20.8, 21.5, 20.2], [130.8, 128.1, 133.0])
    b = _run(tmp_path, "b", [12.0, 22.0, 17.5], [190.4, 195.0, 188.2])
    result = compare_runs(a, b)
    rows = {r["figure"]: r for r in result.rows}
    assert rows["async.capacity_rps"]["significant"]
    assert rows["async.capacity_rps"]["ratio"] == pytest.approx(190.4 / 130.8)
    assert not rows["sync.capacity_rps"]["significant"]
    assert rows["sync.capacity_rps"]["verdict"].startswith("not significant")
    assert result.warnings == []
    text = render(result)
    assert "not significant" in text and "async.capacity_rps" in text


def test_refuses_other_experiments_and_other_protocols(tmp_path):
    a = _run(tmp_path, "a", [20.0, 21.0], [130.0, 131.0])
    other = _run(tmp_path, "b", [20.0, 21.0], [130.0, 131.0], experiment="experiment-4")
    with pytest.raises(CompareError, match="different experiments"):
        compare_runs(a, other)
    longer = {**PROTOCOL, "scenarios": [{"name": "capacity", "kind": "open", "duration_s": 60.0}]}
    c = _run(tmp_path, "c", [20.0, 21.0], [130.0, 131.0], protocol=longer)
    with pytest.raises(CompareError, match="scenario 'capacity' differs in duration_s"):
        compare_runs(a, c)
    # asked for explicitly, it compares them, the difference first among the warnings
    crossed = compare_runs(a, c, across_protocols=True)
    assert crossed.warnings[0].startswith("PROTOCOLS DIFFER")
    assert "duration_s" in crossed.warnings[0]
    assert [r["figure"] for r in crossed.rows] == ["async.capacity_rps", "sync.capacity_rps"]
    with pytest.raises(CompareError, match="no manifest.json"):
        compare_runs(a, tmp_path)


def test_warns_on_environment_and_protocol_additions(tmp_path):
    a = _run(tmp_path, "a", [20.0, 21.0], [130.0, 131.0])
    meta = {**META, "kernel": "6.12", "packages": {"uvicorn": "0.55.0"}}
    extra = {**PROTOCOL, "repeats": 5,
             "scenarios": [*PROTOCOL["scenarios"], {"name": "stress", "kind": "constant"}]}
    b = _run(tmp_path, "b", [20.0, 21.0], [130.0, 131.0], metadata=meta, protocol=extra)
    warnings = "\n".join(compare_runs(a, b).warnings)
    assert "kernel: A '6.1' vs B '6.12'" in warnings
    assert "uvicorn 0.54.0 -> 0.55.0" in warnings
    assert "scenario 'stress' only in B" in warnings
    assert "repeats" not in warnings  # how often it was measured does not change what


def test_committed_runs_compare_with_a_warning_and_no_verdict():
    (run,) = sorted((ROOT / "results").glob("*_experiment-3_*"))[:1]
    result = compare_runs(run, run)
    assert any("without repeats" in w for w in result.warnings)
    assert result.rows and all(not r["significant"] for r in result.rows)
    assert all(r["verdict"].startswith("not testable") for r in result.rows)


def test_cli_prints_the_table_and_refuses_with_one_line(tmp_path, capsys):
    from experiments.cli import main

    a = _run(tmp_path, "a", [20.8, 21.5, 20.2], [130.8, 128.1, 133.0])
    b = _run(tmp_path, "b", [20.1, 21.0, 20.9], [190.4, 195.0, 188.2])
    assert main(["compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "async.capacity_rps" in out and "significant" in out
    longer = {**PROTOCOL, "scenarios": [{"name": "capacity", "kind": "open", "duration_s": 60.0}]}
    c = _run(tmp_path, "c", [20.0, 21.0], [130.0, 131.0], protocol=longer)
    assert main(["compare", str(a), str(c)]) == 2
    assert "--across-protocols" in capsys.readouterr().err
    assert main(["compare", "--across-protocols", str(a), str(c)]) == 0
    assert "warning: PROTOCOLS DIFFER" in capsys.readouterr().out
    assert main(["compare", str(a), str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nowhere" in err and "Traceback" not in err


def test_protocol_conflicts_ignore_provenance_and_absent_none():
    from experiments.compare import _protocol_conflicts

    a = {"source": "/old/place.toml", "scenarios": [{"name": "s", "users": 1, "rate": None}]}
    b = {"source": "/new/place.toml", "scenarios": [{"name": "s", "users": 1}]}
    assert _protocol_conflicts(a, b) == ([], [])
    b["scenarios"][0]["users"] = 2
    assert _protocol_conflicts(a, b)[0] == ["scenario 's' differs in users"]


def test_same_build_agrees_or_disagrees_by_the_stated_rule(tmp_path):
    a = _run(tmp_path, "a", [20.0, 21.0, 22.0], [130.0, 140.0, 150.0])
    # sync: medians 21 -> 21.8, 3.8 % apart: within 5 %. async: medians 140 -> 160, 14 %
    # apart, but B's lowest repeat (148) lies inside A's range: the runs' spreads overlap
    b = _run(tmp_path, "b", [21.5, 21.8, 22.0], [148.0, 160.0, 175.0])
    # async far above A's range: 1.45x, nothing in common
    c = _run(tmp_path, "c", [21.5, 21.8, 22.0], [196.0, 203.0, 210.0])
    rows = {r["figure"]: r for r in compare_runs(a, b).rows}
    assert rows["sync.capacity_rps"]["agree"] is True
    assert rows["sync.capacity_rps"]["agreement"] == "agree (within 5%)"
    assert rows["async.capacity_rps"]["agree"] is True
    assert rows["async.capacity_rps"]["agreement"].startswith("agree (ranges overlap")
    assert rows["async.capacity_rps"]["range_a"] == [130.0, 150.0]
    result = compare_runs(a, c)
    far = next(r for r in result.rows if r["figure"] == "async.capacity_rps")
    assert far["agree"] is False and far["ratio"] == pytest.approx(203 / 140)
    assert far["agreement"] == "disagree (B/A 1.450, beyond 5%; ranges apart)"
    # a tighter tolerance turns the 3.8 % sync difference into one the ranges must settle:
    # A's 20-22 and B's 21.5-22 overlap, so it still agrees
    tight = {r["figure"]: r for r in compare_runs(a, b, tolerance=0.01).rows}
    assert tight["sync.capacity_rps"]["agreement"].startswith("agree (ranges overlap")
    text = render(result)
    assert "agree when B/A is within 1 +- 0.05 (5%)" in text and "disagree (B/A 1.450" in text
    assert result.to_dict()["agreement_rule"].startswith("agree when B/A is within 1 +- 0.05")


def test_without_repeats_only_the_tolerance_decides(tmp_path):
    a = _run(tmp_path, "a", [20.0], [140.0])
    b = _run(tmp_path, "b", [20.9], [150.0])  # sync +4.5 %, async +7.1 %
    rows = {r["figure"]: r for r in compare_runs(a, b).rows}
    assert rows["sync.capacity_rps"]["agree"] is True
    assert rows["async.capacity_rps"]["agree"] is False
    assert rows["async.capacity_rps"]["agreement"] == "disagree (B/A 1.071, beyond 5%)"


def test_cli_takes_a_tolerance_and_refuses_a_bad_one(tmp_path, capsys):
    from experiments.cli import main

    a = _run(tmp_path, "a", [20.0], [140.0])
    b = _run(tmp_path, "b", [20.9], [150.0])
    assert main(["compare", "--tolerance", "0.1", str(a), str(b)]) == 0
    assert "within 1 +- 0.1 (10%)" in capsys.readouterr().out
    assert main(["compare", "--tolerance", "-0.2", str(a), str(b)]) == 2
    assert "--tolerance -0.2" in capsys.readouterr().err


def test_warns_when_the_headlines_are_of_different_builds(tmp_path):
    a = _run(tmp_path, "a", [20.0], [140.0])
    b = _run(tmp_path, "b", [20.0], [140.0])
    for folder, builds in ((a, "default"), (b, "best")):
        report = json.loads((folder / "report.json").read_text())
        report["headline"]["builds"] = builds
        (folder / "report.json").write_text(json.dumps(report))
    warnings = compare_runs(a, b).warnings
    assert "the headlines are of different builds: A 'default', B 'best'" in warnings[0]
    assert not any("different builds" in w for w in compare_runs(a, a).warnings)


def test_a_lower_bound_is_named_and_never_weighed(tmp_path):
    a = _run(tmp_path, "a", [20.0], [140.0])
    b = _run(tmp_path, "b", [20.0], [140.0])
    for folder, sync, async_ in ((a, ">= 5.5", 62.4), (b, 6.2, ">= 70")):
        (folder / "report.json").write_text(json.dumps({"headline": {
            "sync": {"capacity_rps": sync}, "async": {"capacity_rps": async_}}}))
    result = compare_runs(a, b)
    rows = {r["figure"]: r for r in result.rows}
    assert rows["sync.capacity_rps"]["agree"] is None
    assert rows["sync.capacity_rps"]["agreement"] == (
        "not compared: A only a lower bound (respected by the other's 6.2)")
    assert rows["async.capacity_rps"]["agreement"] == (
        "not compared: B only a lower bound (BROKEN by the other's 62.4)")
    text = render(result)
    assert ">= 5.5" in text and ">= 70" in text
