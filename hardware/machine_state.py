"""The machine settings that add noise to a benchmark, read from /proc and /sys, and the warnings
they call for (pyperf's `system show`, adapted to a lab whose services are pinned to CPU sets).

collect_* functions return fragments under "machine_state" for system.json (hardware.collect runs
them beside the other collectors; each may fail alone). noise_warnings() reads a system.json
document plus the lab's CPU sets and says, for each setting that adds noise, what is wrong and
the command that fixes it. Warnings, not errors: a shared CI machine cannot be tuned, and its
numbers are still worth having, with the caveat written beside them.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path

from hardware.cpus import format_cpu_list as fmt
from hardware.cpus import parse_cpu_list

PROC = Path("/proc")
SYS_CPU = Path("/sys/devices/system/cpu")
SYS_NODE = Path("/sys/devices/system/node")
SYS_THP = Path("/sys/kernel/mm/transparent_hugepage")

Fragment = dict

# Kernel command-line parameters that isolate CPUs from the scheduler, timer ticks and RCU.
ISOLATION_PARAMS = ("isolcpus", "nohz_full", "rcu_nocbs", "irqaffinity")
ASLR_MEANING = {0: "disabled", 1: "partial (stack, mmap, vdso)", 2: "full randomization"}


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def kernel_cpus(text: str | None) -> list[int]:
    """A CPU list as the kernel writes it in /sys and on its command line: "" (none) is
    empty, and isolcpus' flags before the list ("domain,managed_irq,2-3") are skipped."""
    parts = [p for p in (text or "").strip().split(",") if p[:1].isdigit()]
    return parse_cpu_list(",".join(parts)) if parts else []


def _selected(text: str | None) -> str | None:
    """The bracketed choice of a sysfs enum file ("always [madvise] never" -> "madvise")."""
    match = re.search(r"\[([^\]]+)\]", text or "")
    return match.group(1) if match else None


def collect_aslr() -> Fragment:
    value = int(_read(PROC / "sys" / "kernel" / "randomize_va_space") or "-1")
    return {"machine_state": {"aslr": {"value": value, "meaning": ASLR_MEANING.get(value)}}}


def collect_transparent_hugepages() -> Fragment:
    if not SYS_THP.is_dir():
        return {"machine_state": {"transparent_hugepages": None}}
    return {
        "machine_state": {
            "transparent_hugepages": {
                "enabled": _selected(_read(SYS_THP / "enabled")),
                "defrag": _selected(_read(SYS_THP / "defrag")),
            }
        }
    }


def collect_cpu_isolation() -> Fragment:
    cmdline = _read(PROC / "cmdline") or ""
    params = {}
    for word in cmdline.split():
        name, sep, value = word.partition("=")
        if sep and name in ISOLATION_PARAMS:
            params[name] = value
    nohz = _read(SYS_CPU / "nohz_full")  # absent on kernels built without NO_HZ_FULL
    return {
        "machine_state": {
            "isolation": {
                "isolated": kernel_cpus(_read(SYS_CPU / "isolated")),
                "nohz_full": None if nohz is None else kernel_cpus(nohz),
                "cmdline": params,
            }
        }
    }


def collect_cpu_topology() -> Fragment:
    """Per online CPU: its SMT siblings, core and package (what decides whether two pinned CPU
    sets share a physical core)."""
    cpus = {}
    for cpu in kernel_cpus(_read(SYS_CPU / "online")):
        topo = SYS_CPU / f"cpu{cpu}" / "topology"
        core = _read(topo / "core_id")
        package = _read(topo / "physical_package_id")
        cpus[str(cpu)] = {
            "siblings": kernel_cpus(_read(topo / "thread_siblings_list")) or [cpu],
            "core_id": None if core is None else int(core),
            "package_id": None if package is None else int(package),
        }
    return {"machine_state": {"cpus": cpus}}


def collect_numa() -> Fragment:
    nodes = {}
    for path in sorted(SYS_NODE.glob("node[0-9]*")):
        nodes[path.name.removeprefix("node")] = kernel_cpus(_read(path / "cpulist"))
    return {"machine_state": {"numa_nodes": nodes or None}}


def _interrupt_names() -> dict[str, tuple[str, int]]:
    """IRQ number -> (its name, how many times it fired) from /proc/interrupts."""
    lines = (_read(PROC / "interrupts") or "").splitlines()
    if not lines:
        return {}
    ncpu = len(lines[0].split())
    out = {}
    for line in lines[1:]:
        label, sep, rest = line.partition(":")
        label = label.strip()
        if not sep or not label.isdigit():
            continue  # NMI, LOC, ... are per-CPU, not routable
        fields = rest.split()
        counts = [int(f) for f in fields[:ncpu] if f.isdigit()]
        out[label] = (" ".join(fields[ncpu:][-1:]) or "?", sum(counts))
    return out


def collect_irq_affinity() -> Fragment:
    """Each routable IRQ with the CPUs allowed to serve it and the ones that actually do."""
    names = _interrupt_names()
    irqs = {}
    for path in sorted((PROC / "irq").glob("[0-9]*"), key=lambda p: int(p.name)):
        allowed = _read(path / "smp_affinity_list")
        if allowed is None:
            continue
        name, count = names.get(path.name, ("?", 0))
        irqs[path.name] = {
            "name": name,
            "count": count,
            "allowed": kernel_cpus(allowed),
            "effective": kernel_cpus(_read(path / "effective_affinity_list") or allowed),
        }
    default = _read(PROC / "irq" / "default_smp_affinity")
    return {"machine_state": {"irqs": irqs, "irq_default_affinity_mask": default}}


def collect_lscpu() -> Fragment:
    lscpu = shutil.which("lscpu")
    if lscpu is None:
        return {"machine_state": {"lscpu": None}, "warnings": ["lscpu: not installed"]}
    out = subprocess.run([lscpu, "--json"], capture_output=True, text=True, timeout=10, check=True)
    fields = {
        row["field"].rstrip(":"): row.get("data")
        for row in json.loads(out.stdout).get("lscpu", [])
    }
    return {"machine_state": {"lscpu": fields}}


COLLECTORS = (
    collect_aslr,
    collect_transparent_hugepages,
    collect_cpu_isolation,
    collect_cpu_topology,
    collect_numa,
    collect_irq_affinity,
    collect_lscpu,
)


# --- warnings ---------------------------------------------------------------------------------


def _core_of(state: Mapping, cpu: int) -> frozenset[int]:
    entry = (state.get("cpus") or {}).get(str(cpu)) or {}
    return frozenset(entry.get("siblings") or [cpu])


def noise_warnings(system: Mapping, cpu_sets: Mapping[str, Iterable[int]]) -> list[str]:
    """Warnings for one host's system.json, given the CPU sets of what runs on it.

    cpu_sets maps a label to its CPUs; the label "loadgen" is the load generator, every other
    label a lab service. Each warning names the setting, what it costs and the command to fix it.
    """
    sets = {label: set(cpus) for label, cpus in cpu_sets.items()}
    services = set().union(*(c for label, c in sets.items() if label != "loadgen"))
    loadgen = sets.get("loadgen", set())
    pinned = services | loadgen
    state = system.get("machine_state") or {}
    cpu = system.get("cpu") or {}
    out: list[str] = []

    governors = cpu.get("scaling_governor") or {}
    slow = sorted(
        f"{name}={gov}"
        for name, gov in governors.items()
        if gov != "performance" and int(name.removeprefix("cpu")) in pinned
    )
    if slow:
        out.append(
            f"CPU frequency governor is not 'performance' on pinned CPUs ({', '.join(slow)}): "
            "clock speed follows load, so latency depends on what ran before. Fix: "
            "`cpupower frequency-set -g performance` (or `python -m pyperf system tune`)."
        )
    turbo = cpu.get("turbo")
    if turbo and turbo.get("enabled"):
        out.append(
            f"Turbo boost is on ({turbo.get('source')}): the clock varies with temperature and "
            "with load on other cores. Fix: write 1 to /sys/devices/system/cpu/intel_pstate/"
            "no_turbo (intel_pstate) or 0 to /sys/devices/system/cpu/cpufreq/boost."
        )
    aslr = (state.get("aslr") or {}).get("value")
    if aslr is not None and aslr != 2:
        out.append(
            f"ASLR is {ASLR_MEANING.get(aslr, aslr)} (randomize_va_space={aslr}): every run gets "
            "the same memory layout, so a layout effect repeats instead of averaging out. "
            "Fix: `sysctl -w kernel.randomize_va_space=2`."
        )
    thp = (state.get("transparent_hugepages") or {}).get("enabled")
    if thp == "always":
        out.append(
            "Transparent huge pages are 'always': khugepaged compacts memory in the background "
            "and page faults may stall. Fix: `echo madvise > "
            "/sys/kernel/mm/transparent_hugepage/enabled`."
        )
    isolation = state.get("isolation") or {}
    isolated = set(isolation.get("isolated") or [])
    not_isolated = services - isolated
    if services and not_isolated:
        out.append(
            f"Service CPUs {fmt(not_isolated)} are not isolated (isolcpus/nohz_full unset for "
            "them): the kernel may schedule other tasks and timer ticks there. Fix: boot with "
            f"`isolcpus={fmt(services)} nohz_full={fmt(services)} rcu_nocbs={fmt(services)}`."
        )
    busy_irqs = sorted(
        (irq for irq in (state.get("irqs") or {}).items()
         if irq[1].get("count") and set(irq[1].get("effective") or []) & services),
        key=lambda item: -item[1]["count"],
    )
    if busy_irqs:
        named = ", ".join(f"{n} ({e['name']}, {e['count']})" for n, e in busy_irqs[:5])
        more = f" and {len(busy_irqs) - 5} more" if len(busy_irqs) > 5 else ""
        out.append(
            f"Interrupts are served on service CPUs {fmt(services)}: IRQ {named}{more}. "
            "Fix: `echo <other cpus> > /proc/irq/<n>/smp_affinity_list` for each "
            "(and stop irqbalance, or pass it --banirq)."
        )
    if loadgen and services:
        shared = loadgen & services
        if shared:
            out.append(
                f"The load generator and the services share CPUs {fmt(shared)}: the generator's "
                "CPU is taken from the system it measures. Give them disjoint CPU sets."
            )
        else:
            service_cores = {_core_of(state, c) for c in services}
            siblings = {c for c in loadgen if _core_of(state, c) in service_cores}
            if siblings:
                out.append(
                    f"Load-generator CPUs {fmt(siblings)} are SMT siblings of service CPUs: they "
                    "share one physical core's execution units and caches. Pin them to other "
                    "cores, or turn SMT off (`echo off > /sys/devices/system/cpu/smt/control`)."
                )
    nodes = state.get("numa_nodes") or {}
    spans = {node for node, cpus in nodes.items() if set(cpus) & services}
    if len(spans) > 1:
        out.append(
            f"The service CPUs span NUMA nodes {', '.join(sorted(spans))}: memory access cost "
            "depends on which node a page lands on. Pin each service within one node."
        )
    return out
