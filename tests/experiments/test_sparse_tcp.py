"""experiments.tools.sparse_tcp: an old folder's tcp CSV columns moved to <host>.tcp.jsonl."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from experiments.analysis.summary import load_resource_samples
from experiments.tools import sparse_tcp
from hardware import tcplog
from hardware.summary import load_samples, read_samples_csv, write_samples_csv

ROOT = Path(__file__).resolve().parents[2]
LINK = "127.0.0.1:40000->127.0.0.1:5000"


def _old_folder(tmp_path: Path) -> tuple[Path, list[dict]]:
    """A result folder as collected before the tcp file: tcp records as CSV columns."""
    samples = []
    for i in range(30):
        links = [f"127.0.0.1:{40000 + k}->127.0.0.1:5000" for k in range(i // 10 + 1)]
        samples.append({"t": 100.0 + i, "cpu_percent_per_core": [1.5, 2.0], "services": {
            "scoring-sync": {"pids": [10], "cpu_user_s": 0.1 * i, "tcp": {"10": links}},
            "model-sync": {"pids": [20], "cpu_user_s": 0.2 * i, "tcp": {}},
            "loadgen": {"pids": [30], "cpu_user_s": 0.0}}})
    folder = tmp_path / "run"
    (folder / "raw" / "resources").mkdir(parents=True)
    write_samples_csv(samples, folder / "raw" / "resources" / "localhost.csv")
    (folder / "manifest.json").write_text(json.dumps(
        {"collected": {"resources": ["raw/resources/localhost.csv"]}}, indent=2))
    return folder, samples


def test_converts_losslessly_and_lists_the_file(tmp_path, capsys):
    folder, samples = _old_folder(tmp_path)
    csv_path = folder / "raw" / "resources" / "localhost.csv"
    before = csv_path.stat().st_size
    assert sparse_tcp.main([str(folder)]) == 0
    assert "every sample read back equal" in capsys.readouterr().out
    assert "tcp" not in csv_path.read_text().splitlines()[0]
    assert csv_path.stat().st_size < before
    assert len(tcplog.read(tcplog.sidecar(csv_path))) == 3  # first sample, then 2 changes
    assert load_samples(csv_path) == samples
    assert load_resource_samples(folder / "raw" / "resources") == {"localhost": samples}
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["collected"]["resources"] == ["raw/resources/localhost.csv",
                                                  "raw/resources/localhost.tcp.jsonl.gz"]
    assert not list((folder / "raw" / "resources").glob(".sparse_tcp-*"))  # no leftovers


def test_a_second_run_changes_nothing(tmp_path, capsys):
    folder, _ = _old_folder(tmp_path)
    assert sparse_tcp.main([str(folder)]) == 0
    files = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert sparse_tcp.main([str(folder)]) == 0
    assert "no tcp columns, left as it is" in capsys.readouterr().out
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == files


def test_refuses_to_overwrite_an_existing_tcp_file(tmp_path, capsys):
    folder, _ = _old_folder(tmp_path)
    csv_path = folder / "raw" / "resources" / "localhost.csv"
    tcplog.sidecar(csv_path).write_text("keep me\n")
    csv_before = csv_path.read_bytes()
    assert sparse_tcp.main([str(folder)]) == 1
    err = capsys.readouterr().err
    assert "localhost.tcp.jsonl.gz exists" in err and "refusing to overwrite" in err
    assert tcplog.sidecar(csv_path).read_text() == "keep me\n"
    assert csv_path.read_bytes() == csv_before


def test_a_folder_without_resources_is_named_and_fails(tmp_path):
    done = subprocess.run([sys.executable, "-m", "experiments.tools.sparse_tcp",
                           str(tmp_path / "nope")], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert f"{tmp_path / 'nope'}: no raw/resources/ folder" in done.stderr
    assert "Traceback" not in done.stderr


def test_old_folders_still_load(tmp_path):
    folder, samples = _old_folder(tmp_path)  # tcp inline, no tcp file: read as before
    assert load_resource_samples(folder / "raw" / "resources") == {"localhost": samples}
    assert read_samples_csv(folder / "raw" / "resources" / "localhost.csv") == samples
