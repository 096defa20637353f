"""The lab installs on GCC 14 (Debian 13, nixos-25.05, Fedora 40+, Ubuntu 24.10+) with every uv.

meinheld 1.0.2 ships only an sdist whose response.c calls writev() undeclared on Linux; GCC 14
makes that an error. nix/uv-sync, the one script every install runs (`make setup`, the devshell,
the Ansible `lab` role), adds the flags that fix it. This machine's GCC may be older, so a
compiler wrapper turns on the errors GCC 14 makes default, and meinheld is built from its sdist
through nix/uv-sync into a throwaway venv, with the lab's uv and with the uv of nixos-25.05.

Cost: the sync uses the user's warm uv cache for the ~115 wheels (re-downloading them would
be most of the time and prove nothing), and --refresh-package meinheld forces uv to rebuild
meinheld instead of reusing a cached wheel; the wrapper's log proves the rebuild happened.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, require

UV_SYNC = ROOT / "nix" / "uv-sync"
# Warnings GCC 14 turned into errors by default (GCC 14 porting guide) that GCC 12 can also
# make errors. -Wreturn-mismatch and -Wdeclaration-missing-parameter-type, GCC 14's other two,
# do not exist before GCC 14 (GCC 12 rejects the flags).
GCC14_DEFAULT_ERRORS = {
    "implicit-function-declaration": "int main(void) { return undeclared_function(); }",
    "implicit-int": "static answer = 42;\nint main(void) { return answer; }",
    "int-conversion": "int main(void) { int *p = 1; return p != 0; }",
    "incompatible-pointer-types": "int main(void) { long l = 0; int *p = &l; return *p; }",
}
# nixpkgs release-25.05 moved uv from 0.7.4 to 0.7.15 in June 2025 (NixOS/nixpkgs#420695) and
# stayed on 0.7.x, ending at 0.7.22, the last 0.7 release (NixOS/nixpkgs#502879); the flake's
# pin (2025-09-09) carries one of these. The lock must read the same with both ends.
UV_NIXOS_2505 = ("0.7.15", "0.7.22")
UV_NIXOS_2505_BUILD = "0.7.22"
MEINHELD_SOURCE = "meinheld/server/response.c"
WRITEV_ERROR = re.compile(r"response\.c:\d+:\d+: error: implicit declaration of function .writev.")


def _lab_uv() -> str:
    """The uv `make setup` runs: $UV, uv on PATH, or pip --user's ~/.local/bin/uv."""
    for candidate in (os.environ.get("UV"), shutil.which("uv"), Path.home() / ".local/bin/uv"):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    return require("uv")


@pytest.fixture(scope="session")
def lab_uv() -> str:
    return _lab_uv()


@pytest.fixture(scope="session")
def uv_nixos(tmp_path_factory, lab_uv):
    """uv versions of nixos-25.05 from PyPI, each installed once per session into a temp dir."""
    installed: dict[str, str] = {}

    def get(version: str) -> str:
        if version not in installed:
            target = tmp_path_factory.mktemp(f"uv-{version}")
            subprocess.run(
                [lab_uv, "pip", "install", "--quiet", "--python", sys.executable,
                 "--target", str(target), f"uv=={version}"],
                check=True, capture_output=True, text=True, timeout=300,
            )  # fmt: skip
            installed[version] = str(target / "bin" / "uv")
        return installed[version]

    return get


@pytest.fixture(scope="session")
def gcc14_cc(tmp_path_factory) -> Path:
    """A CC that is this machine's gcc with GCC 14's default errors, logging every call to
    $GCC14_CC_LOG (so a test can tell that a file was compiled, not taken from a cache)."""
    gcc = require("gcc")
    flags = " ".join(f"-Werror={name}" for name in GCC14_DEFAULT_ERRORS)
    wrapper = tmp_path_factory.mktemp("gcc14") / "cc"
    wrapper.write_text(
        "#!/bin/sh\n"
        'printf "%s\\n" "$*" >> "${GCC14_CC_LOG:-/dev/null}"\n'
        f'exec {gcc} {flags} "$@"\n'
    )
    wrapper.chmod(0o755)
    return wrapper


@pytest.mark.parametrize("warning", sorted(GCC14_DEFAULT_ERRORS))
def test_the_wrapper_makes_gcc14s_default_errors_errors(gcc14_cc, tmp_path, warning):
    source = tmp_path / "probe.c"
    source.write_text(GCC14_DEFAULT_ERRORS[warning] + "\n")
    out = subprocess.run(
        [str(gcc14_cc), "-c", str(source), "-o", str(tmp_path / "probe.o")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode != 0
    assert re.search(rf"error: .*\[-W(error=)?{warning}\]", out.stderr), out.stderr


def test_meinheld_is_the_only_package_built_from_source():
    """nix/uv-sync's flags reach every sdist a sync builds; they are checked for meinheld only.

    A package is built from source on Linux when no version of it in the lock has a wheel for
    CPython 3.11 or 3.12 on x86_64 or aarch64 (manylinux), a pure wheel, or an abi3 wheel.
    Windows-only packages (every wheel a win one) are never installed on Linux.
    """
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    wheels: dict[str, list[str]] = {}
    for package in lock["package"]:
        if "registry" in package.get("source", {}):
            names = [w["url"].rsplit("/", 1)[-1] for w in package.get("wheels", [])]
            wheels.setdefault(package["name"], []).extend(names)

    def fits(wheel: str, arch: str, minor: int) -> bool:
        python, abi, platform = wheel.removesuffix(".whl").split("-")[-3:]
        if platform == "any":
            return True
        if not any(arch in tag and "manylinux" in tag for tag in platform.split(".")):
            return False
        tags = python.split(".")
        return (
            "py3" in tags
            or f"cp3{minor}" in tags
            or (abi == "abi3" and any(t.startswith("cp3") and int(t[3:]) <= minor for t in tags))
        )

    built = {
        name
        for name, files in wheels.items()
        if not (files and all("-win" in f for f in files))
        for arch in ("x86_64", "aarch64")
        for minor in (11, 12)
        if not any(fits(f, arch, minor) for f in files)
    }
    assert built == {"meinheld"}, "check that nix/uv-sync's CPPFLAGS suit these builds too"


@pytest.mark.parametrize("version", UV_NIXOS_2505)
def test_the_uv_of_nixos_2505_reads_the_lock(uv_nixos, lab_uv, version):
    """uv 0.7.x agrees the lock is up to date and exports exactly what the lab's uv exports."""
    old_uv = uv_nixos(version)
    assert subprocess.run(
        [old_uv, "--version"], capture_output=True, text=True, check=True
    ).stdout.startswith(f"uv {version}")

    def run(uv, *args):
        return subprocess.run(
            [uv, *args, "--offline", "--directory", str(ROOT)],
            capture_output=True, text=True, timeout=120, env=_uv_env(),
        )  # fmt: skip

    check = run(old_uv, "lock", "--check")
    assert check.returncode == 0, check.stderr
    export = ("export", "--frozen", "--all-groups", "--no-emit-project")
    old, new = run(old_uv, *export), run(lab_uv, *export)
    assert old.returncode == 0, old.stderr
    assert new.returncode == 0, new.stderr

    def requirements(text):  # without the header that names the command
        return [line for line in text.splitlines() if not line.startswith("#")]

    assert "meinheld==1.0.2" in old.stdout
    assert requirements(old.stdout) == requirements(new.stdout)


def _uv_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "CFLAGS", "CPPFLAGS")}
    env["UV_PYTHON_DOWNLOADS"] = "never"
    env.update(extra)
    return env


def _build(command, uv, cc, tmp_path):
    """Sync the lock (no dev group) into a throwaway venv with `cc`, meinheld rebuilt."""
    log = tmp_path / "cc.log"
    env = _uv_env(
        UV=uv, CC=str(cc), GCC14_CC_LOG=str(log), UV_PROJECT_ENVIRONMENT=str(tmp_path / "venv")
    )
    out = subprocess.run(
        [*command, "--no-dev", "--no-progress", "--python", sys._base_executable,
         "--refresh-package", "meinheld"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    calls = log.read_text().splitlines() if log.exists() else []
    compiled = [call for call in calls if MEINHELD_SOURCE in call]
    return out, compiled


@pytest.mark.slow  # builds meinheld from its sdist
def test_without_the_labs_flags_meinheld_fails_like_on_gcc14(lab_uv, gcc14_cc, tmp_path):
    """The negative control: a plain `uv sync --frozen` (the install before nix/uv-sync) fails
    with GCC 14's error, so the wrapper does reproduce GCC 14."""
    out, compiled = _build([lab_uv, "sync", "--frozen"], lab_uv, gcc14_cc, tmp_path)
    assert out.returncode != 0
    assert WRITEV_ERROR.search(out.stderr), out.stderr[-3000:]
    assert compiled, "response.c was not compiled through the wrapper"


@pytest.mark.slow  # builds meinheld from its sdist, twice
@pytest.mark.parametrize("which", ["lab uv", f"uv {UV_NIXOS_2505_BUILD}"])
def test_meinheld_builds_on_gcc14_through_the_labs_install(
    which, lab_uv, uv_nixos, gcc14_cc, tmp_path
):
    uv = lab_uv if which == "lab uv" else uv_nixos(UV_NIXOS_2505_BUILD)
    out, compiled = _build(["sh", str(UV_SYNC)], uv, gcc14_cc, tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert compiled, "response.c was not compiled through the wrapper (a cached wheel?)"
    # The flags come on top of Python's own CFLAGS (-O3, -DNDEBUG...), which $CFLAGS would replace.
    python_cflags = sysconfig.get_config_var("CFLAGS").split()
    for call in compiled:
        assert "-D_GNU_SOURCE -include sys/uio.h" in call
        assert set(python_cflags) <= set(call.split()), call
    python = tmp_path / "venv" / "bin" / "python"
    imported = subprocess.run(
        [str(python), "-c", "import meinheld.server, greenlet; print(meinheld.server.__file__)"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.startswith(str(tmp_path / "venv"))


def test_every_install_path_runs_nix_uv_sync():
    """make setup, the devshell and the Ansible role all install through nix/uv-sync."""
    make = subprocess.run(
        ["make", "-n", "setup", "UV=uv"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert re.search(r"^UV=\"uv\" sh nix/uv-sync ", make.stdout, re.MULTILINE), make.stdout
    assert 'sh "$scoring_lab_root/nix/uv-sync"' in (ROOT / "nix" / "devshell.nix").read_text()
    role = ROOT / "ansible" / "roles" / "lab"
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text())
    assert "nix/uv-sync" in defaults["lab_source_entries"]
    tasks = yaml.safe_load((role / "tasks" / "install.yml").read_text())
    sync_tasks = [
        task
        for block in tasks
        for task in block.get("block", [block])
        if "sync" in task["name"].lower() and "ansible.builtin.command" in task
    ]
    assert [t["ansible.builtin.command"]["argv"][:2] for t in sync_tasks] == [["sh", "nix/uv-sync"]]
