"""Experiment 4's run: the delta decomposition's ladder of variants of the same code
(settings, not copies), each deployed, verified and measured by experiments/lab/ladder.py: the
latency of one user, the step load per arrival pattern, the capacity search. The report
(report.py beside this module) adds the ceiling model (experiments/analysis/ceiling.py) and
reads only the result folder.

    ladder = load_ladder("experiments/exp4_ladder/config.toml", "quick")
    EXPERIMENT.execute("quick", options)     # experiments/exp4_ladder/__init__.py
"""

from __future__ import annotations

from experiments.lab.ladder import run
from experiments.ladder import load_ladder

__all__ = ["load_ladder", "run"]
