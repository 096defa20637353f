"""Every experiment, listed once. Each is a package with its own config, run and report
(experiments/experiment.py is the contract); the CLI and the report rebuild read this table
only, so a new experiment is a new package and one line here."""

from __future__ import annotations

from experiments.exp1_profiling import EXPERIMENT as PROFILING
from experiments.exp2_timeit import EXPERIMENT as TIMEIT
from experiments.exp3_load import EXPERIMENT as LOAD
from experiments.exp4_ladder import EXPERIMENT as LADDER
from experiments.exp5_builds import EXPERIMENT as BUILDS
from experiments.exp6_crossover import EXPERIMENT as CROSSOVER
from experiments.exp7_batching import EXPERIMENT as BATCHING
from experiments.exp8_queue import EXPERIMENT as QUEUE
from experiments.exp9_overload import EXPERIMENT as OVERLOAD
from experiments.experiment import Experiment

EXPERIMENTS: dict[str, Experiment] = {
    e.number: e for e in (PROFILING, TIMEIT, LOAD, LADDER, BUILDS, CROSSOVER, BATCHING,
                          QUEUE, OVERLOAD)
}
BY_NAME: dict[str, Experiment] = {e.name: e for e in EXPERIMENTS.values()}
