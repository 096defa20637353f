"""Jinja filters for CPU sets in the scoring-lab inventories and roles.

CPU sets are strings in `taskset -c` list syntax ("0", "0-1", "2,3", "0-2,5").

- ``"0-2,5" | lab_cpu_list`` -> ``[0, 1, 2, 5]`` (sorted, unique; raises on bad syntax).
- ``[0, 1, 3] | lab_cpu_set`` -> ``"0-1,3"`` (the inverse, compact form).
- ``ansible_facts.processor_nproc | lab_cpu_layout`` -> the single-host layout::

      {"loadgen": "<last core>", "data": "<Redis + model APIs>", "scoring": "<scoring handlers>",
       "all": "0-<n-1>", "warning": "" | "<why the layout is not disjoint>"}

  The load generator gets the last core. With >= 4 cores the other cores are split in two halves:
  Redis and the model APIs on the first (smaller) half, the scoring handlers on the second. With
  2-3 cores everything but the load generator shares the remaining cores, and with 1 core
  everything runs on core 0 (``warning`` says so).
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

# A copy of hardware/cpus.py's parsing, on purpose: Ansible loads filter plugins in its own
# interpreter and module path, where the project's packages are not importable, and these
# filters must raise AnsibleFilterError for a bad inventory value.


def _as_int(text: str, spec: object) -> int:
    text = text.strip()
    if not text.isdigit():
        raise AnsibleFilterError(f"bad CPU set {spec!r}: {text!r} is not a CPU number")
    return int(text)


def lab_cpu_list(spec: object) -> list[int]:
    """Parse a taskset -c list ("0-2,5") into a sorted list of unique ints."""
    if isinstance(spec, int) and not isinstance(spec, bool):
        spec = str(spec)
    if isinstance(spec, (list, tuple)):
        cpus = {_as_int(str(item), spec) for item in spec}
        return sorted(cpus)
    if not isinstance(spec, str) or not spec.strip():
        raise AnsibleFilterError(
            f"bad CPU set {spec!r}: expected a string like '0', '0-1' or '2,3'"
        )
    cpus: set[int] = set()
    for part in spec.split(","):
        if "-" in part:
            low_text, high_text = part.split("-", 1)
            low, high = _as_int(low_text, spec), _as_int(high_text, spec)
            if high < low:
                raise AnsibleFilterError(f"bad CPU set {spec!r}: range {part!r} is reversed")
            cpus.update(range(low, high + 1))
        else:
            cpus.add(_as_int(part, spec))
    return sorted(cpus)


def lab_cpu_set(cpus: object) -> str:
    """Format CPUs (a list of ints or a CPU set string) as a compact taskset -c list."""
    numbers = lab_cpu_list(cpus)
    parts: list[str] = []
    start = prev = numbers[0]
    for cpu in numbers[1:] + [None]:
        if cpu is not None and cpu == prev + 1:
            prev = cpu
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if cpu is not None:
            start = prev = cpu
    return ",".join(parts)


def _span(first: int, last: int) -> str:
    return str(first) if first == last else f"{first}-{last}"


def lab_cpu_layout(nproc: object) -> dict[str, str]:
    """The default single-host CPU layout for a machine with `nproc` usable cores."""
    try:
        count = int(nproc)
    except (TypeError, ValueError) as exc:
        raise AnsibleFilterError(f"lab_cpu_layout needs a core count, got {nproc!r}") from exc
    if count < 1:
        raise AnsibleFilterError(f"lab_cpu_layout needs a core count >= 1, got {count}")
    everything = _span(0, count - 1)
    if count == 1:
        return {
            "loadgen": "0",
            "data": "0",
            "scoring": "0",
            "all": everything,
            "warning": "1 core: every service and the load generator share core 0; "
            "measurements will be dominated by contention",
        }
    loadgen = str(count - 1)
    rest = count - 1
    if count < 4:
        shared = _span(0, rest - 1)
        return {
            "loadgen": loadgen,
            "data": shared,
            "scoring": shared,
            "all": everything,
            "warning": f"{count} cores: Redis, model APIs and scoring handlers share CPUs {shared}",
        }
    first_half = rest // 2
    return {
        "loadgen": loadgen,
        "data": _span(0, first_half - 1),
        "scoring": _span(first_half, rest - 1),
        "all": everything,
        "warning": "",
    }


class FilterModule:
    """Ansible filter plugin entry point."""

    def filters(self) -> dict[str, object]:
        return {
            "lab_cpu_list": lab_cpu_list,
            "lab_cpu_set": lab_cpu_set,
            "lab_cpu_layout": lab_cpu_layout,
        }
