"""Experiment 8's config: registered, every profile parses within the planned times the brief
asks for, 1x comes from closed experiment-5 searches, and bad values are refused by name."""

from __future__ import annotations

import tomllib

import pytest

from experiments.config import ConfigError
from experiments.exp8_queue import EXPERIMENT
from experiments.exp8_queue.config import load_queue, parse_queue
from experiments.registry import BY_NAME, EXPERIMENTS


def _data() -> dict:
    with EXPERIMENT.config.open("rb") as f:
        return tomllib.load(f)


def test_registered_and_every_profile_parses_within_its_time():
    assert EXPERIMENTS["8"] is EXPERIMENT and BY_NAME["experiment-8"] is EXPERIMENT
    full, quick, smoke = (EXPERIMENT.configure(p) for p in ("full", "quick", "smoke"))
    assert EXPERIMENT.default_profile() == "full"
    assert smoke.total_s < 180  # the end-to-end test's run
    assert 10 * 60 <= quick.total_s <= 20 * 60
    assert quick.total_s < full.total_s <= 35 * 60
    assert {c.bound_ms for c in (full, quick, smoke)} == {250}  # the shared bound
    # a job's bound is the shared one plus a poll interval
    assert full.job_bound_ms == 250 + 1000 * full.client.poll_interval_s
    assert full.burst.factor == 3.0 and full.burst.burst_s == 20
    # the 20 s burst in both; quick is shorter around it
    assert quick.burst.burst_s == full.burst.burst_s
    assert quick.burst.after_s < full.burst.after_s
    assert smoke.capacity_rps == {"sync": 4.0, "async": 8.0}


def test_1x_is_the_lowest_found_capacity_of_the_named_runs():
    cfg = EXPERIMENT.configure("quick")
    for arch in cfg.architectures:
        source = cfg.capacity_source[arch]
        assert source["rule"].startswith("lowest found")
        found = [f["capacity_rps"] for f in source["figures"][arch] if f["status"] == "found"]
        assert found and cfg.capacity_rps[arch] == min(found)
    assert cfg.to_dict()["capacity_source"]["sync"]["variant"] == "default"


def test_a_run_without_a_found_figure_is_refused_by_name(tmp_path):
    text = EXPERIMENT.config.read_text().replace(
        "results/20261207T022641Z_experiment-5_single-localhost_2e223b96", "results/nope")
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"profile quick\): capacity_from run 'results/nope'"):
        load_queue(path, "quick")


@pytest.mark.parametrize(("change", "match"), [
    (lambda d: d["levels"].update(factors=[]), "factors"),
    (lambda d: d["levels"].update(factors=[1.0, 0.5]), r"factors = \[1.0, 0.5\]: must rise"),
    (lambda d: d["levels"].update(step_s=0), "step_s = 0"),
    (lambda d: d["client"].update(poll_interval_s=-0.1), "poll_interval_s = -0.1"),
    (lambda d: d["client"].update(deadline_s=0.05), r"deadline_s = 0.05: must be longer"),
    (lambda d: d["client"].update(poll_interval_s="fast"), "poll_interval_s = 'fast'"),
    (lambda d: d["client"].update(wait_s=0), "wait_s"),
    (lambda d: d["client"].update(wait_s=10), r"client.wait_s = 10: must be below the "
                                              r"clients' request timeout \(10 s\)"),
    (lambda d: d["burst"].update(factor=1.0), "factor = 1.0: must be > 1"),
    (lambda d: d["burst"].update(base=4.0), r"base = 4: must be below factor \(3\)"),
    (lambda d: d["burst"].update(drain_depth=-1), "drain_depth = -1"),
    (lambda d: d["depth"].update(interval_s=0), "interval_s = 0"),
    (lambda d: (d.pop("capacity_from"), d.update(capacity_rps={"sync": 1.0})),
     r"capacity_rps has no figure for \['async'\] and there is no \[capacity_from\]"),
    (lambda d: d.update(capacity_rps={"sync": 0.0, "async": 1.0}), "sync = 0.0"),
    (lambda d: d["client"].update(colour="red"), "unknown key 'colour'"),
    (lambda d: d.update(architectures=["sync", "rust"]), "rust"),
])
def test_bad_values_are_named(change, match):
    data = _data()
    change(data)
    with pytest.raises(ConfigError, match=match):
        parse_queue(data, "full", source="exp8.toml")


def test_a_bad_value_in_another_profile_fails_whichever_is_run():
    data = _data()
    data["profiles"]["smoke"]["levels"]["step_s"] = -3
    with pytest.raises(ConfigError, match=r"\(profile smoke\).*step_s = -3"):
        parse_queue(data, "full", source="exp8.toml")
