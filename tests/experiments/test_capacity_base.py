"""One capacity protocol for every experiment: experiments/capacity.toml, under each
experiment's [capacity] overrides and its profiles' overrides; the manifest records every
resolved value."""

from __future__ import annotations

import tomllib

import pytest

from experiments.config import ConfigError
from experiments.protocol import CAPACITY_BASE, CapacityParams, parse_protocol
from experiments.registry import EXPERIMENTS

SEARCHING = ("3", "4", "5", "6", "7")


def _base() -> dict:
    with CAPACITY_BASE.open("rb") as f:
        return tomllib.load(f)


def _doc(capacity: dict | None, profile_capacity: dict | None = None) -> dict:
    doc = {"experiment": "t", "scenarios": {"capacity": {"kind": "capacity"}}}
    if capacity is not None:
        doc["capacity"] = capacity
    if profile_capacity is not None:
        doc["profiles"] = {"quick": {"capacity": profile_capacity}}
    return doc


def test_the_base_names_every_key_of_the_search():
    # a key the base left out would fall back on a code default: one place per fact
    assert set(_base()) == set(CapacityParams.model_fields)


def test_an_empty_table_takes_the_base_and_overrides_win_in_order():
    full = parse_protocol(_doc({}, {"max_steps": 4}), "full").capacity
    assert full.model_dump() == CapacityParams(**_base()).model_dump()
    own = parse_protocol(_doc({"max_steps": 7, "hold_s": 5}, {"max_steps": 4}), "full").capacity
    assert (own.max_steps, own.hold_s, own.min_step_s) == (7, 5, _base()["min_step_s"])
    quick = parse_protocol(_doc({"max_steps": 7}, {"max_steps": 4}), "quick").capacity
    assert quick.max_steps == 4


def test_without_a_capacity_table_a_search_is_refused():
    with pytest.raises(ConfigError, match=r"needs the \[capacity\] table"):
        parse_protocol(_doc(None), "full")


def test_an_unknown_capacity_key_is_named():
    with pytest.raises(ConfigError, match=r"\[capacity\] unknown key 'max_stepz'"):
        parse_protocol(_doc({"max_stepz": 3}), "full")


@pytest.mark.parametrize("number", SEARCHING)
def test_every_searching_experiment_records_the_whole_resolved_protocol(number):
    e = EXPERIMENTS[number]
    for profile in e.profiles():
        config = e.load(e.config, profile)
        protocol = getattr(config, "protocol", config)
        recorded = protocol.to_dict()["capacity"]
        # the manifest holds values, every key of them, not a reference to the base
        assert set(recorded) == set(CapacityParams.model_fields)
        assert CapacityParams(**recorded) == protocol.capacity
