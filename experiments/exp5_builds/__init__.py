"""Experiment 5: each architecture at its best on one CPU budget. Sweeps of the settings that
decide each stack's capacity (sync worker type, workers, gthread threads, gevent; async workers,
HTTP client), each point deployed and measured as a ladder rung (experiments/lab/ladder.py: the
ladder format, plus each point's `sweep`); the report names each architecture's best build, its
capacity and what it costs, and shows throughput against concurrency past the knee."""

from experiments.exp5_builds import report, run
from experiments.experiment import experiment

EXPERIMENT = experiment(
    __name__, "best builds: sweeps of each architecture's settings on one CPU budget",
    load=run.load_sweeps, run=run.run_points, report=report)
