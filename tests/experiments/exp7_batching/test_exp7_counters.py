"""The model-counter hook's parts without a server: polling until every worker answered, and
which model server a run loads (its own target, a build's model URLs, else model-<arch>)."""

from __future__ import annotations

import itertools

from experiments.exp7_batching.counters import model_target, snapshot


def test_snapshot_polls_until_every_worker_answered():
    pids = itertools.cycle([11, 11, 11, 12])
    calls = []

    def get(url):
        calls.append(url)
        return {"pid": next(pids), "device_holds": 1}

    s = snapshot("http://m", 2, get=get)
    assert set(s["workers"]) == {"11", "12"} and s["polls"] == 4 == len(calls)
    assert calls[0] == "http://m/api/v1/debug/model"
    # a worker that never answers: the polls stop at the limit, what was seen kept
    s = snapshot("http://m", 3, max_polls=6, get=lambda url: {"pid": 11})
    assert set(s["workers"]) == {"11"} and s["polls"] == 6


def test_snapshot_keeps_errors_and_goes_on():
    answers = iter([OSError("refused"), {"pid": 5}])

    def get(url):
        a = next(answers)
        if isinstance(a, Exception):
            raise a
        return a

    s = snapshot("http://m", 1, get=get)
    assert s["workers"] == {"5": {"pid": 5}} and s["errors"] == ["OSError: refused"]


SERVICES = {"model-sync": {"url": "http://h:5000", "cpus": [0], "workers": None},
            "model-async": {"url": "http://h:8000/", "cpus": [0, 1], "workers": 3},
            "model-other": {"url": "http://h:9000", "workers": 4}}


def test_the_model_server_a_run_loads():
    # default builds: the architecture's own model API, its workers by the services' rule
    assert model_target(SERVICES, {}, "sync", None) == ("http://h:5000", "model-sync", 2)
    assert model_target(SERVICES, {}, "async", None) == ("http://h:8000", "model-async", 3)
    # a build whose scoring handler calls another server
    urls = {"scoring_handler_model_urls": {"sync": "http://h:5000", "async": "http://h:9000"}}
    assert model_target(SERVICES, urls, "async", None) == ("http://h:9000", "model-other", 4)
    # a run aimed at a model server (the model probe) reads that one
    assert model_target(SERVICES, urls, "sync", "http://h:8000")[1] == "model-async"
    assert model_target(SERVICES, {}, "sync", "http://x:1") == ("http://x:1", None, None)


def test_snapshot_gives_up_on_a_server_that_does_not_answer():
    def get(url):
        raise OSError("timed out")

    s = snapshot("http://m", 2, get=get)
    assert s["workers"] == {} and s["polls"] == 3 and len(s["errors"]) == 3

