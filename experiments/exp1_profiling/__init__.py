"""Experiment 1: profiling. pyinstrument and yappi, server side (scoring handler and model
API, deployed with SCORING_LAB_PROFILING=true) and client side, for single requests and a
window under load; the report breaks the wall time of one request down by category."""

from pathlib import Path

from experiments.exp1_profiling import report, run
from experiments.experiment import Experiment

EXPERIMENT = Experiment(
    number="1",
    name="experiment-1",
    summary="profiling (pyinstrument, yappi), server and client side",
    config=Path(__file__).with_name("config.toml"),
    load=run.load_config,
    run=run.run,
    analyse=report.analyse,
    headline=report.headline,
    write_report=report.write_report,
)
