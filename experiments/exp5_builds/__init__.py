"""Experiment 5: each architecture at its best on one CPU budget. Sweeps of the settings that
decide each stack's capacity (sync worker type, workers, gthread threads, gevent; async workers,
HTTP client), each point deployed and measured as a ladder rung (experiments/lab/ladder.py: the
ladder format, plus each point's `sweep`); the report names each architecture's best build, its
capacity and what it costs, and shows throughput against concurrency past the knee."""

from pathlib import Path

from experiments.exp5_builds import report, run
from experiments.experiment import Experiment

EXPERIMENT = Experiment(
    number="5",
    name="experiment-5",
    summary="best builds: sweeps of each architecture's settings on one CPU budget",
    config=Path(__file__).with_name("config.toml"),
    load=run.load_sweeps,
    run=run.run_points,
    analyse=report.analyse,
    headline=report.headline,
    write_report=report.write_report,
)
