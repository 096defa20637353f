"""python -m hardware argument handling: usage, one-line errors, exit code 2, no tracebacks."""

from __future__ import annotations

import pytest
from hardware_testutil import run_cli

from hardware.cli import main


def test_no_arguments_print_usage_and_exit_2():
    result = run_cli()
    assert result.returncode == 2
    assert result.stderr.startswith("usage: python -m hardware")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "option", "bad"),
    [
        (["sample", "--out", "x.jsonl", "--interval", "-1"], "--interval", "'-1'"),
        (["sample", "--out", "x.jsonl", "--interval", "abc"], "--interval", "'abc'"),
        (["sample", "--out", "x.jsonl", "--interval", "0"], "--interval", "'0'"),
        (["sample", "--out", "x.jsonl", "--interval", "nan"], "--interval", "'nan'"),
        (["sample", "--out", "x.jsonl", "--duration", "-5"], "--duration", "'-5'"),
        (["report", "--out", ""], "--out", "''"),
    ],
)
def test_bad_values_give_one_line_and_exit_2(capsys, tmp_path, monkeypatch, args, option, bad):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert option in err and bad in err
    assert not (tmp_path / "x.jsonl").exists()


def test_bad_value_from_the_shell_has_no_traceback():
    result = run_cli("sample", "--out", "/nonexistent/x.jsonl", "--interval", "abc")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "python -m hardware: error: --interval: 'abc' is not a number of seconds"
    )


@pytest.mark.parametrize(
    "args",
    [["frobnicate"], ["sample"], ["report"], ["sample", "--out", "x", "--bogus"]],
)
def test_invalid_arguments_exit_2_with_usage(capsys, args):
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_sample_out_must_not_be_a_directory(capsys, tmp_path):
    assert main(["sample", "--out", str(tmp_path), "--duration", "0.1"]) == 2
    assert "is a directory" in capsys.readouterr().err
