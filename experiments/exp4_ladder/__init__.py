"""Experiment 4: the delta decomposition. The same step load against a ladder of variants of
the same code (each a setting), each deployed, verified and measured, with a ceiling model's
prediction beside every measured maximum."""

from pathlib import Path

from experiments.exp4_ladder import report, run
from experiments.experiment import Experiment

EXPERIMENT = Experiment(
    number="4",
    name="experiment-4",
    summary="the delta decomposition: a ladder of variants against their predicted ceilings",
    config=Path(__file__).with_name("config.toml"),
    load=run.load_ladder,
    run=run.run,
    analyse=report.analyse,
    headline=report.headline,
    write_report=report.write_report,
)
