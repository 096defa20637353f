"""Experiment 2: timeit. N sequential scoring calls for a range of N, sync vs async,
repeated and interleaved: means with confidence intervals, Welch's test, the improvement in
percent and pyperf's stability warning."""

from experiments.exp2_timeit import report, run
from experiments.experiment import experiment

EXPERIMENT = experiment(
    __name__, "timeit: N sequential calls, sync vs async",
    load=run.load_timeit, run=run.run, report=report)
