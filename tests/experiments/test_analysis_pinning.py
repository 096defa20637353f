"""experiments/analysis/pinning.py on fixture samples: which model worker holds each scoring
worker's keep-alive connection."""

from __future__ import annotations

from experiments.analysis.pinning import model_connections, sentence
from experiments.analysis.summary import load_resource_samples
from hardware.summary import read_samples_csv, write_resources, write_samples_csv

MODEL = "127.0.0.1:5000"


def _sample(t: float, held: dict[int, list[int]]) -> dict:
    """held: model pid -> scoring pids whose connection it accepted (scoring pid p uses the
    local port 40000 + p, so each connection is unique)."""
    scoring: dict[str, list[str]] = {}
    model: dict[str, list[str]] = {}
    for m, ss in held.items():
        for s in ss:
            end = f"127.0.0.1:{40000 + s}"
            scoring.setdefault(str(s), []).append(f"{end}->{MODEL}")
            model.setdefault(str(m), []).append(f"{MODEL}->{end}")
    # A Redis connection of a scoring worker is not a model connection.
    scoring.setdefault("11", []).append("127.0.0.1:39999->127.0.0.1:6379")
    return {"t": t, "services": {
        "scoring-sync": {"pids": [10, 11, 12], "tcp": scoring},
        "model-sync": {"pids": [20, 21, 22], "tcp": model},
        "redis": {"pids": [30], "tcp": {"30": ["127.0.0.1:6379->127.0.0.1:39999"]}}}}


def test_both_scoring_workers_on_one_model_worker():
    samples = [_sample(t, {21: [11, 12]}) for t in range(5)]
    got = model_connections(samples)
    assert got["scoring_workers"] == 2
    assert got["model_workers_serving"] == 1
    assert got["model_pids"] == [21]
    assert got["pairs"] == {"11": [21], "12": [21]}
    assert got["share"] == 1.0 and got["one_model_worker_share"] == 1.0
    assert sentence(got) == ("model connections of the 2 scoring workers held by 1 model "
                             "worker (pid 21): every model call queues on that one worker")


def test_scoring_workers_on_different_model_workers():
    samples = [_sample(t, {21: [11], 22: [12]}) for t in range(5)]
    got = model_connections(samples)
    assert got["model_workers_serving"] == 2
    assert got["pairs"] == {"11": [21], "12": [22]}
    assert sentence(got) == ("model connections of the 2 scoring workers held by 2 model "
                             "workers (pid 21, 22)")


def test_window_and_dominant_assignment():
    samples = [_sample(t, {21: [11, 12]}) for t in range(3)]
    samples += [_sample(t, {21: [11], 22: [12]}) for t in range(3, 10)]
    late = model_connections(samples, start=3, end=9)
    assert late["model_workers_serving"] == 2 and late["assignments_seen"] == 1
    whole = model_connections(samples)
    assert whole["model_workers_serving"] == 2
    assert whole["share"] == 0.7 and whole["assignments_seen"] == 2
    assert whole["one_model_worker_share"] == 0.3
    assert "in 70% of 10 samples, 2 seen" in sentence(whole)
    early = model_connections(samples, end=2)
    assert early["model_workers_serving"] == 1


def test_samples_without_records_give_none():
    old = [{"t": 1.0, "services": {"scoring-sync": {"pids": [1], "connections": 3},
                                   "model-sync": {"pids": [2], "connections": 2}}}]
    assert model_connections(old) is None
    assert sentence(None) is None
    # Records present but no scoring-to-model connection yet (nothing served).
    idle = [{"t": 1.0, "services": {"scoring-sync": {"tcp": {}}, "model-sync": {"tcp": {}}}}]
    assert model_connections(idle) is None


def test_records_round_trip_through_the_result_folder(tmp_path):
    samples = [_sample(t, {21: [11], 22: [12]}) for t in range(3)]
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    # An old folder: the records inline in the CSV.
    write_samples_csv(samples, tmp_path / "old" / "localhost.csv")
    assert model_connections(read_samples_csv(tmp_path / "old" / "localhost.csv")) == \
        model_connections(samples)
    # A folder as collected now: the records apart in localhost.tcp.jsonl.
    samples += [_sample(t, {21: [11, 12]}) for t in range(3, 10)]  # reconnected: a change
    write_resources(samples, tmp_path / "new" / "localhost.csv")
    assert "tcp" not in (tmp_path / "new" / "localhost.csv").read_text()
    sources = load_resource_samples(tmp_path / "new")
    assert list(sources) == ["localhost"]  # the tcp file is no source of its own
    assert model_connections(sources["localhost"]) == model_connections(samples)
    assert model_connections(sources["localhost"])["model_pids"] == [21]


def test_experiment_4_rows_carry_the_assignment_of_their_window():
    from experiments.analysis.ladder import _model_connections

    sources = {"localhost": [_sample(t, {21: [11, 12]}) for t in range(10, 20)]
               + [_sample(t, {21: [11], 22: [12]}) for t in range(30, 40)]}
    first = _model_connections(sources, "sync", 10, 19)
    assert first["model_workers_serving"] == 1 and first["model_pids"] == [21]
    assert _model_connections(sources, "sync", 30, 39)["model_workers_serving"] == 2
    assert _model_connections(sources, "async", 10, 19) is None  # no blocking model worker
    assert _model_connections(sources, "sync", 50, 60) is None  # no sample in the window
    assert _model_connections({}, "sync", 10, 19) is None  # a run without resource samples
