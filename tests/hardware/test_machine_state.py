"""Machine-state collectors read this machine (each checked against a second source: sysctl,
lscpu, /proc/interrupts, os.sched_getaffinity) and noise_warnings() on fixture documents."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from hardware import machine_state as ms
from hardware.collect import collect_system


def _lscpu_rows(columns: str) -> list[list[str]]:
    out = subprocess.run(["lscpu", f"-p={columns}"], capture_output=True, text=True, check=True)
    return [line.split(",") for line in out.stdout.splitlines() if not line.startswith("#")]


@pytest.mark.parametrize(
    ("text", "cpus"),
    [("", []), ("0", [0]), ("0-3", [0, 1, 2, 3]), ("1,3-4", [1, 3, 4]),
     ("domain,managed_irq,2-3", [2, 3]), (None, [])],
)
def test_kernel_cpus(text, cpus):
    assert ms.kernel_cpus(text) == cpus


def test_aslr_matches_sysctl():
    sysctl = shutil.which("sysctl") or "/usr/sbin/sysctl"
    expected = int(subprocess.check_output([sysctl, "-n", "kernel.randomize_va_space"]))
    aslr = ms.collect_aslr()["machine_state"]["aslr"]
    assert aslr["value"] == expected
    assert aslr["meaning"] == ms.ASLR_MEANING[expected]


def test_transparent_hugepages_is_the_bracketed_choice():
    thp = ms.collect_transparent_hugepages()["machine_state"]["transparent_hugepages"]
    if not ms.SYS_THP.is_dir():
        assert thp is None
        return
    words = (ms.SYS_THP / "enabled").read_text().split()
    assert f"[{thp['enabled']}]" in words
    assert thp["enabled"] in {"always", "madvise", "never"}


def test_isolation_matches_kernel_command_line():
    iso = ms.collect_cpu_isolation()["machine_state"]["isolation"]
    cmdline = (ms.PROC / "cmdline").read_text()
    for name in ms.ISOLATION_PARAMS:
        assert (name in iso["cmdline"]) == (f"{name}=" in cmdline)
    # A CPU the kernel isolated is never one this (unpinned) test process was scheduled on
    # by default, unless we were pinned there on purpose.
    assert set(iso["isolated"]) <= set(range(os.cpu_count() or 1))


def test_cpu_topology_matches_lscpu():
    cpus = ms.collect_cpu_topology()["machine_state"]["cpus"]
    rows = _lscpu_rows("CPU,CORE,SOCKET")
    assert sorted(int(c) for c in cpus) == sorted(int(r[0]) for r in rows if r[1] != "")
    by_core: dict[tuple[str, str], set[int]] = {}
    for cpu, core, socket in rows:
        by_core.setdefault((socket, core), set()).add(int(cpu))
    for siblings in by_core.values():
        for cpu in siblings:
            assert set(cpus[str(cpu)]["siblings"]) == siblings


def test_numa_nodes_match_lscpu():
    nodes = ms.collect_numa()["machine_state"]["numa_nodes"]
    rows = _lscpu_rows("CPU,NODE")
    if not any(node for _, node in rows):
        assert nodes is None or len(nodes) <= 1
        return
    expected: dict[str, list[int]] = {}
    for cpu, node in rows:
        expected.setdefault(node, []).append(int(cpu))
    assert nodes == {k: sorted(v) for k, v in expected.items()}


def test_irq_affinity_matches_proc_interrupts():
    state = ms.collect_irq_affinity()["machine_state"]
    irqs = state["irqs"]
    assert irqs, "no routable IRQ found in /proc/irq"
    lines = (ms.PROC / "interrupts").read_text().splitlines()
    ncpu = len(lines[0].split())
    listed = {}
    for line in lines[1:]:
        label, _, rest = line.partition(":")
        if label.strip().isdigit():
            listed[label.strip()] = sum(int(x) for x in rest.split()[:ncpu])
    online = set(ms.kernel_cpus((ms.SYS_CPU / "online").read_text()))
    for number, entry in irqs.items():
        assert set(entry["effective"]) <= online
        if number in listed:
            # counts only grow between the two reads
            assert entry["count"] <= listed[number]


def test_lscpu_fields():
    if shutil.which("lscpu") is None:
        pytest.skip("lscpu is not installed")
    fields = ms.collect_lscpu()["machine_state"]["lscpu"]
    assert int(fields["CPU(s)"]) == os.cpu_count()
    assert fields["Architecture"] == os.uname().machine


def test_collect_system_includes_machine_state_without_warnings_from_it():
    doc = collect_system()
    state = doc["machine_state"]
    for key in ("aslr", "transparent_hugepages", "isolation", "cpus", "numa_nodes", "irqs"):
        assert key in state
    assert not [w for w in doc["warnings"] if w.split(":")[0] in {
        "aslr", "transparent_hugepages", "cpu_isolation", "cpu_topology", "numa", "irq_affinity"}]


# --- warnings on fixture documents -----------------------------------------------------------


def _doc(**state) -> dict:
    base = {
        "aslr": {"value": 2},
        "transparent_hugepages": {"enabled": "madvise"},
        "isolation": {"isolated": [0, 1, 2, 3], "nohz_full": [0, 1, 2, 3], "cmdline": {}},
        "cpus": {str(c): {"siblings": [c]} for c in range(4)},
        "numa_nodes": {"0": [0, 1, 2, 3]},
        "irqs": {},
    }
    base.update(state)
    cpu = {"scaling_governor": {f"cpu{c}": "performance" for c in range(4)},
           "turbo": {"source": "cpufreq/boost", "enabled": False}}
    return {"cpu": cpu, "machine_state": base}


def test_a_tuned_machine_with_disjoint_sets_has_no_warning():
    assert ms.noise_warnings(_doc(), {"scoring": [0], "model": [1], "loadgen": [2, 3]}) == []


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"aslr": {"value": 0}}, "randomize_va_space=2"),
        ({"transparent_hugepages": {"enabled": "always"}}, "transparent_hugepage/enabled"),
        ({"isolation": {"isolated": [], "cmdline": {}}}, "isolcpus=0-1"),
        ({"irqs": {"36": {"name": "virtio1-req.0", "count": 11637, "effective": [1]}}},
         "IRQ 36 (virtio1-req.0, 11637)"),
        ({"cpus": {"0": {"siblings": [0, 2]}, "1": {"siblings": [1, 3]},
                   "2": {"siblings": [0, 2]}, "3": {"siblings": [1, 3]}}}, "SMT siblings"),
        ({"numa_nodes": {"0": [0], "1": [1, 2, 3]}}, "NUMA nodes 0, 1"),
    ],
)
def test_each_noisy_setting_is_warned_with_its_fix(change, needle):
    warnings = ms.noise_warnings(_doc(**change), {"scoring": [0], "model": [1], "loadgen": [2, 3]})
    assert len(warnings) == 1, warnings
    assert needle in warnings[0]


def test_governor_and_turbo_warnings_name_only_pinned_cpus():
    doc = _doc()
    doc["cpu"]["scaling_governor"]["cpu3"] = "powersave"
    assert ms.noise_warnings(doc, {"scoring": [0], "loadgen": [1]}) == []
    (warning,) = ms.noise_warnings(doc, {"scoring": [0], "loadgen": [3]})
    assert "cpu3=powersave" in warning and "performance" in warning
    doc["cpu"]["turbo"]["enabled"] = True
    assert any("Turbo" in w for w in ms.noise_warnings(doc, {"scoring": [0]}))


def test_shared_cpus_between_services_and_load_generator():
    (warning,) = ms.noise_warnings(_doc(), {"scoring": [0, 1], "loadgen": [1]})
    assert "share CPUs 1" in warning


def test_idle_irqs_on_service_cpus_are_not_noise():
    doc = _doc(irqs={"40": {"name": "virtio3-config", "count": 0, "effective": [0]}})
    assert ms.noise_warnings(doc, {"scoring": [0], "loadgen": [1]}) == []
