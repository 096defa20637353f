"""The one way an experiment's TOML is read: parse the file, resolve a profile, check every key.

Every experiment keeps its config beside its code (``experiments/<package>/config.toml``) with
the same top: ``format_version``, ``experiment``, ``description``, ``default_profile``, the base
tables, and ``[profiles.<name>]`` override tables. A profile is deep-merged onto the base
tables one way for all (``resolve``), after the profile it names in ``extends`` (if any);
``full`` is the file as written. ``parse_document`` is the loader every experiment goes
through: it checks the file's keys, resolves the profile once and hands the merged tables to
the experiment's ``build`` with a ``Checker``, which refuses unknown keys and raises a
``ConfigError`` naming the file, the profile and the key; with ``check_all`` every other
profile is built too. The typed config itself is a pydantic model (``Table``: frozen, unknown
keys refused, numbers never taken from booleans or strings, ranges declared with ``Field``);
``Checker.validate`` builds one and turns pydantic's errors into that one line.

    timeit = parse(Timeit, read(path), "quick", source=str(path), top=..., allowed=..., flat=...)
    protocol = parse_document(data, "quick", source=str(path), top=TOP_KEYS,
                              allowed=PROFILE_KEYS, build=protocol_from)
"""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Strict, ValidationError

FORMAT_VERSION = 1
HEADER_KEYS = frozenset({"format_version", "experiment", "description", "default_profile",
                         "profiles"})
T = TypeVar("T")
M = TypeVar("M", bound="Table")

# Strict scalars: TOML's true is not 1, "5" is not 5 (an int is still a fine float).
Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]
Str = Annotated[str, Strict()]


class Table(BaseModel):
    """A typed, frozen config table: unknown keys refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ConfigError(ValueError):
    """An experiment config is malformed: the message names the file, profile, key and value."""


class Checker:
    """Reads tables of one config file (and profile), naming every bad key or value."""

    def __init__(self, source: str, profile: str | None = None):
        self.source, self.profile = source, profile

    def fail(self, where: str, msg: str) -> ConfigError:
        profile = f" (profile {self.profile})" if self.profile else ""
        return ConfigError(f"{self.source}{profile}: [{where}] {msg}")

    def validate(self, model: type[M], table: dict[str, Any], where: str) -> M:
        """``model`` built from ``table``; the first error names the table, key and value."""
        try:
            return model.model_validate(table)
        except ValidationError as exc:
            raise self.error(exc.errors()[0], where) from None

    def error(self, e: Any, where: str) -> ConfigError:
        """One of pydantic's errors as one line naming the table, key and value."""
        loc = [str(x) for x in e["loc"]]
        key = loc[-1] if loc else "?"
        parent = ".".join(loc[:-1])
        table = parent if where == "top level" and parent else ".".join(
            x for x in (where, parent) if x)
        ctx = e.get("ctx") or {}
        bound = next(((op, ctx[k]) for k, op in (("ge", ">="), ("gt", ">"), ("le", "<="),
                                                  ("lt", "<")) if k in ctx), None)
        if e["type"] == "extra_forbidden":
            return self.fail(table, f"unknown key {key!r}")
        if e["type"] == "missing":
            return self.fail(table, f"missing key {key!r}")
        if bound:
            return self.fail(table, f"{key} = {e['input']!r}: must be {bound[0]} {bound[1]:g}")
        if e["type"] == "literal_error":
            return self.fail(table, f"{key} = {e['input']!r}: expected one of "
                                    f"{ctx.get('expected')}")
        msg = e["msg"].removeprefix("Value error, ")
        return self.fail(table, f"{key} = {e['input']!r}: {msg[:1].lower()}{msg[1:]}")

    def keys(self, table: Any, where: str, allowed: set[str] | frozenset[str]) -> dict:
        if not isinstance(table, dict):
            raise self.fail(where, f"expected a table, got {table!r}")
        unknown = sorted(set(table) - set(allowed))
        if unknown:
            raise self.fail(
                where, f"unknown key {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})"
            )
        return table

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


def _profile_table(data: dict[str, Any], name: str, c: Checker,
                   allowed: set[str] | frozenset[str], seen: tuple[str, ...] = ()) -> dict:
    """What profile ``name`` changes in the base tables: its own table over the one it
    ``extends`` (``extends = "quick"``; ``full`` is the base itself), checked key by key."""
    if name == "full" and name not in data.get("profiles", {}):
        return {}
    if name in seen:
        raise Checker(c.source, name).fail(f"profiles.{name}", "extends = "
                                           f"{seen[-1]!r}: profiles extend each other in a "
                                           f"circle ({' -> '.join((*seen, name))})")
    table = data["profiles"][name]
    pc = Checker(c.source, name)
    if not isinstance(table, dict):
        raise pc.fail(f"profiles.{name}", f"expected a table, got {table!r}")
    own = {k: v for k, v in table.items() if k != "extends"}
    pc.keys(own, f"profiles.{name}", allowed)
    parent = table.get("extends")
    if parent is None:
        return own
    if not isinstance(parent, str) or (parent not in data["profiles"] and parent != "full"):
        raise pc.fail(f"profiles.{name}", f"extends = {parent!r}: no such profile (have: "
                                          f"{', '.join(profiles_of(data))})")
    return merge(_profile_table(data, parent, c, allowed, (*seen, name)), own)


def resolve(data: dict[str, Any], profile: str | None, *, source: str,
            allowed: set[str] | frozenset[str]) -> tuple[dict[str, Any], str]:
    """(the base tables with ``profile``'s overrides merged in, the profile's name).
    ``profile`` None means the file's default_profile; ``allowed`` are the keys a profile may
    override; a profile may extend another (its overrides first, then its own)."""
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
    override = _profile_table({**data, "profiles": profiles}, profile, c, allowed)
    return merge({k: v for k, v in data.items() if k != "profiles"}, override), profile


def parse_document(data: dict[str, Any], profile: str | None, *, source: str,
                   top: set[str] | frozenset[str], allowed: set[str] | frozenset[str],
                   build: Callable[[dict[str, Any], Checker], T], check_all: bool = True) -> T:
    """The one way every experiment's config is read: the file's keys checked (``top``
    besides the header), ``profile`` resolved once (``resolve``), and ``build`` making the
    typed config from the merged tables with a Checker naming the file and the profile. With
    check_all, every other profile is resolved and built too, so a typo in any profile fails
    whichever one is run."""
    Checker(source).keys(data, "top level", HEADER_KEYS | top)
    merged, profile = resolve(data, profile, source=source, allowed=allowed)
    out = build(merged, Checker(source, profile))
    if check_all:
        for other in profiles_of(data):
            if other != profile:
                build(resolve(data, other, source=source, allowed=allowed)[0],
                      Checker(source, other))
    return out


def parse(model: type[M], data: dict[str, Any], profile: str | None, *, source: str,
          top: set[str] | frozenset[str], allowed: set[str] | frozenset[str],
          flat: dict[str, set[str]], check_all: bool = True) -> M:
    """``model`` for ``profile`` of a config whose tables map onto the model's fields: ``top``
    are the keys the file may have besides the header, ``allowed`` those a profile may
    override, ``flat`` the tables (and their keys) whose values sit at the model's top
    (``request.payload``, say). With check_all, every other profile is parsed too."""

    def build(merged: dict[str, Any], c: Checker) -> M:
        fields = {k: v for k, v in merged.items() if k not in HEADER_KEYS | set(flat)}
        for table, keys in flat.items():
            fields.update(c.keys(merged.get(table, {}), table, keys))
        return c.validate(model, {**fields, "experiment": merged.get("experiment"),
                                  "description": merged.get("description", ""),
                                  "profile": c.profile, "source": source}, "top level")

    return parse_document(data, profile, source=source, top=top, allowed=allowed, build=build,
                          check_all=check_all)
