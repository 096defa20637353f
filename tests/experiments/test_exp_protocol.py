"""Protocol config: profiles resolve as overrides, every bad key or value is named."""

from __future__ import annotations

import tomllib

import pydantic
import pytest

from experiments.config import ConfigError
from experiments.exp3_load import EXPERIMENT
from experiments.protocol import load_protocol, parse_protocol

CONFIG = EXPERIMENT.config


def _data():
    with CONFIG.open("rb") as f:
        return tomllib.load(f)


def test_full_profile_keeps_the_original_loads():
    # the original's loads (1 user, a ramp to 300, 500 users at 5/s), durations shortened so
    # that its 3 repeats fit in an hour (issue 13)
    p = load_protocol(CONFIG)
    assert p.profile == "full" and p.repeats == 3
    rt, lt, mp, st = (
        p.scenario(n) for n in ("response_time", "load_test", "max_performance", "stress")
    )
    assert (rt.users, rt.duration_s, rt.pacing_s) == (1, 45, 1.0)
    assert (lt.start_users, lt.end_users, lt.step_users, lt.step_interval_s) == (1, 300, 3, 1.0)
    assert lt.total_s == 101
    # max performance holds the capacity found, as an open-model load
    assert mp.kind == "open" and mp.needs_capacity and mp.duration_s == 45
    assert p.scenario("capacity").kind == "capacity" and p.capacity.p99_bound_ms == 250
    assert (st.users, st.spawn_rate, st.duration_s) == (500, 5.0, 45)
    assert p.paths == {"sync": "/api/v1/ml/sync/predict", "async": "/api/v1/ml/async/predict"}
    assert p.arrival == "spread"


def test_profiles_scale_durations():
    full = load_protocol(CONFIG, "full")
    quick, smoke = load_protocol(CONFIG, "quick"), load_protocol(CONFIG, "smoke")
    # minutes per repeat for both architectures (search: at its time budget, an upper bound),
    # every repeat counted; quick plans less than full
    assert 120 <= quick.repeat_s <= 2400 and quick.total_s == quick.repeats * quick.repeat_s
    assert quick.total_s < full.total_s
    assert smoke.total_s <= 120  # about a minute or two
    # an override changes only what it names
    assert quick.scenario("stress").pacing_s == 1.0
    assert smoke.analysis.breaking_point.throughput_ratio == 0.9


def test_protocol_is_frozen_and_serialisable():
    p = load_protocol(CONFIG, "smoke")
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        p.profile = "x"
    d = p.to_dict()
    assert d["scenarios"][1]["name"] == "load_test" and d["scenarios"][1]["total_s"] == 10
    assert p.scenario("max_performance").with_rate(7.5).rate == 7.5
    with pytest.raises(ConfigError, match="only an open scenario"):
        p.scenario("stress").with_rate(3)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d["scenarios"]["load_test"].update(end_user=3), "unknown key 'end_user'"),
        (lambda d: d["scenarios"]["stress"].update(users=0), "users = 0: must be >= 1"),
        (lambda d: d["scenarios"]["stress"].update(users="many"), "users = 'many'"),
        (lambda d: d["scenarios"]["stress"].update(kind="spiky"), "kind = 'spiky'"),
        (lambda d: d.update(arrival="random"), "arrival = 'random'"),
        (
            lambda d: d["analysis"]["breaking_point"].update(throughput_ratio=1.5),
            "throughput_ratio = 1.5",
        ),
        (
            lambda d: d["profiles"]["quick"]["scenarios"].update(warmup={"duration_s": 1}),
            "unknown scenario 'warmup'",
        ),
        (lambda d: d["scenarios"]["response_time"].update(duration_s=True), "duration_s = True"),
        (lambda d: d.pop("capacity"), "needs the [capacity] table"),
        (lambda d: d["scenarios"]["max_performance"].update(rate="fast"), "rate = 'fast'"),
        (lambda d: d["capacity"].update(min_rate=50), "need min_rate (50) <= start_rate (10)"),
        (lambda d: d["capacity"].update(p99_bound_ms=0), "p99_bound_ms = 0"),
        (lambda d: d["capacity"].update(bound=3), "unknown key 'bound'"),
        (lambda d: d["scenarios"].pop("capacity"), "needs a capacity scenario before it"),
    ],
)
def test_bad_values_are_named(mutate, message):
    data = _data()
    mutate(data)
    with pytest.raises(ConfigError, match="experiment3.toml") as e:
        parse_protocol(data, "full", source="experiment3.toml")
    assert message in str(e.value)


def test_unknown_profile_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown profile 'huge'.*quick"):
        load_protocol(CONFIG, "huge")


def test_bad_override_is_named():
    data = _data()
    data["profiles"]["smoke"]["scenarios"]["stress"]["spawn_rate"] = -1
    with pytest.raises(ConfigError, match=r"\[scenarios.stress\] spawn_rate = -1"):
        parse_protocol(data, "smoke")
