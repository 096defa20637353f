"""Machine facts for system.json, one small collect_<source>() per source (pyperf's pattern).

Each collector returns a fragment of the document. A collector may fail alone: collect_system()
turns its exception into a line in "warnings" and carries on, because a report that lacks the
turbo state is still better than no report. Facts that simply do not exist on a machine (no
cpufreq in a VM, no SMT control) are null, not warnings: their absence is itself the fact.
"""

from __future__ import annotations

import os
import platform
import socket
import sys
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import psutil

from hardware import machine_state
from hardware.labprocs import find_lab_processes

FORMAT_VERSION = 1

SYS_CPU = Path("/sys/devices/system/cpu")
PROC_CPUINFO = Path("/proc/cpuinfo")
OS_RELEASE = Path("/etc/os-release")

Fragment = dict


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def collect_hostname() -> Fragment:
    return {"hostname": socket.gethostname()}


def collect_cpu_model() -> Fragment:
    text = PROC_CPUINFO.read_text()
    # x86 says "model name"; arm64 kernels say nothing per core, some say "Processor"/"Hardware".
    for key in ("model name", "processor name", "cpu model", "hardware", "processor"):
        for line in text.splitlines():
            name, sep, value = line.partition(":")
            value = value.strip()
            # "processor : 0" is the x86 core index, not a model.
            if sep and name.strip().lower() == key and value and not value.isdigit():
                return {"cpu": {"model": value}}
    raise ValueError(f"no CPU model name in {PROC_CPUINFO}")


def collect_cpu_counts() -> Fragment:
    physical = psutil.cpu_count(logical=False)
    logical = psutil.cpu_count(logical=True)
    frag: Fragment = {"cpu": {"physical_cores": physical, "logical_threads": logical}}
    if physical is None:
        frag["warnings"] = ["cpu_counts: psutil cannot tell the number of physical cores"]
    return frag


def collect_cpu_freq() -> Fragment:
    freq = psutil.cpu_freq()  # None when the kernel exposes no frequency (common in VMs)
    if freq is None:
        return {"cpu": {"freq_mhz": None}}
    # psutil reports 0.0 for a bound the kernel does not expose; 0 MHz would read as a fact.
    mhz = {"current": freq.current, "min": freq.min or None, "max": freq.max or None}
    return {"cpu": {"freq_mhz": mhz}}


def _per_cpu_files(name: str) -> dict[str, str] | None:
    values = {}
    for path in sorted(SYS_CPU.glob(f"cpu[0-9]*/cpufreq/{name}"), key=_cpu_index):
        value = _read(path)
        if value is not None:
            values[path.parent.parent.name] = value
    return values or None


def _cpu_index(path: Path) -> int:
    return int(path.parent.parent.name.removeprefix("cpu"))


def collect_cpu_scaling() -> Fragment:
    governors = _per_cpu_files("scaling_governor")
    cur = _per_cpu_files("scaling_cur_freq")
    cur_khz = None if cur is None else {cpu: int(khz) for cpu, khz in cur.items()}
    return {"cpu": {"scaling_governor": governors, "scaling_cur_freq_khz": cur_khz}}


def collect_turbo() -> Fragment:
    # intel_pstate says "no_turbo" (1 = turbo off); acpi-cpufreq and amd say "boost" (1 = on).
    no_turbo = _read(SYS_CPU / "intel_pstate" / "no_turbo")
    if no_turbo is not None:
        return {"cpu": {"turbo": {"source": "intel_pstate/no_turbo", "enabled": no_turbo == "0"}}}
    boost = _read(SYS_CPU / "cpufreq" / "boost")
    if boost is not None:
        return {"cpu": {"turbo": {"source": "cpufreq/boost", "enabled": boost == "1"}}}
    return {"cpu": {"turbo": None}}


def collect_smt() -> Fragment:
    # "on", "off", "forceoff", "notsupported" or "notimplemented", verbatim from the kernel.
    return {"cpu": {"smt": _read(SYS_CPU / "smt" / "control")}}


def collect_memory() -> Fragment:
    mem = psutil.virtual_memory()
    return {"memory": {"total_bytes": mem.total, "available_bytes": mem.available}}


def collect_kernel() -> Fragment:
    u = platform.uname()
    return {
        "kernel": {
            "system": u.system,
            "release": u.release,
            "version": u.version,
            "machine": u.machine,
        }
    }


def collect_os() -> Fragment:
    for line in OS_RELEASE.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == "PRETTY_NAME":
            return {"os": value.strip().strip("\"'")}
    raise ValueError(f"no PRETTY_NAME in {OS_RELEASE}")


def collect_python() -> Fragment:
    return {
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "executable": sys.executable,
        }
    }


def collect_load_average() -> Fragment:
    return {"load_average": [round(x, 2) for x in os.getloadavg()]}


def collect_reporter_affinity() -> Fragment:
    # Shows whether the reporter (and so, usually, its Ansible role) ran inside a CPU set.
    return {"reporter_cpu_affinity": sorted(os.sched_getaffinity(0))}


def collect_lab_processes(run_dir: str | None = None) -> Fragment:
    entries = []
    warnings = []
    for lab in find_lab_processes(run_dir):
        proc = lab.proc
        try:
            with proc.oneshot():
                ppid = proc.ppid()
                cmdline = proc.cmdline()
                try:
                    affinity = sorted(proc.cpu_affinity())
                except psutil.AccessDenied:
                    affinity = None
                    warnings.append(f"lab_processes: cannot read CPU affinity of pid {proc.pid}")
        except psutil.NoSuchProcess:
            continue  # exited between discovery and now: it is no longer running
        except psutil.AccessDenied:
            warnings.append(f"lab_processes: access denied to pid {proc.pid}")
            continue
        entries.append(
            {
                "pid": proc.pid,
                "ppid": ppid,
                "service": lab.service,
                "run_dir": lab.run_dir,
                "cpu_affinity": affinity,
                "cmdline": cmdline,
            }
        )
    entries.sort(key=lambda e: (e["service"], e["pid"]))
    frag: Fragment = {"lab_processes": entries}
    if warnings:
        frag["warnings"] = warnings
    return frag


def default_collectors(run_dir: str | None = None) -> list[Callable[[], Fragment]]:
    return [
        collect_hostname,
        collect_cpu_model,
        collect_cpu_counts,
        collect_cpu_freq,
        collect_cpu_scaling,
        collect_turbo,
        collect_smt,
        collect_memory,
        collect_kernel,
        collect_os,
        collect_python,
        collect_load_average,
        collect_reporter_affinity,
        partial(collect_lab_processes, run_dir),
        *machine_state.COLLECTORS,
    ]


def _name(collector: Callable) -> str:
    fn = collector.func if isinstance(collector, partial) else collector
    return getattr(fn, "__name__", repr(fn)).removeprefix("collect_")


def _merge(doc: dict, fragment: Fragment) -> None:
    # One level deep: several collectors fill "cpu"; "warnings" accumulate.
    for key, value in fragment.items():
        if key == "warnings":
            doc["warnings"].extend(value)
        elif isinstance(value, dict) and isinstance(doc.get(key), dict):
            doc[key].update(value)
        else:
            doc[key] = value


def collect_system(
    run_dir: str | None = None,
    collectors: Iterable[Callable[[], Fragment]] | None = None,
) -> dict:
    """Build the system.json document. Never raises because of a single collector."""
    now = time.time()
    doc: dict = {
        "format_version": FORMAT_VERSION,
        "collected_at": datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds"),
        "collected_at_unix": now,
        "warnings": [],
    }
    for collector in collectors if collectors is not None else default_collectors(run_dir):
        try:
            _merge(doc, collector())
        except Exception as exc:  # noqa: BLE001 - one broken source must not sink the report
            doc["warnings"].append(f"{_name(collector)}: {type(exc).__name__}: {exc}")
    # Keep "warnings" last so a reader sees the facts first.
    doc["warnings"] = doc.pop("warnings")
    return doc
