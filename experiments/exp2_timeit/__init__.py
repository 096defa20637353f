"""Experiment 2: timeit. N sequential scoring calls for a range of N, sync vs async,
repeated and interleaved: means with confidence intervals, Welch's test, the improvement in
percent and pyperf's stability warning."""

from pathlib import Path

from experiments.exp2_timeit import report, run
from experiments.experiment import Experiment

EXPERIMENT = Experiment(
    number="2",
    name="experiment-2",
    summary="timeit: N sequential calls, sync vs async",
    config=Path(__file__).with_name("config.toml"),
    load=run.load_timeit,
    run=run.run,
    analyse=report.analyse,
    headline=report.headline,
    write_report=report.write_report,
)
