"""hardware.summary on synthetic sample lists, where every expected number is known."""

from __future__ import annotations

import json

import pytest

from hardware.summary import (
    core_usage,
    cpu_seconds_between,
    cpu_seconds_per_request,
    cut,
    load_samples,
    service_usage,
    total_cpu_seconds,
    write_samples_csv,
)


def svc(pids, user, system=0.0, rss=100, vol=0, invol=0, conns=0):
    return {
        "pids": pids,
        "cpu_user_s": user,
        "cpu_system_s": system,
        "rss_bytes": rss,
        "num_ctx_switches_voluntary": vol,
        "num_ctx_switches_involuntary": invol,
        "num_threads": len(pids),
        "connections": conns,
    }


def sample(t, services, idle=(0.0, 0.0), busy=(0.0, 0.0), percent=(0.0, 0.0)):
    return {
        "t": t,
        "cpu_percent_per_core": list(percent),
        "cpu_times_per_core": [
            {"user": b, "system": 0.0, "idle": i, "iowait": 0.0, "guest": 0.0}
            for b, i in zip(busy, idle, strict=True)
        ],
        "net": {"bytes_sent": 0, "bytes_recv": 0},
        "services": services,
    }


# model-sync runs two gunicorn workers; pid 11 dies between t=2 and t=3 and pid 12 replaces it.
# The sampler keeps a dead pid's last counters in the total, so the cumulative series is monotone.
SAMPLES = [
    sample(0.0, {"model-sync": svc([10, 11], 5.0, 1.0, rss=300, vol=100, invol=10)}),
    sample(1.0, {"model-sync": svc([10, 11], 6.0, 1.5, rss=320, vol=150, invol=12)}),
    sample(2.0, {"model-sync": svc([10, 11], 7.0, 2.0, rss=350, vol=200, invol=14, conns=3)}),
    sample(3.0, {"model-sync": svc([10, 12], 7.5, 2.0, rss=250, vol=230, invol=15, conns=5)}),
    sample(
        4.0,
        {
            "model-sync": svc([10, 12], 8.0, 2.5, rss=260, vol=260, invol=16),
            # redis appears mid-window: it started after t=3, so it counts from zero.
            "redis": svc([20], 0.25, 0.25, rss=50),
        },
    ),
]


def test_cut_is_inclusive_and_sorted():
    assert [s["t"] for s in cut(reversed(SAMPLES), 1.0, 3.0)] == [1.0, 2.0, 3.0]
    assert cut(SAMPLES, 10, 20) == []


def test_service_usage_over_a_window_where_a_pid_dies():
    usage = service_usage(SAMPLES, 1.0, 4.0)
    model = usage["model-sync"]
    assert model["cpu_user_s"] == pytest.approx(2.0)
    assert model["cpu_system_s"] == pytest.approx(1.0)
    assert model["cpu_total_s"] == pytest.approx(3.0)
    assert model["cpu_percent_mean"] == pytest.approx(100.0)  # 3 s of CPU in 3 s
    assert model["cpu_percent_max"] == pytest.approx(150.0)  # t=1..2: 1.5 s in 1 s
    assert model["rss_peak_bytes"] == 350
    assert model["ctx_switches_voluntary"] == 110
    assert model["ctx_switches_involuntary"] == 4
    assert model["connections_max"] == 5
    assert model["samples"] == 4
    assert model["window_s"] == pytest.approx(3.0)

    redis = usage["redis"]
    assert redis["cpu_total_s"] == pytest.approx(0.5)
    assert redis["cpu_percent_max"] == pytest.approx(50.0)
    assert redis["samples"] == 1


def test_service_usage_is_difference_of_first_and_last_sample():
    usage = service_usage(SAMPLES, 0.0, 4.0)["model-sync"]
    assert usage["cpu_total_s"] == pytest.approx((8.0 + 2.5) - (5.0 + 1.0))


def test_a_counter_reset_is_rebased_not_counted():
    restarted = [
        *SAMPLES[:3],
        # A new sampler process: totals restart from what live pids have used in their lives.
        sample(3.0, {"model-sync": svc([10, 12], 4.0, 1.0)}),
        sample(4.0, {"model-sync": svc([10, 12], 4.5, 1.0)}),
    ]
    usage = service_usage(restarted, 0.0, 4.0)["model-sync"]
    assert usage["cpu_total_s"] == pytest.approx(3.0 + 0.0 + 0.5)


def test_a_service_missing_from_some_samples():
    gap = [
        sample(0.0, {"loadgen": svc([1], 1.0)}),
        sample(1.0, {}),
        sample(2.0, {"loadgen": svc([1], 2.0)}),
    ]
    usage = service_usage(gap, 0.0, 2.0)["loadgen"]
    assert usage["cpu_total_s"] == pytest.approx(1.0)
    assert usage["cpu_percent_max"] == pytest.approx(50.0)  # over the 2 s between known values


def test_windows_with_too_few_samples():
    assert service_usage(SAMPLES, 10.0, 20.0) == {}
    one = service_usage(SAMPLES, 2.0, 2.0)["model-sync"]
    assert one["cpu_total_s"] == 0.0
    assert one["cpu_percent_mean"] is None and one["cpu_percent_max"] is None
    assert one["rss_peak_bytes"] == 350


def test_core_usage_from_cumulative_times():
    samples = [
        sample(0.0, {}, busy=(10.0, 0.0), idle=(10.0, 20.0), percent=(5.0, 5.0)),
        sample(1.0, {}, busy=(10.5, 0.1), idle=(10.5, 20.9), percent=(50.0, 10.0)),
        sample(2.0, {}, busy=(11.5, 0.2), idle=(10.5, 21.8), percent=(100.0, 10.0)),
    ]
    assert core_usage(samples, 0.0, 2.0) == pytest.approx([75.0, 10.0])
    # One sample: its own percent over the interval before it.
    assert core_usage(samples, 1.0, 1.0) == pytest.approx([50.0, 10.0])
    assert core_usage(samples, 5.0, 6.0) == []


def test_cpu_seconds_per_request():
    usage = service_usage(SAMPLES, 1.0, 4.0)
    assert cpu_seconds_per_request(usage["model-sync"], 1000) == pytest.approx(0.003)
    assert cpu_seconds_per_request(1.5, 3) == pytest.approx(0.5)
    assert cpu_seconds_per_request(usage["model-sync"], 0) is None
    with pytest.raises(ValueError):
        cpu_seconds_per_request(1.0, -1)
    assert total_cpu_seconds(usage) == pytest.approx(3.5)
    assert total_cpu_seconds(usage, ["redis", "scoring-sync"]) == pytest.approx(0.5)


def test_load_samples_drops_a_torn_last_line(tmp_path):
    path = tmp_path / "samples.jsonl"
    lines = [json.dumps(s) for s in reversed(SAMPLES)]
    path.write_text("\n".join(lines) + "\n" + lines[0][:25])
    loaded = load_samples(path)
    assert [s["t"] for s in loaded] == [0.0, 1.0, 2.0, 3.0, 4.0]

    path.write_text(lines[0] + "\n{oops\n" + lines[1] + "\n")
    with pytest.raises(ValueError, match=":2:"):
        load_samples(path)


def test_samples_round_trip_through_the_result_folders_csv_form(tmp_path):
    """The CSV a result folder stores gives back exactly the sampler's samples: nested
    services, per-core lists, lists that grow (a new worker pid), empty containers,
    services that appear mid-run, ints staying ints."""
    samples = [
        {"t": 1.5, "cpu_percent_per_core": [10.0, 0.0],
         "cpu_times_per_core": [{"user": 1.25, "idle": 9.0}, {"user": 2.0, "idle": 8.0}],
         "net": {"bytes_sent": 10, "bytes_recv": 20}, "services": {}},
        {"t": 2.5, "cpu_percent_per_core": [55.5, 1.0],
         "cpu_times_per_core": [{"user": 1.8, "idle": 9.4}, {"user": 2.0, "idle": 9.0}],
         "net": {"bytes_sent": 15, "bytes_recv": 31},
         "services": {"model-sync": {"pids": [11, 12, 13], "cpu_user_s": 0.5, "rss_bytes": 7},
                      "redis": {"pids": [], "cpu_user_s": 0.0}}},
    ]
    path = tmp_path / "host.csv"
    write_samples_csv(samples, path)
    header = path.read_text().splitlines()[0].split(",")
    assert "services.model-sync.pids[2]" in header and "cpu_times_per_core[1].idle" in header
    assert load_samples(path) == samples
    assert isinstance(load_samples(path)[1]["services"]["model-sync"]["rss_bytes"], int)


def test_cpu_in_a_window_shorter_than_the_sampling_is_interpolated():
    # 50 % of a core, sampled every second; a process restart in between counts from zero
    def since_start(i):
        return i if i < 5 else i - 5

    samples = [{"t": 100.0 + i, "services": {"scoring-async": {
        "cpu_user_s": 0.4 * since_start(i), "cpu_system_s": 0.1 * since_start(i)}}}
        for i in range(10)]
    assert cpu_seconds_between(samples, "scoring-async", 101.25, 102.75) == pytest.approx(0.75)
    # across the restart (t=105: counters back to 0): the lost second adds nothing
    assert cpu_seconds_between(samples, "scoring-async", 103.0, 107.0) == pytest.approx(1.5)
    assert cpu_seconds_between(samples, "scoring-async", 99.0, 101.0) is None  # not covered
    assert cpu_seconds_between(samples, "model-async", 101.0, 102.0) is None
    # service_usage's steps: a sample without the service is bridged ...
    gap = [*samples[:2], {"t": 102.0, "services": {}}, *samples[3:5]]
    assert cpu_seconds_between(gap, "scoring-async", 101.0, 103.0) == pytest.approx(1.0)
    # ... and a service that starts after the first sample counts from zero at the last
    # sample without it
    late = [{"t": 100.0, "services": {}}, samples[1]]
    assert cpu_seconds_between(late, "scoring-async", 100.0, 101.0) == pytest.approx(0.5)
