"""Experiment 6: where the delta flips. One factor at a time (CPU per prediction, model latency,
model calls per request, CPU in the scoring handler) varied around the default; at each value
both architectures' default and best builds are deployed and their capacity measured beside
the ceiling model's prediction; the report gives, per factor, where async's advantage falls
below the threshold."""

from experiments.exp6_crossover import report, run
from experiments.experiment import experiment

EXPERIMENT = experiment(
    __name__, "crossover: capacity against one factor at a time, where async stops winning",
    load=run.load_crossover, run=run.run_points, report=report)
