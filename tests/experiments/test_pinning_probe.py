"""The pinning probe's command line refuses bad values by name, before starting anything."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.parametrize("args, named", [
    (["--trials", "0"], "--trials"),
    (["--seconds", "-1"], "--seconds"),
    (["--client-cpus", "x"], "'x'"),
    (["--service-cpus", "1-0"], "'1-0'"),
])
def test_bad_values_are_refused(args, named):
    proc = subprocess.run([sys.executable, "-m", "experiments.tools.pinning_probe", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert named in proc.stderr and "Traceback" not in proc.stderr
