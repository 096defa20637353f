"""ansible-lint (production profile) passes on the lab's playbooks, roles and inventories."""

from __future__ import annotations

import os
import subprocess

import pytest
from ansible_testutil import ANSIBLE_DIR, tool


@pytest.mark.slow  # ansible-lint over every playbook and role: ~20 s (`make lint` runs it too)
def test_ansible_lint_production_profile_passes() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env["NO_COLOR"] = "1"
    proc = subprocess.run(
        [tool("ansible-lint"), "--profile", "production", "--offline", "--nocolor"],
        cwd=ANSIBLE_DIR,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    assert "Profile 'production' was required, and it passed" in output, output[-3000:]
