"""Session.locust runs every step hook's context around the Locust run, in order, and leaves
them when the run fails too."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest

from experiments.lab import session as session_mod
from experiments.protocol import Scenario


def _session(hooks) -> session_mod.Session:
    topology = SimpleNamespace(scoring_url=lambda arch: f"http://scoring-{arch}")
    load = SimpleNamespace(local_cpus=[], local_workers=0, worker_hosts=[], local_run_dir="")
    progress = session_mod.Progress(10, 1)
    return session_mod.Session(run=None, topology=topology, load=load, master=None,
                               guard=None, progress=progress, step_hooks=hooks)


def _hook(name: str, events: list):
    @contextmanager
    def hook(lab, out_dir, arch, url):
        events.append((name, "in", out_dir.name, arch, url))
        try:
            yield
        finally:
            events.append((name, "out"))
    return hook


def test_hooks_wrap_the_run_in_order(monkeypatch, tmp_path: Path):
    events: list = []

    def fake_run_locust(scenario, url, path, out_dir, **kw):
        events.append(("locust", url))
        return SimpleNamespace(valid=True, reasons=[])

    monkeypatch.setattr(session_mod, "run_locust", fake_run_locust)
    lab = _session((_hook("a", events), _hook("b", events)))
    scenario = Scenario(name="probe", kind="constant", users=1, spawn_rate=1.0, duration_s=1.0)
    lab.locust(scenario, "async", tmp_path / "step", arrival="spread", payload=[1.0], step=1,
               label="x", url="http://model")
    assert events == [("a", "in", "step", "async", "http://model"),
                      ("b", "in", "step", "async", "http://model"),
                      ("locust", "http://model"), ("b", "out"), ("a", "out")]

    def failing(*a, **kw):
        raise RuntimeError("locust failed")

    events.clear()
    monkeypatch.setattr(session_mod, "run_locust", failing)
    with pytest.raises(RuntimeError):
        lab.locust(scenario, "sync", tmp_path / "s2", arrival="spread", payload=[1.0], step=1,
                   label="x")
    assert events == [("a", "in", "s2", "sync", None), ("b", "in", "s2", "sync", None),
                      ("b", "out"), ("a", "out")]
