"""Experiment 7's run: architectures (a scoring handler and the model server it calls) on
devices (services/device.py), each pair a ladder rung (experiments/lab/ladder.py deploys,
verifies and measures it, and restores the default build at the end), with the model's batch
counters read around every Locust run (experiments/exp7_batching/counters.py).

A point is one model build on one device: the model build names the model server the scoring
handlers call (`model_server`, the deployed topology's service; "" = each architecture's own
model API), the role variables that build it (`deploy_vars`, e.g. the micro-batcher's), and the
scoring architectures measured against it; the device sets that server's slots and per-item
cost through its role's variables (DEVICE_VARS). A model server with a role of its own that is
off by default (the BentoML service: SERVER_SWITCHES) is deployed by its points only: the
first deploy of such a point turns it on (the ladder's prerequisite deploy, so its address is
in the topology), the next point without it turns it off again.

    batching = load_batching("experiments/exp7_batching/config.toml", "quick")
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.config import Checker, ConfigError, Str, parse_document, read
from experiments.constants import ANSIBLE_DIR, ARCHS
from experiments.exp7_batching.counters import model_counters
from experiments.lab import topology as topology_mod
from experiments.lab.ladder import run as run_ladder
from experiments.lab.session import RunOptions
from experiments.ladder import Ladder, Variant, ladder_from, model_service_of
from experiments.protocol import PROFILE_KEYS, TOP_KEYS, with_capacity_base

__all__ = ["DEVICE_VARS", "SERVER_SWITCHES", "Batching", "Point", "load_batching",
           "parse_batching", "run_points"]

# Per model server: the role variables that set its device's slots and per-item cost. The
# lab's two model APIs share the model_api role (ansible/roles/model_api/defaults/main.yml).
DEVICE_VARS: dict[str, tuple[str, str]] = {
    "model-sync": ("model_api_device_slots", "model_api_device_per_item_ms"),
    "model-async": ("model_api_device_slots", "model_api_device_per_item_ms"),
    "model-bentoml": ("model_bentoml_device_slots", "model_bentoml_device_per_item_ms"),
}
# Model servers a role deploys only when asked (off in the default build): the variable that
# turns each on. A point on such a server sets it; a point on another server leaves it off, so
# the server runs (and takes its core's time) only while it is measured.
SERVER_SWITCHES: dict[str, str] = {"model-bentoml": "model_bentoml_enabled"}
_KEYS = {"devices", "models", "only_devices", "only_models", "only_scoring", "margin"}
_DEVICE_KEYS = {"slots", "per_item_ms", "description"}
_MODEL_KEYS = {"scoring", "model_server", "deploy_vars", "description"}
_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")


class Point(Variant):
    """One rung: a model build on a device, the scoring architectures measured against it."""

    model: Str = ""
    device: Str = ""
    slots: int = 0
    # Ansible role variables of the model build and its device (-e), checked against the
    # roles' defaults when the config loads.
    role_vars: dict[str, Any] = {}
    # The model server the scoring handlers call ("" = each architecture's own model API).
    model_server: Str = ""

    def model_service(self, arch: str) -> str:
        return model_service_of(self.model_server, self.archs, arch)

    def prerequisite_vars(self, services: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
        """A server the deployed topology lacks (BentoML, off by default) is deployed first,
        with this point's device and batching settings, the scoring handlers as they are."""
        if self.model_server and "url" not in (services.get(self.model_server) or {}):
            return {**super().deploy_vars(services), **self.role_vars}
        return None

    def deploy_vars(self, services: dict[str, dict[str, Any]]) -> dict[str, Any]:
        out = {**super().deploy_vars(services), **self.role_vars}
        if self.model_server:
            missing = [s for s in (self.model_server, *(f"model-{a}" for a in ARCHS))
                       if "url" not in (services.get(s) or {})]
            if missing:
                raise ConfigError(f"variant {self.name}: model server {missing[0]!r} is not in "
                                  f"the deployed topology (have: {', '.join(sorted(services))})")
            # the role's map by architecture, this build's server for the archs it measures
            out["scoring_handler_model_urls"] = {
                arch: services[self.model_server if arch in self.archs else f"model-{arch}"]
                ["url"] for arch in ARCHS}
        return out


@dataclass(frozen=True)
class Batching(Ladder):
    """The ladder of points and the tables they come from (recorded in the manifest)."""

    devices: dict[str, dict[str, Any]] | None = None
    models: dict[str, dict[str, Any]] | None = None
    margin: float = 0.10

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "batching": {
            "devices": self.devices, "models": self.models, "margin": self.margin}}


def role_variables(roles: Path = ANSIBLE_DIR / "roles") -> set[str]:
    """Every variable a role declares in its defaults (the names a deploy var may set)."""
    names = set()
    for defaults in roles.glob("*/defaults/main.yml"):
        names |= set(re.findall(r"^([a-z_][a-z0-9_]*):", defaults.read_text(), re.M))
    return names


def _table(c: Checker, where: str, x: Any) -> dict:
    if not isinstance(x, dict):
        raise c.fail(where, f"expected a table, got {x!r}")
    return x


def _name(c: Checker, where: str, name: str) -> str:
    if not _NAME.fullmatch(name):
        raise c.fail(where, f"{name!r}: a name is lower-case letters, digits and '-'")
    return name


def _devices(c: Checker, table: dict) -> dict[str, dict[str, Any]]:
    out = {}
    for name, t in _table(c, "batching.devices", table).items():
        where = f"batching.devices.{_name(c, 'batching.devices', name)}"
        c.keys(_table(c, where, t), where, _DEVICE_KEYS)
        slots, per_item = t.get("slots"), t.get("per_item_ms", 0.5)
        if isinstance(slots, bool) or not isinstance(slots, int) or slots < 0:
            raise c.fail(where, f"slots = {slots!r}: expected a whole number >= 0 (0: no limit)")
        if isinstance(per_item, bool) or not isinstance(per_item, int | float) or per_item < 0:
            raise c.fail(where, f"per_item_ms = {per_item!r}: expected a number >= 0")
        out[name] = {"slots": slots, "per_item_ms": float(per_item),
                     "description": str(t.get("description", ""))}
    if not out:
        raise c.fail("batching.devices", "no device defined")
    return out


def _models(c: Checker, table: dict, known_vars: set[str]) -> dict[str, dict[str, Any]]:
    out = {}
    for name, t in _table(c, "batching.models", table).items():
        where = f"batching.models.{_name(c, 'batching.models', name)}"
        c.keys(_table(c, where, t), where, _MODEL_KEYS)
        scoring = t.get("scoring")
        if (not isinstance(scoring, list) or not scoring or any(a not in ARCHS for a in scoring)
                or len(set(scoring)) != len(scoring)):
            raise c.fail(where, f"scoring = {scoring!r}: expected distinct architectures among "
                                f"{', '.join(ARCHS)}")
        server = c.string(t, where, "model_server", default="")
        for arch in scoring:
            if (server or f"model-{arch}") not in DEVICE_VARS:
                raise c.fail(where, f"model_server = {server!r}: no device variables known for "
                                    f"it (experiments/exp7_batching/run.py DEVICE_VARS has "
                                    f"{', '.join(DEVICE_VARS)})")
        deploy = _table(c, f"{where}.deploy_vars", t.get("deploy_vars", {}))
        if server in SERVER_SWITCHES and SERVER_SWITCHES[server] in deploy:
            raise c.fail(f"{where}.deploy_vars", f"{SERVER_SWITCHES[server]}: the point sets "
                                                 f"it (model_server = {server!r})")
        for key, value in deploy.items():
            if key not in known_vars:
                raise c.fail(f"{where}.deploy_vars", f"{key!r} is no role variable "
                                                     "(ansible/roles/*/defaults/main.yml)")
            if not isinstance(value, str | int | float | bool):
                raise c.fail(f"{where}.deploy_vars", f"{key} = {value!r}: expected a string, "
                                                     "number or boolean")
            if any(key in DEVICE_VARS[server or f"model-{a}"] for a in scoring):
                raise c.fail(f"{where}.deploy_vars", f"{key}: the device sets it "
                                                     "([batching.devices])")
        out[name] = {"scoring": list(scoring), "model_server": server,
                     "deploy_vars": dict(deploy), "description": str(t.get("description", ""))}
    if not out:
        raise c.fail("batching.models", "no model build defined")
    return out


def _only(c: Checker, table: dict, key: str, defined: dict) -> list[str]:
    chosen = table.get(key, list(defined))
    if not isinstance(chosen, list) or not chosen or not all(isinstance(x, str) for x in chosen):
        raise c.fail("batching", f"{key} = {chosen!r}: expected a non-empty list of names")
    unknown = [x for x in chosen if x not in defined]
    if unknown:
        raise c.fail("batching", f"{key}: unknown name {unknown[0]!r} (have: "
                                 f"{', '.join(defined)})")
    return [x for x in defined if x in chosen]  # in the tables' order, whatever the list's


def points_of(devices: dict, models: dict, only_devices: list[str], only_models: list[str],
              only_scoring: tuple[str, ...] = ARCHS) -> list[dict[str, Any]]:
    """The [[variants]] tables of the ladder: every chosen model build on every chosen device,
    devices outermost (a device's builds one after the other), in the tables' order, each
    measuring its scoring handlers among `only_scoring` (a build left with none is left out)."""
    out = []
    for dname in only_devices:
        device = devices[dname]
        for mname in only_models:
            model = models[mname]
            archs = [a for a in model["scoring"] if a in only_scoring]
            if not archs:
                continue
            server = model["model_server"]
            device_vars = {}
            for arch in archs:
                slots_var, per_item_var = DEVICE_VARS[server or f"model-{arch}"]
                device_vars.update({slots_var: device["slots"],
                                    per_item_var: device["per_item_ms"]})
            limit = f"{device['slots']} slot(s)" if device["slots"] else "no device limit"
            switch = {SERVER_SWITCHES[server]: True} if server in SERVER_SWITCHES else {}
            out.append({
                "name": f"{mname}-{dname}", "model": mname, "device": dname,
                "slots": device["slots"], "archs": archs,
                "description": f"{model['description'] or mname}, {limit}",
                "role_vars": {**switch, **model["deploy_vars"], **device_vars},
                "model_server": server})
    return out


def batching_from(merged: dict, c: Checker, scenario_names: Any = None) -> Batching:
    """The Batching of one resolved profile: [batching] (a profile's overrides merged in by the
    loader) made into points, the ladder and protocol from the rest."""
    merged = dict(merged)
    table = _table(c, "batching", merged.pop("batching", None) or {})
    c.keys(table, "batching", _KEYS)
    devices = _devices(c, table.get("devices", {}))
    models = _models(c, table.get("models", {}), role_variables())
    margin = table.get("margin", 0.10)
    if isinstance(margin, bool) or not isinstance(margin, int | float) or not 0 <= margin < 1:
        raise c.fail("batching.margin", f"{margin!r}: expected a fraction in [0, 1)")
    scoring = _only(c, table, "only_scoring", dict.fromkeys(ARCHS))
    points = points_of(devices, models, _only(c, table, "only_devices", devices),
                       _only(c, table, "only_models", models), tuple(scoring))
    if not points:
        raise c.fail("batching", f"no point left: no chosen model build measures "
                                 f"{', '.join(scoring)}")
    plain = [{k: v for k, v in p.items() if k in Variant.model_fields} for p in points]
    ladder = ladder_from({**merged, "variants": plain}, c, plain, scenario_names)
    variants = tuple(c.validate(Point, {**v.model_dump(), **p}, f"variants.{p['name']}")
                     for v, p in zip(ladder.variants, points, strict=True))
    return Batching(ladder.protocol, variants, ladder.source, devices=devices, models=models,
                    margin=float(margin))


def parse_batching(data: dict, profile: str | None = None, *,
                   source: str = "<experiment7>") -> Batching:
    """Validate experiment 7's TOML through the one loader (config.parse_document): [batching]
    here (a profile's [profiles.<name>.batching] merged onto it like any other table), the
    points' protocol by the ladder's (experiments/ladder.py)."""
    if "variants" in data:
        raise Checker(source).fail("variants", "experiment 7 makes its points from "
                                               "[batching]; no [[variants]] here")
    data = with_capacity_base(data)
    return parse_document(
        data, profile, source=source, top=TOP_KEYS | {"batching"},
        allowed=PROFILE_KEYS | {"batching"},
        build=lambda merged, c: batching_from(merged, c, data.get("scenarios")))


def load_batching(path: str | Path, profile: str | None = None) -> Batching:
    return parse_batching(read(path), profile, source=str(path))


def run_points(batching: Batching, options: RunOptions, finish) -> Path:
    """Every point deployed and measured as a ladder rung, the model's batch counters read
    around each Locust run; stops before anything is deployed when a point's model server is
    neither in the deployed topology nor one a role deploys on request (SERVER_SWITCHES)."""
    services = topology_mod.load().services
    for v in batching.variants:
        if v.model_server and v.model_server not in services.keys() | SERVER_SWITCHES.keys():
            raise ConfigError(f"variant {v.name}: model server {v.model_server!r} is not in the "
                              f"deployed topology (have: {', '.join(sorted(services))})")
    return run_ladder(batching, options, finish, step_hooks=(model_counters,))
