"""Experiment 3: the original's four Locust load tests (response time, load test, max
performance, stress) on both architectures with the same load, interleaved; the breaking
point of each detected from its load test and held in the max-performance test."""

from pathlib import Path

from experiments.exp3_load import report, run
from experiments.experiment import Experiment
from experiments.protocol import load_protocol

EXPERIMENT = Experiment(
    number="3",
    name="experiment-3",
    summary="Locust load tests and breaking points",
    config=Path(__file__).with_name("config.toml"),
    load=load_protocol,
    run=run.run,
    analyse=report.analyse,
    headline=report.headline,
    write_report=report.write_report,
    arrival_option=True,
)
