"""Collect what a run needs from every monitored host: a hardware report written now (lshw,
system facts, each lab process's CPU affinity as deployed) and the resource samples, cut to
the run's window. One ansible-playbook call fetches from every host, local or remote."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

from experiments.constants import ANSIBLE_DIR
from experiments.results import RunFolder
from hardware.summary import cut, load_samples, write_resources
from services.profiling import SESSION_SUFFIX

# Samples kept either side of the measured window, so plots show the lab at rest around it.
WINDOW_MARGIN_S = 5.0


class CollectError(RuntimeError):
    pass


def fetch(run: RunFolder, inventory: str | None, ansible_playbook: str,
          since: float | None = None) -> Path:
    """Run ansible/collect.yml; returns the staging dir (<host>/hardware, <host>/monitor,
    <host>/profiles.tar.gz with the profiles written since `since`)."""
    staging = run.raw / ".collect"
    staging.mkdir()
    extra = {"collect_dest": str(staging.resolve()), "collect_id": run.name}
    if since is not None:  # generous: the playbook runs a while later; store() cuts exactly
        extra["collect_profiles_max_age_s"] = int(time.time() - since + 600)
    cmd = [ansible_playbook, "collect.yml", "-e", json.dumps(extra)]
    if inventory:
        cmd[1:1] = ["-i", inventory]
    done = subprocess.run(cmd, cwd=ANSIBLE_DIR, capture_output=True, text=True, timeout=900)
    (run.raw / "collect.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise CollectError(f"ansible collect.yml failed (exit {done.returncode}); see "
                           f"{run.rel(run.raw / 'collect.log')}")
    return staging


def compress_sessions(directory: Path) -> list[Path]:
    """gzip every pyinstrument session under directory, in place (the report reads either).
    A window under heavy load writes several MB of repeated frames per worker (9.4 MB at
    150 users), more than a committed result file may hold; gzip takes it ~10x down. No
    timestamp in the gzip header: the same session compresses to the same bytes."""
    out = []
    for path in sorted(directory.rglob(f"*{SESSION_SUFFIX}")):
        packed = path.with_name(path.name + ".gz")
        with path.open("rb") as src, packed.open("wb") as raw, \
                gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as dst:
            shutil.copyfileobj(src, dst)
        path.unlink()
        out.append(packed)
    return out


def store(run: RunFolder, staging: Path, start: float, end: float) -> dict[str, list[str]]:
    """Move fetched files into raw/hardware/<host>/ and raw/resources/<host>.csv (with the
    connection records apart, in <host>.tcp.jsonl: hardware/tcplog.py), and the profiles
    written since `start` into raw/profiles/<host>/."""
    stored: dict[str, list[str]] = {"hardware": [], "resources": [], "profiles": []}
    for host_dir in sorted(p for p in staging.iterdir() if p.is_dir()):
        host = host_dir.name
        if (host_dir / "profiles.tar.gz").exists():  # experiment 1: raw/profiles/<host>/
            target = run.profiles_dir() / host
            target.mkdir(parents=True, exist_ok=True)
            with tarfile.open(host_dir / "profiles.tar.gz") as archive:
                members = [m for m in archive.getmembers() if m.mtime >= start - WINDOW_MARGIN_S]
                archive.extractall(target, members=members, filter="data")
            compress_sessions(target)
            stored["profiles"].append(run.rel(target))
        for report_file in sorted((host_dir / "hardware").glob("*")):
            target = run.hardware_dir(host) / report_file.name
            shutil.move(report_file, target)
            stored["hardware"].append(run.rel(target))
        samples = []
        # A restarted sampler leaves several files; together they are one time series.
        for part in sorted((host_dir / "monitor").glob("samples*.jsonl")):
            samples.extend(load_samples(part))
        samples.sort(key=lambda s: s["t"])
        window = cut(samples, start - WINDOW_MARGIN_S, end + WINDOW_MARGIN_S)
        if window:
            for written in write_resources(window, run.resources_dir() / f"{host}.csv"):
                stored["resources"].append(run.rel(written))
    shutil.rmtree(staging)
    return stored


def collect(run: RunFolder, inventory: str | None, ansible_playbook: str,
            start: float, end: float) -> dict[str, list[str]]:
    return store(run, fetch(run, inventory, ansible_playbook, since=start), start, end)
