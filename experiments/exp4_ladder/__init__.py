"""Experiment 4: the delta decomposition. The same step load against a ladder of variants of
the same code (each a setting), each deployed, verified and measured, with a ceiling model's
prediction beside every measured maximum."""

from experiments.exp4_ladder import report, run
from experiments.experiment import experiment

EXPERIMENT = experiment(
    __name__, "the delta decomposition: a ladder of variants against their predicted ceilings",
    load=run.load_ladder, run=run.run, report=report)
