"""Experiment 7: batching. Architectures (a scoring handler and the model server it calls:
on demand, or the async model API's micro-batcher) on a device with one slot and with no device
limit (services/device.py), each pair deployed and measured as a ladder rung
(experiments/lab/ladder.py) with the model's batch counters read around every run; the report
gives each one's capacity under the shared bound, its 1-user p50, the batches formed per load
level and the CPU per request, and says per device whether batching wins or only adds latency."""

from experiments.exp7_batching import report, run
from experiments.experiment import experiment

EXPERIMENT = experiment(
    __name__, "batching: on-demand and micro-batched model servers, with and without a device "
              "limit", load=run.load_batching, run=run.run_points, report=report)
