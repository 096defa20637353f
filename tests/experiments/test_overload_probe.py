"""The overload probe's command line refuses unbounded or empty loads before touching the lab."""

from __future__ import annotations

import pytest

from experiments.tools import overload_probe


@pytest.mark.parametrize("args, named", [
    (["--rate", "0"], "--rate 0"),
    (["--rate", "5000"], "--rate 5000"),
    (["--seconds", "-1"], "--seconds -1"),
    (["--watch", "1000"], "--watch 1000"),
])
def test_bad_bounds_are_refused_by_name(args, named, capsys):
    with pytest.raises(SystemExit) as exit_:
        overload_probe.main(args)
    assert exit_.value.code == 2
    assert named in capsys.readouterr().err
