"""The deployed lab as the experiments see it.

The Ansible inventory is the one source of truth for topology; the deploy resolves it (CPU
sets computed from core counts, pids, affinity read back) and writes ``topology.json`` to the
controller's state dir. Experiments read only that file: no second topology, no ports here.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments.constants import REPO_ROOT
from experiments.results import slug

SERVICES = ("redis", "model-sync", "model-async", "scoring-sync", "scoring-async")


class TopologyError(RuntimeError):
    """The deployed topology is missing or malformed; the message says what to do."""


def state_dir() -> Path:
    return Path(os.environ.get("LAB_STATE_DIR") or REPO_ROOT / ".lab")


@dataclass(frozen=True)
class LoadGenerator:
    host: str
    address: str
    cpus: list[int]
    local: bool
    entry: dict[str, Any] = field(default_factory=dict)  # as topology.json has it


@dataclass(frozen=True)
class Topology:
    raw: dict[str, Any]
    services: dict[str, dict[str, Any]]
    loadgens: list[LoadGenerator]
    monitors: list[dict[str, Any]] = field(default_factory=list)

    def url(self, service: str) -> str:
        return self.services[service]["url"]

    def scoring_url(self, arch: str) -> str:
        return self.url(f"scoring-{arch}")

    @property
    def hosts(self) -> list[str]:
        return sorted({s["host"] for s in self.services.values()})

    @property
    def label(self) -> str:
        """For result folder names: the single host's name, or how many hosts."""
        hosts = self.hosts
        return f"single-{slug(hosts[0])[:32]}" if len(hosts) == 1 else f"multi-{len(hosts)}hosts"


def _is_local(entry: dict[str, Any]) -> bool:
    return entry.get("ansible_connection") == "local" or entry.get("host") in {
        "localhost", "127.0.0.1"}


def parse(raw: dict[str, Any], source: str = "topology.json") -> Topology:
    if raw.get("format_version") != 1:
        raise TopologyError(f"{source}: unsupported format_version {raw.get('format_version')!r}")
    services = raw.get("services") or {}
    missing = [name for name in SERVICES if name not in services]
    if missing:
        raise TopologyError(f"{source}: services missing: {', '.join(missing)}")
    for name in SERVICES:
        for key in ("host", "url", "cpus"):
            if key not in services[name]:
                raise TopologyError(f"{source}: service {name!r} has no {key!r}")
    loadgens = [
        LoadGenerator(entry["host"], entry.get("address", "127.0.0.1"),
                      [int(c) for c in entry.get("cpus") or []], _is_local(entry), entry)
        for entry in raw.get("loadgen") or []
    ]
    if not loadgens:
        raise TopologyError(f"{source}: no host in the loadgen group")
    return Topology(raw, services, loadgens, list(raw.get("monitor") or []))


def load(path: Path | None = None) -> Topology:
    path = path or state_dir() / "topology.json"
    if not path.exists():
        raise TopologyError(
            f"{path} not found: deploy the lab first (make deploy, or "
            "cd ansible && ansible-playbook deploy.yml)"
        )
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise TopologyError(f"{path} is not valid JSON: {exc}") from None
    return parse(raw, str(path))
