"""Experiment 1: profiling. pyinstrument and yappi, server side (scoring handler and model
API, deployed with SCORING_LAB_PROFILING=true) and client side, for single requests and a
window under load; the report breaks the wall time of one request down by category."""

from experiments.exp1_profiling import report, run
from experiments.experiment import experiment

EXPERIMENT = experiment(
    __name__, "profiling (pyinstrument, yappi), server and client side",
    load=run.load_config, run=run.run, report=report)
