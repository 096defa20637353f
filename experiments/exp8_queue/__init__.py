"""Experiment 8: the job queue (issue 24). Per architecture (sync: RQ, async: SAQ), open-model
job clients that submit and poll, at offered loads in multiples of the in-line capacity, beside
the same loads sent to the in-line endpoint: submit latency, time to result, throughput,
rejections, queue depth and worker utilisation; the queue's own capacity (a step sweep); a
burst at 3x the in-line capacity and the queue's time to drain."""

from experiments.exp8_queue import report
from experiments.exp8_queue.config import load_queue
from experiments.exp8_queue.run import run_queue
from experiments.experiment import experiment

EXPERIMENT = experiment(
    __name__, "job queue: submit and poll (RQ, SAQ) against in-line, a burst, the queue's capacity",
    load=load_queue, run=run_queue, report=report)
