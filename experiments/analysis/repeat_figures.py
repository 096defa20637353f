"""Headline figures over the repeats of a run: each figure's median, its spread (the range
under 5 repeats, the order-statistic interval of the median from 5, each labelled by
stats.interval_label), coefficient of variation and unstable flag (stats.repeat_summary), and
the comparison of two architectures at the repeat level.

The comparison pairs the architectures within each repeat (they ran back to back, in ABBA
order, on the same restarted services) and takes the per-repeat ratio B/A. From 5 repeats the
difference is significant when the order-statistic interval of the median ratio excludes 1, at
that interval's stated coverage (a sign test). Under 5 it is not tested: the ratios' range is
shown and whether every repeat lies on one side of 1 (with 3 repeats that happens by chance a
quarter of the time), never a confidence. One repeat: not testable.

    head = summarise_headlines([repeat1_head, repeat2_head, ...])   # {arch: {figure: ...}}
    rows = compare_repeats([repeat1_head, ...], ["sync", "async"], builds="default")
"""

from __future__ import annotations

import math
from typing import Any

from experiments.analysis.stats import (
    CV_LIMIT,
    MIN_REPEATS_FOR_INTERVAL,
    ORDER_STATISTIC,
    interval_label,
    percent,
    repeat_summary,
)

NOT_TESTABLE = "one repeat: not testable"


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _clean(d: dict) -> dict:
    """A repeat summary for JSON: NaN (no interval, no CV from one value) as None."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in d.items()}


def summary_of(values: list[Any]) -> dict[str, Any]:
    """The repeat summary dict of one figure's per-repeat values (non-numbers left out)."""
    return _clean(repeat_summary([v for v in values if _number(v)]).to_dict())


def _merge(values: list[Any]) -> Any:
    present = [v for v in values if v is not None]
    if not present:
        return None
    if all(isinstance(v, bool) for v in present):
        return all(present)
    if all(isinstance(v, dict) for v in present):
        keys = list(dict.fromkeys(k for v in present for k in v))
        return {k: _merge([v.get(k) for v in present]) for k in keys}
    if all(_number(v) for v in present):
        return summary_of(present)
    return list(values)  # statuses, "none <= N": one per repeat, as they were


def summarise_headlines(heads: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-repeat headlines ({arch: {figure: value}}) as one: a run of one repeat keeps its
    bare numbers (as runs before repeats); several give every numeric figure as a repeat
    summary {n, median, low, high, cv, unstable, values}, flags as all(), the rest as the
    list of per-repeat values."""
    if len(heads) == 1:
        return heads[0]
    keys = list(dict.fromkeys(k for h in heads for k in h))
    return {k: _merge([h.get(k) for h in heads]) for k in keys}


def compare_repeats(heads: list[dict[str, Any]], archs: list[str],
                    builds: str | None = None) -> dict[str, dict]:
    """{figure: {ratios, median, low, high, interval, confidence, significant, verdict}} of
    archs[1] / archs[0], one ratio per repeat that measured the figure on both. `builds`
    (e.g. "default") names which builds of the architectures the verdict compares.
    significant: True/False from 5 repeats (the interval of the median ratio excludes 1 or
    not), None under 5 (not tested at any stated confidence)."""
    if len(archs) < 2:
        return {}
    a, b = archs[:2]
    la, lb = (f"{builds} {a}", f"{builds} {b}") if builds else (a, b)
    figures = list(dict.fromkeys(
        k for h in heads for k, v in (h.get(a) or {}).items()
        if _number(v) and _number((h.get(b) or {}).get(k))))
    out: dict[str, dict] = {}
    for fig in figures:
        ratios = [h[b][fig] / h[a][fig] for h in heads
                  if _number((h.get(a) or {}).get(fig)) and _number((h.get(b) or {}).get(fig))
                  and h[a][fig] != 0]
        if not ratios:
            continue
        s = summary_of(ratios)
        if len(ratios) < 2:
            out[fig] = {**s, "ratios": ratios, "significant": None, "verdict": NOT_TESTABLE}
            continue
        head = f"{lb} {s['median']:.2f}x {la}"
        if s["interval"] == ORDER_STATISTIC:
            significant = s["low"] > 1 or s["high"] < 1
            conf = percent(s["confidence"])
            verdict = (f"{head}: significant (the {conf} interval of the median ratio "
                       "excludes 1)" if significant else
                       f"not significant (the {conf} interval of the median ratio includes 1)")
        else:
            significant = None
            side = ("above" if s["low"] > 1 else "below" if s["high"] < 1 else None)
            verdict = (f"{head}: all {len(ratios)} repeats {side} 1 (range {s['low']:.2f}-"
                       f"{s['high']:.2f}); too few repeats for a confidence"
                       if side else
                       f"repeats either side of 1 (range {s['low']:.2f}-{s['high']:.2f}): "
                       "no difference these repeats tell apart")
        out[fig] = {**s, "ratios": ratios, "significant": significant, "verdict": verdict}
    return out


def spread_text(s: dict[str, Any]) -> str:
    """A summary's low-high with what it is: "11.78-14.03 (range of 3)"."""
    if s.get("low") is None or s.get("high") is None:
        return ""
    return (f"{_f(s['low'], 2)}-{_f(s['high'], 2)} "
            f"({interval_label(s.get('interval') or '', s.get('confidence'), s['n'])})")


def spread_rule() -> str:
    """The sentence saying how every spread in a report was made."""
    return (f"the spread is the range (min-max) of the repeats under "
            f"{MIN_REPEATS_FOR_INTERVAL} repeats (no confidence claimed: the range of n values "
            "covers the median with probability 1 - 2^(1-n), 75 % at 3), and from "
            f"{MIN_REPEATS_FOR_INTERVAL} the distribution-free order-statistic interval of the "
            "median, labelled with its exact coverage (93.75 % at 5, 96.88 % at 6)")


def _f(v: Any, digits: int = 1) -> str:
    return "" if v is None or (isinstance(v, float) and not math.isfinite(v)) \
        else f"{v:.{digits}f}"


def repeat_section(manifest: dict[str, Any], heads: list[dict[str, Any]],
                   summary: dict[str, Any], comparisons: dict[str, dict],
                   archs: list[str]) -> list[str]:
    """The report's "Repeats" section: how the repeats ran, every headline figure per repeat
    and over the repeats, and the architectures compared at the repeat level."""
    n = len(heads)
    lines = ["## Repeats", ""]
    records = [r for r in manifest.get("repeats") or [] if isinstance(r, dict)]
    if n == 1:
        lines += ["One repeat: every figure below is a single value; how far it would move "
                  "on a rerun is not measured, and the comparison of the architectures at the "
                  f"repeat level is not testable ({NOT_TESTABLE}).", ""]
    else:
        lines += [f"{n} repeats. Each ran every scenario on every architecture; the order "
                  "of the architectures alternated (ABBA) and before every repeat but the "
                  "first the model APIs and scoring handlers were restarted (every pooled "
                  "keep-alive connection reconnects and is assigned to a worker afresh), so "
                  "the spread below includes that state.", ""]
        for r in records:
            renewed = r.get("renewed") or {}
            when = f", services restarted at {renewed.get('at')}" if renewed else ""
            lines.append(f"- repeat {r.get('repeat')}: order {', '.join(r.get('order') or [])}"
                         f"{when}")
        lines += ["", f"Per figure: median over the repeats; {spread_rule()}; coefficient "
                  f"of variation; **unstable** when CV > {CV_LIMIT:.0%}.", "",
                  "| figure | arch | median | spread | CV | per repeat |",
                  "|---|---|---|---|---|---|"]
        for a in archs:
            for fig, v in (summary.get(a) or {}).items():
                for name, s in ([(fig, v)] if not isinstance(v, dict) or "median" in v
                                else [(f"{fig}.{k}", x) for k, x in v.items()]):
                    if not (isinstance(s, dict) and "median" in s):
                        continue
                    flag = " **unstable**" if s.get("unstable") else ""
                    cv = f"{_f(s['cv'] * 100)} %" if s["cv"] is not None else ""
                    lines.append(
                        f"| {name} | {a} | {_f(s['median'], 2)} | {spread_text(s)} | "
                        f"{cv}{flag} | " + ", ".join(_f(x, 2) for x in s["values"]) + " |")
        lines.append("")
    if len(archs) >= 2 and comparisons:
        a, b = archs[:2]
        lines += [f"Comparison at the repeat level: per repeat the ratio {b}/{a} of each "
                  "figure (both measured in the same repeat), the median ratio and its spread "
                  f"(as above); from {MIN_REPEATS_FOR_INTERVAL} repeats significant when the "
                  "interval excludes 1 (a sign test at the interval's coverage); under "
                  f"{MIN_REPEATS_FOR_INTERVAL} not tested, only whether every repeat lies on "
                  "one side of 1"
                  + (f" (with {n} repeats, when neither is ahead, that happens "
                     f"{percent(2 ** (1 - n))} of the time)." if 1 < n < MIN_REPEATS_FOR_INTERVAL
                     else "."), "",
                  f"| figure | {b}/{a} per repeat | median | spread | verdict |",
                  "|---|---|---|---|---|"]
        for fig, c in comparisons.items():
            lines.append(f"| {fig} | {', '.join(_f(r, 2) for r in c['ratios'])} | "
                         f"{_f(c['median'], 2)} | {spread_text(c)} | {c['verdict']} |")
        lines.append("")
    return lines
