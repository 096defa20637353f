"""Compare two result folders, in the spirit of `pyperf compare_to`: for every headline figure
both runs have, A, B, B/A and whether the difference is significant given both runs' repeat
spreads ("not significant" said plainly). Reads only the folders (manifest.json, report.json,
raw/hardware/*/system.json), so committed runs compare on any machine.

It refuses runs of different experiments, or whose protocols disagree on anything they share
(a scenario's load, durations, analysis settings): their numbers answer different questions.
`across_protocols` (the CLI's --across-protocols) compares such runs anyway, each disagreement
printed first as a warning, so a run of a changed profile can still be set beside an old one.
It warns, and still compares, when the machines, kernels, package versions or topologies
differ, when one protocol has scenarios the other lacks, or when a run has no repeats (a
single value per figure cannot be tested: its row says so).

Each figure is one build's (a headline names its builds), so every row also says whether the
two runs agree on it, by one stated rule (agreement_rule): "agree" when B/A is within
1 +- tolerance (5 % by default), or when both runs have repeats and their ranges (min-max over
the repeats) overlap; otherwise "disagree". The tolerance is what the lab asks of the same build
on the same machine; the overlap lets a run whose own repeats spread wider than that not be
called inconsistent with another that lies inside its spread.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments.analysis.stats import compare as compare_samples

# Protocol keys that may differ between comparable runs: how often it was measured, not what.
RUN_COUNT_KEYS = frozenset({"repeats"})
# where the protocol was read from (the config file moved with the layout), not what it says
PROVENANCE_KEYS = frozenset({"source"})
# Two runs' values of one build agree within this relative difference (B/A in 1 +- it).
AGREE_TOLERANCE = 0.05


class CompareError(ValueError):
    """Two folders that cannot be compared, or a folder that is not a result."""


@dataclass
class RunData:
    path: Path
    manifest: dict[str, Any]
    report: dict[str, Any]
    systems: dict[str, dict[str, Any]]

    @property
    def name(self) -> str:
        return self.path.name


def load_run(path: str | Path) -> RunData:
    path = Path(path)
    docs = {}
    for name in ("manifest.json", "report.json"):
        file = path / name
        if not file.is_file():
            raise CompareError(f"{path}: no {name} (not a result folder, or its report was "
                               f"never written: python -m experiments report {path})")
        try:
            docs[name] = json.loads(file.read_text())
        except json.JSONDecodeError as exc:
            raise CompareError(f"{file}: not valid JSON ({exc})") from exc
    systems = {}
    for system in sorted(path.glob("raw/hardware/*/system.json")):
        try:
            systems[system.parent.name] = json.loads(system.read_text())
        except json.JSONDecodeError:
            continue
    return RunData(path, docs["manifest.json"], docs["report.json"], systems)


def figures(headline: Any, prefix: str = "") -> dict[str, list[float]]:
    """Every numeric headline figure as a list of per-repeat values, keyed by its dotted path.
    A repeat summary ({"values": [...], "median": ...}) gives its values; a bare number is
    one value (a run without repeats)."""
    out: dict[str, list[float]] = {}
    if isinstance(headline, Mapping):
        values = headline.get("values")
        if isinstance(values, list) and "median" in headline:
            out[prefix] = [float(v) for v in values if _number(v)]
            return out
        for key, value in headline.items():
            out.update(figures(value, f"{prefix}.{key}" if prefix else str(key)))
    elif _number(headline):
        out[prefix] = [float(headline)]
    return out


def lower_bounds(headline: Any, prefix: str = "") -> dict[str, str]:
    """Every headline figure that is only a lower bound (">= x",
    experiments.reporting.headline_capacity), keyed as `figures` keys numbers."""
    out: dict[str, str] = {}
    if isinstance(headline, Mapping):
        for key, value in headline.items():
            out.update(lower_bounds(value, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(headline, str) and headline.startswith(">="):
        out[prefix] = headline
    return out


def _number(value: Any) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value))


def _protocol_conflicts(a: Mapping, b: Mapping) -> tuple[list[str], list[str]]:
    """(conflicts, notes): values both protocols set differently, and scenarios only one has."""
    conflicts: list[str] = []
    notes: list[str] = []
    for key in sorted((set(a) | set(b)) - RUN_COUNT_KEYS - PROVENANCE_KEYS):
        if key not in a or key not in b:
            notes.append(f"protocol key {key!r} only in {'A' if key in a else 'B'}")
            continue
        if key == "scenarios":
            sa = {s["name"]: s for s in a[key]}
            sb = {s["name"]: s for s in b[key]}
            for name in sorted(set(sa) | set(sb)):
                if name not in sa or name not in sb:
                    notes.append(f"scenario {name!r} only in {'A' if name in sa else 'B'}")
                else:
                    # a key absent on one side and None on the other is the same setting
                    diff = sorted(k for k in set(sa[name]) | set(sb[name])
                                  if sa[name].get(k) != sb[name].get(k))
                    if diff:
                        conflicts.append(f"scenario {name!r} differs in {', '.join(diff)}")
        elif a[key] != b[key]:
            conflicts.append(f"protocol {key!r}: A {a[key]!r} vs B {b[key]!r}")
    return conflicts, notes


def _machine(run: RunData) -> dict[str, Any]:
    """The facts whose difference makes two runs' numbers incomparable as a like-for-like."""
    facts: dict[str, Any] = {}
    meta = run.manifest.get("metadata") or {}
    facts["kernel"] = meta.get("kernel")
    facts["python"] = meta.get("python_version")
    for host, system in run.systems.items():
        cpu = system.get("cpu") or {}
        facts[f"{host}: cpu"] = cpu.get("model")
        facts[f"{host}: cores"] = cpu.get("logical_threads")
        facts[f"{host}: memory"] = (system.get("memory") or {}).get("total_bytes")
    return facts


def _topology(run: RunData) -> dict[str, Any]:
    topo = run.manifest.get("topology") or {}
    out = {name: (svc.get("host"), svc.get("cpus"), svc.get("workers"))
           for name, svc in (topo.get("services") or {}).items()}
    out["loadgen"] = [(g.get("host"), g.get("cpus")) for g in topo.get("loadgen") or []]
    return out


def environment_warnings(a: RunData, b: RunData) -> list[str]:
    warnings = []
    for what, fa, fb in (("machine", _machine(a), _machine(b)),
                         ("topology", _topology(a), _topology(b))):
        for key in sorted(set(fa) | set(fb)):
            if fa.get(key) != fb.get(key):
                warnings.append(f"{what} differs: {key}: A {fa.get(key)!r} vs B {fb.get(key)!r}")
    pa = (a.manifest.get("metadata") or {}).get("packages") or {}
    pb = (b.manifest.get("metadata") or {}).get("packages") or {}
    changed = [f"{p} {pa.get(p)} -> {pb.get(p)}" for p in sorted(set(pa) | set(pb))
               if pa.get(p) != pb.get(p)]
    if changed:
        warnings.append("package versions differ: " + ", ".join(changed))
    for run, label in ((a, "A"), (b, "B")):
        if (run.manifest.get("metadata") or {}).get("git_dirty"):
            warnings.append(f"{label} was recorded from a dirty tree")
        if run.manifest.get("status") != "complete":
            warnings.append(f"{label} is not complete (status {run.manifest.get('status')!r})")
    return warnings


def agreement_rule(tolerance: float) -> str:
    return (f"agree when B/A is within 1 +- {tolerance:g} ({tolerance:.0%}), or when both runs "
            "have repeats and their ranges (min-max over the repeats) overlap; else disagree")


def agreement(va: list[float], vb: list[float], tolerance: float) -> tuple[bool | None, str]:
    """(agree, why) of one figure's per-repeat values in two runs, by agreement_rule; None
    when the ratio is undefined (A's median is 0)."""
    ma, mb = statistics.median(va), statistics.median(vb)
    if tolerance < 0:
        raise ValueError(f"tolerance = {tolerance}: expected >= 0")
    if not ma:
        return None, "no ratio (A is 0)"
    ratio = mb / ma
    if abs(ratio - 1) <= tolerance:
        return True, f"agree (within {tolerance:.0%})"
    ranged = len(va) >= 2 and len(vb) >= 2
    if ranged and min(va) <= max(vb) and min(vb) <= max(va):
        return True, (f"agree (ranges overlap: {min(va):.4g}-{max(va):.4g} and "
                      f"{min(vb):.4g}-{max(vb):.4g})")
    apart = "; ranges apart" if ranged else ""
    return False, f"disagree (B/A {ratio:.3f}, beyond {tolerance:.0%}{apart})"


@dataclass
class RunComparison:
    a: str
    b: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    tolerance: float = AGREE_TOLERANCE

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "agreement_rule": agreement_rule(self.tolerance),
                "rows": self.rows, "warnings": self.warnings}


def compare_runs(path_a: str | Path, path_b: str | Path, alpha: float = 0.05,
                 across_protocols: bool = False,
                 tolerance: float = AGREE_TOLERANCE) -> RunComparison:
    a, b = load_run(path_a), load_run(path_b)
    ea, eb = a.manifest.get("experiment"), b.manifest.get("experiment")
    if ea != eb:
        raise CompareError(f"different experiments: A is {ea!r}, B is {eb!r}")
    conflicts, notes = _protocol_conflicts(a.manifest.get("protocol") or {},
                                           b.manifest.get("protocol") or {})
    if conflicts and not across_protocols:
        raise CompareError("different protocols: " + "; ".join(conflicts)
                           + " (--across-protocols compares them anyway, with these as warnings)")
    crossed = [f"PROTOCOLS DIFFER, figures of these scenarios measure different loads: {c}"
               for c in conflicts]
    out = RunComparison(a.name, b.name,
                        warnings=[*crossed, *notes, *environment_warnings(a, b)],
                        tolerance=tolerance)
    ha, hb = a.report.get("headline") or {}, b.report.get("headline") or {}
    if ha.get("builds") != hb.get("builds"):  # e.g. default builds against best ones
        out.warnings.append(f"the headlines are of different builds: A {ha.get('builds')!r}, "
                            f"B {hb.get('builds')!r}; a figure of one name is not one build")
    fa, fb = figures(ha), figures(hb)
    single = [label for label, f in (("A", fa), ("B", fb))
              if f and max(len(v) for v in f.values()) < 2]
    if single:
        out.warnings.append(f"{' and '.join(single)} ran without repeats: one value per figure, "
                            "so no difference can be called significant")
    ba, bb = lower_bounds(ha), lower_bounds(hb)
    for key in sorted((set(fa) | set(ba)) & (set(fb) | set(bb)) & (set(ba) | set(bb))):
        # a lower bound says nothing about agreement: named, never weighed
        a_is = ba.get(key) or statistics.median(fa[key]) if fa.get(key) or key in ba else None
        b_is = bb.get(key) or statistics.median(fb[key]) if fb.get(key) or key in bb else None
        which = " and ".join(side for side, d in (("A", ba), ("B", bb)) if key in d)
        if which in ("A", "B"):  # a value against the other run's bound: does it respect it?
            bound = float((ba if which == "A" else bb)[key].removeprefix(">=").strip())
            value = b_is if which == "A" else a_is
            which += (f" only a lower bound ({'respected' if value >= bound else 'BROKEN'} "
                      f"by the other's {value:g})")
        else:
            which += " only lower bounds"
        out.rows.append({"figure": key, "a": a_is, "b": b_is, "n_a": len(fa.get(key, [])),
                         "n_b": len(fb.get(key, [])), "ratio": None, "p_value": None,
                         "significant": False, "verdict": "not testable",
                         "agree": None,
                         "agreement": f"not compared: {which}"})
    for key in sorted(set(fa) & set(fb)):
        va, vb = fa[key], fb[key]
        if not va or not vb:
            continue
        c = compare_samples(va, vb, alpha=alpha, label_a="A", label_b="B")
        ma, mb = statistics.median(va), statistics.median(vb)
        testable = len(va) >= 2 and len(vb) >= 2
        agree, why = agreement(va, vb, tolerance)
        out.rows.append({
            "figure": key,
            "a": ma, "b": mb, "n_a": len(va), "n_b": len(vb),
            "ratio": mb / ma if ma else None,
            "p_value": c.p_value if testable else None,
            "significant": bool(testable and c.significant),
            "verdict": c.verdict if testable else "not testable: one value on a side (no repeats)",
            "range_a": [min(va), max(va)], "range_b": [min(vb), max(vb)],
            "agree": agree, "agreement": why,
        })
    return out


def _cell(value: Any) -> str:
    return f"{value:>10.4g}" if _number(value) else f"{'-' if value is None else value:>10}"


def render(result: RunComparison) -> str:
    lines = [f"A: {result.a}", f"B: {result.b}",
             f"same build, two runs: {agreement_rule(result.tolerance)}", ""]
    lines += [f"warning: {w}" for w in result.warnings]
    if result.warnings:
        lines.append("")
    width = max((len(r["figure"]) for r in result.rows), default=6)
    lines.append(f"{'figure':<{width}}  {'A':>10}  {'B':>10}  {'B/A':>7}  agreement; verdict")
    for r in result.rows:
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.3f}x"
        lines.append(f"{r['figure']:<{width}}  {_cell(r['a'])}  {_cell(r['b'])}  {ratio:>7}  "
                     f"{r['agreement']}; {r['verdict']} (n = {r['n_a']}, {r['n_b']})")
    if not result.rows:
        lines.append("(no headline figure in common)")
    return "\n".join(lines)
