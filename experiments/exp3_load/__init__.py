"""Experiment 3: the original's four Locust load tests (response time, load test, max
performance, stress) on both architectures with the same load, interleaved; the breaking
point of each detected from its load test and held in the max-performance test."""

from experiments.exp3_load import report, run
from experiments.experiment import experiment
from experiments.protocol import load_protocol

EXPERIMENT = experiment(
    __name__, "Locust load tests and breaking points",
    load=load_protocol, run=run.run, report=report, arrival_option=True)
