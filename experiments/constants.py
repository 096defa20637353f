"""Facts every part of the experiments shares, defined here once: where the repository and its
Ansible playbooks are, which architectures the lab serves (the services own that list) and
which arrival patterns a load may use, and the steps of a ladder rung (their names are folders
of its result and keys of its manifest)."""

from __future__ import annotations

from pathlib import Path

from services.settings import Arch

REPO_ROOT = Path(__file__).resolve().parent.parent
ANSIBLE_DIR = REPO_ROOT / "ansible"
ARCHS: tuple[str, ...] = tuple(a.value for a in Arch)  # ("sync", "async"), sync first
# spread: each Locust user keeps a random phase; bursty: the original's in-phase bursts.
ARRIVALS = ("spread", "bursty")
# Which builds a headline's figures are of (its "builds" key): experiments 1-3 measure the
# lab's default deploy of each architecture; experiments 4-6 name each build in their keys.
DEFAULT_BUILDS = "default"

# A ladder rung's steps (experiments/ladder.py): the 1-user probe, the step load, the search.
PROBE, LOAD_TEST, CAPACITY = "probe", "load_test", "capacity"
