"""The one config loader (experiments.config.parse_document) every experiment's config goes
through: every profile of every config.toml resolves; a profile may extend another; an unknown
key is refused with the file, the profile and the key named."""

from __future__ import annotations

import tomllib

import pytest

from experiments.config import ConfigError
from experiments.protocol import parse_protocol
from experiments.registry import EXPERIMENTS


@pytest.mark.parametrize("number", sorted(EXPERIMENTS))
def test_every_profile_of_every_config_loads(number):
    e = EXPERIMENTS[number]
    profiles = e.profiles()
    assert {"full", "quick", "smoke"} <= set(profiles)
    for profile in profiles:
        config = e.load(e.config, profile)
        assert getattr(config, "profile", None) == profile
        assert str(e.config) in getattr(config, "source", "")


@pytest.mark.parametrize("number", sorted(EXPERIMENTS))
def test_an_unknown_key_names_the_file_the_profile_and_the_key(number, tmp_path):
    e = EXPERIMENTS[number]
    bad = tmp_path / "config.toml"
    bad.write_text(e.config.read_text() + "\n[profiles.quick.bogus_table]\nx = 1\n")
    with pytest.raises(ConfigError) as err:
        e.load(bad, "smoke")  # every profile is checked, whichever one is run
    message = str(err.value)
    assert str(bad) in message and "(profile quick)" in message
    assert "unknown key 'bogus_table'" in message


def _exp3() -> dict:
    with EXPERIMENTS["3"].config.open("rb") as f:
        return tomllib.load(f)


def test_a_profile_extends_another_and_changes_what_it_names():
    data = _exp3()
    data["profiles"]["quicker"] = {"extends": "quick", "repeats": 1,
                                   "capacity": {"max_steps": 3}}
    quick, quicker = parse_protocol(data, "quick"), parse_protocol(data, "quicker")
    assert quicker.profile == "quicker" and quicker.repeats == 1
    assert quicker.capacity.max_steps == 3
    # everything else is quick's, not the base's
    assert quicker.scenarios == quick.scenarios
    assert quicker.capacity.hold_s == quick.capacity.hold_s
    assert quicker.analysis == quick.analysis


@pytest.mark.parametrize("profiles, message", [
    ({"a": {"extends": "nope"}}, r"\(profile a\): \[profiles.a\] extends = 'nope': no such"),
    ({"a": {"extends": "b"}, "b": {"extends": "a"}}, "extend each other in a circle"),
    ({"a": {"extends": "quick", "repeat": 2}}, r"\(profile a\).*unknown key 'repeat'"),
])
def test_bad_extends_are_named(profiles, message):
    data = _exp3()
    data["profiles"].update(profiles)
    with pytest.raises(ConfigError, match=message):
        parse_protocol(data, "a", source="experiment3.toml")
