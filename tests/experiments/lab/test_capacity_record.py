"""The one search-and-record helper experiments 3 and the ladders share: which searches run,
what the manifest entry holds once settled, where it is recorded."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from experiments.analysis.capacity import CapacityResult
from experiments.lab import capacity as lab_capacity
from experiments.protocol import CapacityParams, GuardParams

PARAMS = dict(p99_bound_ms=250, start_rate=10, max_rate=1000, min_step_s=10)


class FakeRun:
    def __init__(self):
        self.manifest: dict = {}

    def update(self, **fields):
        self.manifest.update(fields)


def _lab():
    said: list[str] = []
    return SimpleNamespace(progress=SimpleNamespace(say=said.append), said=said)


@pytest.fixture
def searches(monkeypatch):
    """Each search returns its canned result, noting its bound; the settled verdict moves the
    shared capacity (as a second search's step near the knee can)."""
    calls: list[dict] = []

    def search(lab, params, arch, arch_dir, *, p99_ms, prior=(), **kw):
        calls.append({"p99_ms": p99_ms, "prior": list(prior), **kw})
        status = "invalid" if kw["label"].startswith("bad") else "found"
        return CapacityResult(status, 40.0 if p99_ms == 250 else 30.0, 44.0)

    def settle(arch_dir, params, grace_s, one_user_dir=None):
        out = {"shared": {"p99_bound_ms": 250, "status": "found", "capacity": 41.0}}
        if one_user_dir is not None and params.relative_bound_factor:
            out["relative"] = {"capacity": 31.0}
        return out

    monkeypatch.setattr(lab_capacity, "search", search)
    monkeypatch.setattr(lab_capacity, "analyse_search", settle)
    monkeypatch.setattr(lab_capacity, "one_user_p99_ms", lambda d: 50.0)
    monkeypatch.setattr(lab_capacity, "step_dirs", lambda d: [])
    return calls


def _run(params, label="capacity sync", one_user_dir=None):
    lab = _lab()
    entry = lab_capacity.search_and_settle(
        lab, CapacityParams(**params), "sync", Path("/nonexistent"), label=label,
        payload=[1.0], step=3, guard=GuardParams(), hint_rate=12.0,
        one_user_dir=one_user_dir)
    return entry, lab.said


def test_the_shared_search_alone_is_settled_as_the_report_derives_it(searches):
    entry, said = _run(PARAMS)
    assert [c["p99_ms"] for c in searches] == [250]
    assert searches[0]["hint_rate"] == 12.0
    assert set(entry) == {"shared"}
    assert entry["shared"]["capacity"] == 41.0 and entry["shared"]["first_failing"] == 44.0
    # one answer per search: the log says the settled capacity the manifest and report give
    # (the live search said 40.0)
    assert said == ["capacity sync (shared bound): found, 41.0 req/s (first failing 44.0)"]


def test_a_relative_bound_searches_again_from_the_one_user_p99(searches):
    entry, _ = _run({**PARAMS, "relative_bound_factor": 2.0}, one_user_dir=Path("/rt"))
    assert [c["p99_ms"] for c in searches] == [250, 100.0]
    assert entry["relative"]["p99_bound_ms"] == 100.0
    assert entry["relative"]["one_user_p99_ms"] == 50.0 and entry["relative"]["capacity"] == 31.0
    # without the 1-user run (a ladder's rungs), no relative search
    searches.clear()
    entry, _ = _run({**PARAMS, "relative_bound_factor": 2.0})
    assert [c["p99_ms"] for c in searches] == [250] and set(entry) == {"shared"}


def test_an_invalid_search_is_neither_extended_nor_settled(searches):
    entry, _ = _run({**PARAMS, "relative_bound_factor": 2.0}, label="bad", one_user_dir=Path("/rt"))
    assert len(searches) == 1
    assert entry["shared"]["status"] == "invalid" and entry["shared"]["capacity"] == 40.0


def test_record_nests_the_entry_and_keeps_what_the_table_holds():
    run = FakeRun()
    lab_capacity.record(run, "capacity", ("sync",), {"shared": 1})
    lab_capacity.record(run, "capacity", ("async",), {"shared": 2})
    assert run.manifest["capacity"] == {"sync": {"shared": 1}, "async": {"shared": 2}}
    lab_capacity.record(run, "capacity_repeats", ("2", "default", "sync"), {"shared": 3})
    lab_capacity.record(run, "capacity_repeats", ("2", "default", "async"), {"shared": 4})
    assert run.manifest["capacity_repeats"] == {
        "2": {"default": {"sync": {"shared": 3}, "async": {"shared": 4}}}}
