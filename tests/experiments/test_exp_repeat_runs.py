"""Repeats in the load experiments: the `repeats` key of the protocol, the ABBA order, the
planned time, the raw layout (old folders read as one repeat), the headline figures over the
repeats and the sync/async comparison at the repeat level on fixture numbers, and a committed
folder from before repeats re-reported unchanged in its numbers."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.analysis.repeat_figures import (
    NOT_TESTABLE,
    compare_repeats,
    repeat_section,
    summarise_headlines,
)
from experiments.config import ConfigError, read
from experiments.exp3_load import EXPERIMENT as EXP3
from experiments.exp4_ladder import EXPERIMENT as EXP4
from experiments.lab.renew import RESTART_VAR, restart_vars
from experiments.protocol import parse_protocol
from experiments.repeats import abba, locust_root, locust_roots

ROOT = Path(__file__).resolve().parents[2]
EXP3_TOML = ROOT / "experiments/exp3_load/config.toml"
OLD_RUNS = ("20261130T221354Z_experiment-3_single-localhost_eb130785",
            "20261125T204507Z_experiment-3_single-localhost_8d4e14cb")


def test_profiles_set_their_repeats():
    assert [EXP3.configure(p).repeats for p in ("full", "quick", "smoke")] == [3, 3, 1]
    assert [EXP4.configure(p).protocol.repeats for p in ("full", "quick", "smoke")] == [2, 1, 1]


def test_a_profile_overrides_repeats_and_the_manifest_records_it():
    data = read(EXP3_TOML)
    data["profiles"]["quick"]["repeats"] = 5
    protocol = parse_protocol(data, "quick")
    assert protocol.repeats == 5 and protocol.to_dict()["repeats"] == 5
    assert parse_protocol(data, "full").repeats == 3


@pytest.mark.parametrize("bad", [0, -1, "two", 1.5])
def test_bad_repeats_is_a_config_error_naming_the_value(bad):
    data = read(EXP3_TOML)
    data["repeats"] = bad
    with pytest.raises(ConfigError, match=rf"repeats = {bad!r}"):
        parse_protocol(data, "quick")


def test_bad_repeats_in_a_profile_names_the_profile():
    data = read(EXP3_TOML)
    data["profiles"]["smoke"]["repeats"] = 0
    with pytest.raises(ConfigError, match=r"profile smoke.*repeats = 0: must be >= 1"):
        parse_protocol(data, "full")


def test_planned_time_counts_every_repeat():
    data = read(EXP3_TOML)
    one = parse_protocol({**data, "repeats": 1}, "full")
    three = parse_protocol({**data, "repeats": 3}, "full")
    assert three.total_s == pytest.approx(3 * one.total_s) and three.repeat_s == one.total_s
    ladder = EXP4.configure("full")
    assert ladder.protocol.repeats == 2
    assert ladder.total_s == pytest.approx(2 * sum(
        ladder.protocol.scenario_s(ladder.protocol.scenario(
            {"probe-model": "probe"}.get(step, step))) + ladder.protocol.pause_s
        for _, step, _, _ in ladder.runs()))


def test_full_and_quick_fit_their_budgets():
    # issue 13 sized the full profile to an hour; issue 21's trust (confident verdicts, 60 s
    # holds, searches that close within a time budget) costs more: full plans at most about
    # 1.5 h of load, quick about an hour (upper bounds: a search stops when its bracket closes)
    assert EXP3.configure("full").total_s <= 100 * 60
    assert EXP3.configure("quick").total_s <= 65 * 60


def test_abba_alternates_the_order():
    assert [abba(["sync", "async"], k) for k in (1, 2, 3, 4)] == [
        ["sync", "async"], ["async", "sync"], ["sync", "async"], ["async", "sync"]]
    with pytest.raises(ValueError, match="repeat must be >= 1, got 0"):
        abba(["sync"], 0)


def test_ladder_runs_reverse_variants_and_archs_in_even_repeats():
    ladder = EXP4.configure("smoke")
    first, second = ladder.runs(1), ladder.runs(2)
    assert sorted(map(repr, first)) == sorted(map(repr, second))
    order1 = list(dict.fromkeys(v.name for v, *_ in first))
    order2 = list(dict.fromkeys(v.name for v, *_ in second))
    assert order2 == order1[::-1]
    probes1 = [a for v, step, a, _ in first if v.name == order1[0] and step == "probe"]
    probes2 = [a for v, step, a, _ in second if v.name == order1[0] and step == "probe"]
    assert probes2 == probes1[::-1] == ["async", "sync"]


def test_restart_token_goes_into_both_services_and_keeps_a_variants_env():
    base = {"model_api_env": {"SCORING_LAB_X": "1"}, "model_api_workers": 3}
    out = restart_vars(base, "run-r2")
    assert out["model_api_env"] == {"SCORING_LAB_X": "1", RESTART_VAR: "run-r2"}
    assert out["scoring_handler_env"] == {RESTART_VAR: "run-r2"}
    assert out["model_api_workers"] == 3 and base["model_api_env"] == {"SCORING_LAB_X": "1"}
    assert RESTART_VAR.startswith("SCORING_LAB_")  # the deploy's preflight takes only these


def test_layout_old_and_new(tmp_path):
    assert locust_root(tmp_path, 1, 1) == tmp_path / "locust"
    assert locust_root(tmp_path, 2, 3) == tmp_path / "repeat-2" / "locust"
    assert locust_roots(tmp_path) == [(1, tmp_path / "locust")]  # before repeats
    for k in (10, 2, 1):
        (tmp_path / f"repeat-{k}" / "locust").mkdir(parents=True)
    assert [k for k, _ in locust_roots(tmp_path)] == [1, 2, 10]


def _heads(sync_caps, async_caps):
    return [{"sync": {"capacity_rps": s, "capacity_status": "found", "valid": True,
                      "cpu_ms_per_request": {"scoring-sync": 3.0 + i}},
             "async": {"capacity_rps": a, "capacity_status": "found", "valid": i != 1,
                       "cpu_ms_per_request": {"scoring-async": 2.0}}}
            for i, (s, a) in enumerate(zip(sync_caps, async_caps, strict=True))]


def test_headline_over_repeats_gives_median_interval_cv_and_flag():
    head = summarise_headlines(_heads([12.0, 22.0, 21.0], [150.0, 152.0, 149.0]))
    sync = head["sync"]["capacity_rps"]
    assert sync["median"] == 21.0 and sync["values"] == [12.0, 22.0, 21.0]
    assert sync["unstable"] is True and sync["cv"] > 0.10
    assert (sync["low"], sync["high"], sync["interval"]) == (12.0, 22.0, "range")
    assert head["async"]["capacity_rps"]["unstable"] is False
    assert head["sync"]["cpu_ms_per_request"]["scoring-sync"]["median"] == 4.0
    assert head["sync"]["capacity_status"] == ["found"] * 3
    assert head["async"]["valid"] is False and head["sync"]["valid"] is True
    json.dumps(head, allow_nan=False)  # no NaN in report.json


def test_one_repeat_keeps_bare_numbers_and_is_not_testable():
    heads = _heads([22.0], [150.0])
    assert summarise_headlines(heads) == heads[0]
    c = compare_repeats(heads, ["sync", "async"])["capacity_rps"]
    assert c["verdict"] == NOT_TESTABLE and c["significant"] is None
    json.dumps(c, allow_nan=False)


def test_three_repeats_on_one_side_are_not_called_significant():
    # 3 ratios above 1 happen by chance 25 % of the time: the range, and no confidence
    heads = _heads([20.0, 22.0, 21.0], [150.0, 140.0, 160.0])
    c = compare_repeats(heads, ["sync", "async"], builds="default")["capacity_rps"]
    assert c["ratios"] == pytest.approx([7.5, 140 / 22, 160 / 21])
    assert c["significant"] is None and c["interval"] == "range" and c["confidence"] is None
    assert (c["low"], c["high"]) == pytest.approx((140 / 22, 160 / 21))
    assert c["verdict"].startswith("default async 7.50x default sync: all 3 repeats above 1")
    assert "significant" not in c["verdict"] and "too few repeats" in c["verdict"]


@pytest.mark.parametrize(("sync", "async_", "significant"), [
    ([20.0, 22.0, 21.0, 20.5, 21.5], [150.0, 140.0, 160.0, 150.0, 145.0], True),
    ([20.0, 22.0, 21.0, 20.5, 21.5], [21.0, 20.0, 23.0, 19.0, 22.0], False),
])
def test_five_repeats_are_tested_at_the_intervals_stated_coverage(sync, async_, significant):
    c = compare_repeats(_heads(sync, async_), ["sync", "async"])["capacity_rps"]
    assert c["interval"] == "order_statistic" and c["confidence"] == pytest.approx(0.9375)
    assert c["significant"] is significant
    assert "93.75 % interval of the median ratio" in c["verdict"]
    assert c["verdict"].startswith("async") if significant else \
        c["verdict"].startswith("not significant")


def test_repeat_level_comparison_either_side_of_one():
    # async ahead in two repeats, behind in one: the range of the ratios holds 1
    heads = _heads([20.0, 22.0, 21.0], [21.0, 20.0, 23.0])
    c = compare_repeats(heads, ["sync", "async"])["capacity_rps"]
    assert c["low"] < 1 < c["high"] and c["significant"] is None
    assert c["verdict"].startswith("repeats either side of 1")
    lines = "\n".join(repeat_section({"repeats": [{"repeat": 1, "order": ["sync", "async"]}]},
                                     heads, summarise_headlines(heads), {"capacity_rps": c},
                                     ["sync", "async"]))
    row = next(x for x in lines.splitlines() if x.startswith("| capacity_rps | sync |"))
    assert "| 21.00 |" in row and "unstable" not in row  # CV 4.8 %
    cpu = next(x for x in lines.splitlines()
               if x.startswith("| cpu_ms_per_request.scoring-sync | sync |"))
    assert "**unstable**" in cpu  # 3, 4, 5 ms: CV 25 %
    assert "either side of 1" in lines and "3 repeats" in lines
    assert "95 %" not in lines and "bootstrap" not in lines
    assert "20.00-22.00 (range of 3)" in row  # the spread is called what it is
    assert "when neither is ahead, that happens 25 % of the time" in lines


@pytest.mark.slow  # re-reports a whole committed run, plots included
@pytest.mark.parametrize("name", OLD_RUNS)
def test_a_committed_run_from_before_repeats_re_reports_as_one_repeat(tmp_path, name):
    src = ROOT / "results" / name
    if not src.is_dir():
        pytest.skip(f"{name} not in this checkout")
    copy = tmp_path / name
    shutil.copytree(src, copy)
    old = json.loads((src / "report.json").read_text())
    subprocess.run([sys.executable, "-m", "experiments", "report", str(copy)], cwd=ROOT,
                   check=True, capture_output=True, timeout=300)
    new = json.loads((copy / "report.json").read_text())
    assert new["numbers"] == old["numbers"]
    # the verdicts; the steps may carry fields added since (hold, duration_s)
    def verdicts(report):
        return {(arch, kind): (e["status"], e["capacity"], e["first_failing"])
                for arch, entry in (report.get("capacity") or {}).items()
                for kind, e in entry.items()}
    assert verdicts(new) == verdicts(old)
    assert new["headline"]["builds"] == "default"
    for arch, figures in old["headline"].items():
        if not isinstance(figures, dict):  # "builds": which builds the figures are of
            assert new["headline"][arch] == figures
            continue
        for key, value in figures.items():
            assert new["headline"][arch][key] == value, (arch, key)
    assert all(c["verdict"] == NOT_TESTABLE for c in new["repeat_comparisons"].values())
    text = (copy / "report.md").read_text()
    assert "## Repeats" in text and "One repeat" in text and "## Repeat 1" not in text
