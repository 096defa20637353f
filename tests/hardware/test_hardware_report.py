"""python -m hardware report on this machine, and its failure paths."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from hardware_testutil import SLEEP, clean_env, lab_child, run_cli

from hardware.collect import FORMAT_VERSION, collect_hostname, collect_system
from hardware.report import format_cpu_list, render_markdown


def test_report_on_this_machine(tmp_path):
    out = tmp_path / "report"
    result = run_cli("report", "--out", str(out), "--run-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr

    doc = json.loads((out / "system.json").read_text())
    assert doc["format_version"] == FORMAT_VERSION
    assert doc["hostname"]
    assert doc["cpu"]["logical_threads"] == os.cpu_count()
    assert doc["cpu"]["physical_cores"] >= 1
    assert doc["memory"]["total_bytes"] > doc["memory"]["available_bytes"] > 0
    assert doc["kernel"]["release"] == os.uname().release
    assert doc["python"]["version"]
    assert len(doc["load_average"]) == 3
    assert doc["reporter_cpu_affinity"] == sorted(os.sched_getaffinity(0))
    assert doc["lab_processes"] == []  # filtered on a fresh run dir
    assert isinstance(doc["warnings"], list)
    assert "# Hardware report" in (out / "system.md").read_text()

    if shutil.which("lshw"):
        assert doc["lshw"] == "ok"
        assert json.loads((out / "lshw.json").read_text())
        assert "<html" in (out / "lshw.html").read_text().lower()
    else:
        assert doc["lshw"] == "missing"


def test_report_without_lshw_records_a_warning(tmp_path):
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    out = tmp_path / "report"
    result = run_cli("report", "--out", str(out), env=clean_env(PATH=str(empty_bin)))
    assert result.returncode == 0, result.stderr
    doc = json.loads((out / "system.json").read_text())
    assert doc["lshw"] == "missing"
    assert any(w.startswith("lshw:") for w in doc["warnings"])
    assert not (out / "lshw.json").exists()
    assert doc["cpu"]["logical_threads"] >= 1  # the rest of the report is still there


def test_report_with_failing_lshw(tmp_path):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    fake = fake_bin / "lshw"
    fake.write_text("#!/bin/sh\necho 'boom' >&2\nexit 3\n")
    fake.chmod(0o755)
    out = tmp_path / "report"
    result = run_cli("report", "--out", str(out), env=clean_env(PATH=str(fake_bin)))
    assert result.returncode == 0, result.stderr
    doc = json.loads((out / "system.json").read_text())
    assert doc["lshw"].startswith("failed: ")
    assert "exited with 3: boom" in doc["lshw"]


def test_report_refuses_a_non_empty_dir(tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    (out / "keep.txt").write_text("earlier run")
    result = run_cli("report", "--out", str(out))
    assert result.returncode == 2
    assert "not empty" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_report_lists_a_pinned_lab_process(tmp_path):
    out = tmp_path / "report"
    # The same service in another run is started too: --run-dir must filter it out.
    with (
        lab_child(SLEEP, "model-sync", tmp_path, cpus={0}) as child,
        lab_child(SLEEP, "model-sync", tmp_path / "other-run"),
    ):
        result = run_cli("report", "--out", str(out), "--run-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    doc = json.loads((out / "system.json").read_text())
    assert doc["lab_processes"] == [
        {
            "pid": child.pid,
            "ppid": os.getpid(),
            "service": "model-sync",
            "run_dir": str(tmp_path),
            "cpu_affinity": [0],
            "cmdline": child.args,
        }
    ]
    md = (out / "system.md").read_text()
    assert f"| model-sync | {child.pid} | {os.getpid()} | 0 |" in md


def test_a_failing_collector_becomes_a_warning():
    def collect_broken():
        raise OSError("no such file")

    doc = collect_system(collectors=[collect_hostname, collect_broken])
    assert doc["hostname"]
    assert doc["warnings"] == ["broken: OSError: no such file"]
    assert list(doc)[-1] == "warnings"


@pytest.mark.parametrize(
    ("cpus", "text"),
    [([0], "0"), ([0, 1, 2, 5], "0-2,5"), ([3, 1], "1,3"), ([], "-"), (None, "?")],
)
def test_format_cpu_list(cpus, text):
    assert format_cpu_list(cpus) == text


def test_markdown_survives_a_sparse_document():
    md = render_markdown({"format_version": 1, "warnings": ["cpu_model: boom"]})
    assert "Not collected" in md
    assert "- cpu_model: boom" in md
