"""The one way an experiment's TOML is read: parse the file, resolve a profile, check every key.

Every experiment keeps its config beside its code (``experiments/<package>/config.toml``) with
the same top: ``format_version``, ``experiment``, ``description``, ``default_profile``, the base
tables, and ``[profiles.<name>]`` override tables. A profile is deep-merged onto the base
tables one way for all (``resolve``); ``full`` is the file as written. The experiment's own
parser then reads the merged table through a ``Checker``, which refuses unknown keys, checks
named ranges and raises a ``ConfigError`` naming the file, the profile and the key.

    data = read(path)
    merged, profile = resolve(data, profile, source=str(path), allowed=PROFILE_KEYS)
    c = Checker(str(path), profile)
    repeats = c.number(merged, "top level", "repeats", lo=2, integer=True)
"""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

FORMAT_VERSION = 1
HEADER_KEYS = frozenset({"format_version", "experiment", "description", "default_profile",
                         "profiles"})
T = TypeVar("T")


class ConfigError(ValueError):
    """An experiment config is malformed: the message names the file, profile, key and value."""


class Checker:
    """Reads tables of one config file (and profile), naming every bad key or value."""

    def __init__(self, source: str, profile: str | None = None):
        self.source, self.profile = source, profile

    def fail(self, where: str, msg: str) -> ConfigError:
        profile = f" (profile {self.profile})" if self.profile else ""
        return ConfigError(f"{self.source}{profile}: [{where}] {msg}")

    def keys(self, table: Any, where: str, allowed: set[str] | frozenset[str]) -> dict:
        if not isinstance(table, dict):
            raise self.fail(where, f"expected a table, got {table!r}")
        unknown = sorted(set(table) - set(allowed))
        if unknown:
            raise self.fail(
                where, f"unknown key {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})"
            )
        return table

    def number(self, table: dict, where: str, key: str, *, default: Any = None,
               lo: float | None = None, hi: float | None = None, lo_open: bool = False,
               integer: bool = False) -> Any:
        if key not in table:
            if default is None:
                raise self.fail(where, f"missing key {key!r}")
            return default
        v = table[key]
        ok = isinstance(v, int) if integer else isinstance(v, int | float)
        if isinstance(v, bool) or not ok:
            kind = "an integer" if integer else "a number"
            raise self.fail(where, f"{key} = {v!r}: expected {kind}")
        if lo is not None and (v <= lo if lo_open else v < lo):
            raise self.fail(where, f"{key} = {v!r}: must be {'>' if lo_open else '>='} {lo}")
        if hi is not None and v > hi:
            raise self.fail(where, f"{key} = {v!r}: must be <= {hi}")
        return v if integer else float(v)

    def string(self, table: dict, where: str, key: str, *, default: str | None = None,
               choices: tuple[str, ...] | None = None) -> str:
        v = table.get(key, default)
        if v is None:
            raise self.fail(where, f"missing key {key!r}")
        if not isinstance(v, str):
            raise self.fail(where, f"{key} = {v!r}: expected a string")
        if choices and v not in choices:
            raise self.fail(where, f"{key} = {v!r}: expected one of {', '.join(choices)}")
        return v

    def names(self, table: dict, where: str, key: str, allowed: tuple[str, ...],
              default: tuple[str, ...] | None = None) -> tuple[str, ...]:
        """A non-empty list of names out of ``allowed``."""
        value = table.get(key, list(default) if default is not None else None)
        if value is None:
            raise self.fail(where, f"missing key {key!r}")
        if not isinstance(value, list) or not value or any(x not in allowed for x in value):
            raise self.fail(where, f"{key} = {value!r}: expected a non-empty list of "
                                   f"{', '.join(allowed)}")
        return tuple(value)

    def numbers(self, table: dict, where: str, key: str, default: list[float]
                ) -> tuple[float, ...]:
        """A list of numbers (a request payload)."""
        value = table.get(key, default)
        if not isinstance(value, list) or not all(
                isinstance(x, int | float) and not isinstance(x, bool) for x in value):
            raise self.fail(where, f"{key} = {value!r}: expected a list of numbers")
        return tuple(float(x) for x in value)


def merge(base: dict, override: dict) -> dict:
    """``override`` deep-merged onto a copy of ``base`` (tables merge, other values replace)."""
    out = copy.deepcopy(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def read(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None


def profiles_of(data: dict[str, Any]) -> list[str]:
    """Names of the profiles a config defines (``full`` always included)."""
    profiles = data.get("profiles")
    return sorted(set(profiles if isinstance(profiles, dict) else {}) | {"full"})


def resolve(data: dict[str, Any], profile: str | None, *, source: str,
            allowed: set[str] | frozenset[str]) -> tuple[dict[str, Any], str]:
    """(the base tables with ``profile``'s overrides merged in, the profile's name).
    ``profile`` None means the file's default_profile; ``allowed`` are the keys a profile may
    override."""
    c = Checker(source)
    version = data.get("format_version", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise c.fail("top level", f"format_version = {version!r}: this code reads "
                                  f"{FORMAT_VERSION}")
    profiles = data.get("profiles", {})
    if not isinstance(profiles, dict):
        raise c.fail("profiles", f"expected a table, got {profiles!r}")
    profile = profile or c.string(data, "top level", "default_profile", default="full")
    if profile not in profiles and profile != "full":
        raise c.fail("profiles", f"unknown profile {profile!r} "
                                 f"(have: {', '.join(profiles_of(data))})")
    override = profiles.get(profile, {})
    Checker(source, profile).keys(override, f"profiles.{profile}", allowed)
    return merge({k: v for k, v in data.items() if k != "profiles"}, override), profile


def check_every_profile(data: dict[str, Any], parse: Callable[[str], T], profile: str) -> None:
    """Parse every other profile too, so a typo in any profile fails whichever one is run."""
    for other in profiles_of(data):
        if other != profile:
            parse(other)
