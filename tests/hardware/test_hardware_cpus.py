"""CPU lists: the one parser and formatter the project imports."""

from __future__ import annotations

import pytest

from hardware.cpus import format_cpu_list, parse_cpu_list


@pytest.mark.parametrize("text, cpus", [("0", [0]), ("0-2,5", [0, 1, 2, 5]),
                                        ("3,1-2", [1, 2, 3]), ("7-8,8", [7, 8])])
def test_parse_and_format_round_trip(text, cpus):
    assert parse_cpu_list(text) == cpus
    assert parse_cpu_list(format_cpu_list(cpus)) == cpus


def test_iterables_are_sorted_and_unique():
    assert parse_cpu_list([3, 1, 1]) == [1, 3]
    assert format_cpu_list([5, 0, 1, 2]) == "0-2,5"
    assert (format_cpu_list(None), format_cpu_list([])) == ("?", "-")


@pytest.mark.parametrize("bad", ["", "a", "1-", "3-1", "1,,2", "-1"])
def test_bad_lists_are_named(bad):
    with pytest.raises(ValueError, match="bad CPU list"):
        parse_cpu_list(bad)
