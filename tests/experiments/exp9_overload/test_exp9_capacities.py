"""Experiment 9's 1x: the lowest capacity experiment 5 found, read from run folders; a lower
bound, a missing run or another experiment's run is refused by name, never guessed around."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.config import ConfigError
from experiments.exp9_overload import EXPERIMENT
from experiments.exp9_overload.run import load_overload
from experiments.found_capacities import (
    CapacityFrom,
    CapacitySourceError,
    measured_capacities,
)
from experiments.reporting import headline_capacity


def _run(root: Path, name: str, rows: list[dict], *, experiment: str = "experiment-5",
         status: str = "complete") -> str:
    folder = root / "results" / name
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"experiment": experiment,
                                                      "status": status}))
    (folder / "report.json").write_text(json.dumps({"rows": rows}))
    return f"results/{name}"


def _row(arch: str, rps: float, status: str = "found", variant: str = "default") -> dict:
    return {"variant": variant, "arch": arch, "capacity_rps": rps, "capacity_status": status}


def test_the_lowest_found_figure_per_arch_and_lower_bounds_skipped(tmp_path):
    a = _run(tmp_path, "a", [_row("sync", 5.5, "time"), _row("async", 62.4),
                             _row("async", 300.0, variant="aiohttp")])
    b = _run(tmp_path, "b", [_row("sync", 6.2), _row("async", 93.3)])
    rps, record = measured_capacities(CapacityFrom(runs=(a, b)), ("sync", "async"),
                                      root=tmp_path)
    assert rps == {"sync": 6.2, "async": 62.4}
    # every figure read is on record, the skipped lower bound with its status
    assert {(f["run"], f["status"]) for f in record["figures"]["sync"]} == {
        (a, "time"), (b, "found")}
    assert record["capacity_rps"] == rps


@pytest.mark.parametrize(("rows", "kwargs", "match"), [
    ([_row("sync", 5.5, "held"), _row("async", 60.0)], {},
     r"no found capacity for default/sync in results/x \(results/x: held\)"),
    ([_row("async", 60.0)], {}, r"default/sync .*no such row"),
    ([_row("sync", 5.0), _row("async", 60.0)], {"experiment": "experiment-6"},
     "is 'experiment-6', not experiment-5"),
    ([_row("sync", 5.0), _row("async", 60.0)], {"status": "incomplete"},
     "is 'incomplete', not complete"),
])
def test_a_source_that_cannot_give_1x_is_refused_by_name(tmp_path, rows, kwargs, match):
    run = _run(tmp_path, "x", rows, **kwargs)
    with pytest.raises(CapacitySourceError, match=match):
        measured_capacities(CapacityFrom(runs=(run,)), ("sync", "async"), root=tmp_path)


def test_a_missing_run_is_named(tmp_path):
    with pytest.raises(CapacitySourceError, match=r"'results/gone': no manifest.json"):
        measured_capacities(CapacityFrom(runs=("results/gone",)), ("sync",), root=tmp_path)


def test_the_committed_config_reads_closed_searches_of_committed_runs():
    cfg = EXPERIMENT.configure("quick")
    for arch in cfg.architectures:
        source = cfg.capacity_source[arch]
        used = [f for f in source["figures"][arch]
                if f["status"] == "found" and f["capacity_rps"] == cfg.capacity_rps[arch]]
        assert used, (arch, source)
        # a closed search reads as a plain figure, not a lower bound
        assert isinstance(headline_capacity(cfg.capacity_rps[arch], "found"), float)
    assert cfg.to_dict()["capacity_source"]["async"]["rule"].startswith("lowest found")


def test_the_configs_own_capacity_wins_and_needs_no_run():
    smoke = EXPERIMENT.configure("smoke")
    assert smoke.capacity_rps == {"sync": 4.0, "async": 8.0}
    assert set(smoke.capacity_source.values()) == {"config capacity_rps"}


def test_a_bad_source_run_fails_the_load_as_a_config_error(tmp_path):
    text = EXPERIMENT.config.read_text().replace(
        "results/20261207T022641Z_experiment-5_single-localhost_2e223b96", "results/nope")
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"profile quick\): capacity_from run 'results/nope'"):
        load_overload(path, "quick")
