"""The CPU-set filters of the inventories (ansible/filter_plugins/lab_cpus.py)."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible_testutil import load_cpu_filters

cpus = load_cpu_filters()


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("0", [0]),
        ("0-1", [0, 1]),
        ("2,3", [2, 3]),
        ("0-2,5", [0, 1, 2, 5]),
        ("3,1,1", [1, 3]),
        (4, [4]),
        ([2, "0"], [0, 2]),
    ],
)
def test_cpu_list_parses_taskset_syntax(spec, expected):
    assert cpus.lab_cpu_list(spec) == expected


@pytest.mark.parametrize("bad", ["", "a", "1-", "3-1", "1,,x", None, "-1"])
def test_cpu_list_rejects_bad_sets(bad):
    with pytest.raises(AnsibleFilterError):
        cpus.lab_cpu_list(bad)


def test_cpu_set_is_the_compact_inverse():
    assert cpus.lab_cpu_set([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"
    assert cpus.lab_cpu_set("3") == "3"


@pytest.mark.parametrize(
    ("nproc", "loadgen", "data", "scoring", "warns"),
    [
        (1, "0", "0", "0", True),
        (2, "1", "0", "0", True),
        (3, "2", "0-1", "0-1", True),
        (4, "3", "0", "1-2", False),
        (8, "7", "0-2", "3-6", False),
        (16, "15", "0-6", "7-14", False),
    ],
)
def test_single_host_layout(nproc, loadgen, data, scoring, warns):
    layout = cpus.lab_cpu_layout(nproc)
    assert (layout["loadgen"], layout["data"], layout["scoring"]) == (loadgen, data, scoring)
    assert bool(layout["warning"]) is warns
    assert layout["all"] == ("0" if nproc == 1 else f"0-{nproc - 1}")
    if nproc >= 4:  # disjoint sets that cover every core
        sets = [set(cpus.lab_cpu_list(layout[k])) for k in ("loadgen", "data", "scoring")]
        assert set().union(*sets) == set(range(nproc))
        assert sum(map(len, sets)) == nproc


def test_layout_rejects_nonsense():
    with pytest.raises(AnsibleFilterError):
        cpus.lab_cpu_layout(0)
