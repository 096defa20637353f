"""The experiment contract: every experiment is one package, registered once, dispatched
from one table, finished in one order; config and CLI errors are one line naming the value."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import cli
from experiments.config import ConfigError
from experiments.experiment import Experiment
from experiments.registry import BY_NAME, EXPERIMENTS
from experiments.reporting import Report
from experiments.results import new_run_folder, open_run_folder
from tests.conftest import ROOT


@pytest.mark.parametrize("number", sorted(EXPERIMENTS))
def test_each_experiment_is_one_package_with_its_config(number):
    e = EXPERIMENTS[number]
    package = e.config.parent
    assert e.config.name == "config.toml"
    assert {"__init__.py", "run.py", "report.py"} <= {p.name for p in package.iterdir()}
    assert BY_NAME[e.name] is e
    assert {"full", "quick", "smoke"} <= set(e.profiles())
    for profile in e.profiles():  # the config names the experiment its package registers
        assert e.configure(profile).experiment == e.name


def test_arrival_is_refused_where_the_experiment_does_not_take_it():
    assert EXPERIMENTS["3"].configure("smoke", "bursty").arrival == "bursty"
    with pytest.raises(ConfigError, match="--arrival bursty: experiment 2"):
        EXPERIMENTS["2"].configure("smoke", "bursty")


def test_a_bad_profile_key_names_file_profile_and_key(tmp_path):
    e = EXPERIMENTS["1"]
    bad = tmp_path / "config.toml"
    bad.write_text(e.config.read_text().replace("[profiles.smoke.single]\n",
                                                "[profiles.smoke.single]\nrepeat = 2\n"))
    with pytest.raises(ConfigError) as err:
        e.load(bad, "quick")  # every profile is checked, whichever one is run
    assert str(bad) in str(err.value) and "(profile smoke)" in str(err.value)
    assert "unknown key 'repeat'" in str(err.value)


def test_finish_analyses_once_then_completes_then_reports(tmp_path):
    calls: list[str] = []
    run = new_run_folder(tmp_path, "experiment-x", "local", "abc1234", collect=False)

    def analyse(folder: Path) -> dict:
        calls.append("analyse")
        return {"n": 1}

    def headline(analysis: dict) -> dict:
        calls.append("headline")
        return {"n": analysis["n"]}

    def write_report(folder: Path, analysis: dict) -> Report:
        # the report sees the run complete, with the headline of the same analysis
        manifest = open_run_folder(folder).manifest
        calls.append(f"report {manifest['status']} {manifest['headline']}")
        return Report(folder / "report.md", folder / "report.json", [], {})

    e = Experiment("9", "experiment-x", "test", tmp_path / "config.toml", lambda p, q: None,
                   lambda c, o, f: tmp_path, analyse, headline, write_report)
    e.finish(run.path)
    assert calls == ["analyse", "headline", "report complete {'n': 1}"]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "experiments", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args, named", [
    (("run", "3", "--profile", "huge"), "unknown profile 'huge'"),
    (("run", "4", "--arrival", "bursty"), "--arrival bursty"),
    (("report", "/nonexistent-run"), "/nonexistent-run"),
])
def test_cli_errors_are_one_line_naming_the_value(args, named, capsys):
    assert cli.main(list(args)) == 2
    err = capsys.readouterr().err
    assert named in err and len(err.strip().splitlines()) == 1


def test_a_cli_error_ends_the_process_with_status_2_and_no_traceback():
    # in-process above; here once through `python -m experiments` as a user runs it
    done = _cli("run", "3", "--profile", "huge")
    assert done.returncode == 2
    assert "unknown profile 'huge'" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_report_of_an_unknown_experiment_is_refused(tmp_path, capsys):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({"experiment": "experiment-99"}))
    assert cli.main(["report", str(folder)]) == 2
    assert "experiment-99" in capsys.readouterr().err


def test_finish_reports_the_status_it_just_recorded(tmp_path):
    """The analysis reads the manifest while the run is still incomplete; the report written
    by finish must show it complete (a committed report once said INCOMPLETE beside a complete
    manifest)."""
    import json

    from experiments.experiment import Experiment
    from experiments.results import open_run_folder

    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps({"status": "incomplete"}))
    seen = {}

    def write_report(path, analysis):
        seen.update(analysis["manifest"])
        return None

    exp = Experiment(number="9", name="experiment-9", summary="", config=tmp_path / "c.toml",
                     load=lambda *a: None, run=lambda *a: folder,
                     analyse=lambda p: {"manifest": open_run_folder(p).manifest, "n": 1},
                     headline=lambda a: {"n": a["n"]}, write_report=write_report)
    exp.finish(folder)
    assert seen["status"] == "complete" and seen["headline"] == {"n": 1} and seen["ended_at"]


def test_list_shows_every_experiment_its_profiles_and_their_planned_time(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    blocks: dict[str, list[list[str]]] = {}  # experiment number -> its profile lines
    for line in out.split("\n\n")[0].splitlines():
        if line.startswith(" "):
            blocks[next(reversed(blocks))].append(line.split())
        else:
            blocks[line.split()[0]] = []
    assert list(blocks) == sorted(EXPERIMENTS, key=int) and len(blocks) >= 8
    for number, lines in blocks.items():
        e = EXPERIMENTS[number]
        assert f"{number}  {e.name}: {e.summary}" in out
        assert [fields[0] for fields in lines] == e.profiles()
        assert [fields[0] for fields in lines if "(default)" in fields] == [e.default_profile()]
        for fields in lines:  # every profile states a time, as its run plans it
            assert e.planned_s(fields[0]) > 0
            assert fields[-1] in ("s", "min", "h") and float(fields[-2]) > 0, fields


def test_planned_time_is_the_one_the_run_counts_down_from():
    # experiment 3's run hands protocol.total_s to the session; 2's timeit.planned_s
    assert EXPERIMENTS["3"].planned_s("quick") == EXPERIMENTS["3"].configure("quick").total_s
    assert EXPERIMENTS["2"].planned_s("smoke") == EXPERIMENTS["2"].configure("smoke").planned_s
    assert EXPERIMENTS["4"].planned_s("smoke") < EXPERIMENTS["4"].planned_s("full")


@pytest.mark.parametrize("args, named", [
    (("lst",), "invalid choice: 'lst'"),
    (("list", "99"), "no experiment '99'"),
    (("run", "99"), "invalid choice: '99'"),
])
def test_an_unknown_command_or_experiment_is_refused_naming_it(args, named, capsys):
    with pytest.raises(SystemExit) as refused:  # argparse's clean exit: usage, one error line
        cli.main(list(args))
    assert refused.value.code == 2
    out = capsys.readouterr()
    assert named in out.err.splitlines()[-1] and out.out == ""


def _make_n(*args: str) -> subprocess.CompletedProcess:
    # as from a plain shell: not a sub-make of `make test`, no PROFILE of the caller's
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "PROFILE")}
    return subprocess.run(["make", "-n", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)


def _run_lines(done: subprocess.CompletedProcess) -> dict[str, int]:
    """Experiment number -> the index of its `python -m experiments run` line."""
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    found = {n: [i for i, x in enumerate(lines) if f"-m experiments run {n} " in x]
             for n in EXPERIMENTS}
    assert all(len(at) == 1 for at in found.values()), done.stdout
    return {n: at[0] for n, at in found.items()}


def test_make_runs_each_experiment_in_its_default_profile_unless_profile_is_given():
    targets = [f"experiment-{n}" for n in sorted(EXPERIMENTS, key=int)]
    plain = _make_n(*targets)
    lines = plain.stdout.splitlines()
    runs = _run_lines(plain)
    assert not any("--profile" in lines[i] for i in runs.values())
    chosen = _make_n(*targets, "PROFILE=smoke")
    assert all(chosen.stdout.splitlines()[i].rstrip().endswith("--profile smoke")
               for i in _run_lines(chosen).values())
    # experiment 1 redeploys the lab itself: the one deploy comes after it, before the others
    deploys = [i for i, x in enumerate(lines) if "deploy.yml" in x]
    assert len(deploys) == 1
    assert runs["1"] < deploys[0] < min(i for n, i in runs.items() if n != "1")


def test_make_refuses_an_unknown_experiment_before_deploying():
    done = _make_n("experiment-99")
    assert done.returncode != 0 and "deploy.yml" not in done.stdout
    assert "no experiment-99" in done.stderr


def test_a_record_follows_from_its_package_and_refuses_another_name():
    from experiments import experiment as contract
    from experiments.exp2_timeit import report, run

    e = EXPERIMENTS["2"]
    assert (e.number, e.name, e.analyse) == ("2", "experiment-2", report.analyse)
    assert e.config == Path(report.__file__).with_name("config.toml")
    with pytest.raises(ValueError, match="'experiments.timeit': an experiment package"):
        contract.experiment("experiments.timeit", "x", load=run.load_timeit, run=run.run,
                            report=report)
