"""Experiment 9: how each architecture fails. Per build (the default, and admission control)
and architecture: goodput as offered load goes from 0.5x to 3x capacity, timelines of faults
injected at 60 % of capacity (model API 3x slower, model API down, Redis frozen, a scoring
worker killed) and a burst at 0.9x capacity (metastability), open-model load throughout."""

from experiments.exp9_overload import report, run
from experiments.experiment import experiment

EXPERIMENT = experiment(
    __name__, "overload and faults: goodput past capacity, fault timelines, metastability",
    load=run.load_overload, run=run.run_overload, report=report)
