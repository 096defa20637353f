"""CPU sets in the notation of ``taskset -c`` and cpusets ("0-2,5"), parsed and formatted in
one place for the whole project. (The Ansible filter plugin and the host-side lab_procs.py
keep their own copies: Ansible loads them outside this project's environment.)"""

from __future__ import annotations

from collections.abc import Iterable


def parse_cpu_list(spec: str | Iterable[int]) -> list[int]:
    """"0-2,5" (or an iterable of CPU numbers) -> [0, 1, 2, 5], sorted and unique.
    Raises ValueError naming the bad part."""
    if not isinstance(spec, str):
        return sorted({int(c) for c in spec})
    cpus: set[int] = set()
    for part in spec.split(","):
        low, dash, high = part.strip().partition("-")
        if not low.isdigit() or (dash and not high.isdigit()):
            raise ValueError(f"bad CPU list {spec!r}: {part!r} is not a CPU or a range")
        if high and int(high) < int(low):
            raise ValueError(f"bad CPU list {spec!r}: range {part!r} is reversed")
        cpus.update(range(int(low), int(high or low) + 1))
    return sorted(cpus)


def format_cpu_list(cpus: Iterable[int] | None) -> str:
    """[0, 1, 2, 5] -> "0-2,5"; None -> "?" (unknown), [] -> "-" (none)."""
    if cpus is None:
        return "?"
    numbers = sorted(set(cpus))
    if not numbers:
        return "-"
    parts = []
    start = prev = numbers[0]
    for cpu in numbers[1:] + [None]:
        if cpu is not None and cpu == prev + 1:
            prev = cpu
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if cpu is not None:
            start = prev = cpu
    return ",".join(parts)
