"""Offline checks of the Nix flake (flake.nix, flake.lock, nix/).

Neither the Nix binary cache nor GitHub is reachable where this runs, so `nix develop` cannot.
What can run offline, and does here:
- every .nix file parses (nix-instantiate --parse);
- `nix flake metadata` reads flake.lock and agrees it matches flake.nix's inputs (a mismatch
  would make Nix re-lock, which needs the network and fails);
- the flake's outputs evaluate against a stub nixpkgs that offers only the attribute names
  checked to exist in nixpkgs 25.05, and the devshell's shellHook runs with a fake `uv`.

Without nix (Debian's nix-bin) these tests skip, except under CI=true, where they fail.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEVSHELL = ROOT / "nix" / "devshell.nix"
SYSTEMS = ("x86_64-linux", "aarch64-linux")

NIXPKGS_REV = "d179d77c139e0a3f5c416477f7747e9d6b7ec315"
NIXPKGS_NAR_HASH = "sha256-aSgK4BLNFFGvDTNKPeB28lVXYqVn8RdyXDNAvgGq+k0="
NIXPKGS_LAST_MODIFIED = 1757408970
NIXPKGS_ORIGINAL = {"owner": "NixOS", "repo": "nixpkgs", "ref": "nixos-25.05", "type": "github"}

# Top-level nixpkgs attributes the devshell may use; each was looked up in nixpkgs
# (pkgs/top-level/all-packages.nix or pkgs/by-name). The stub offers only these.
VERIFIED_ATTRS = [
    "uv", "redis", "lshw", "openssh", "util-linux", "iproute2", "procps", "gnumake", "git",
    "nixfmt-rfc-style",
]  # fmt: skip
REQUIRED_PACKAGES = {"python312", "uv", "redis", "lshw", "openssh", "util-linux", "iproute2"}

STUB_NIXPKGS = """
{
  outputs = _:
    let
      genAttrs = names: f:
        builtins.listToAttrs (map (n: { name = n; value = f n; }) names);
      drv = name: { type = "derivation"; inherit name; outPath = "/stub/${name}"; };
      pkgs = {
        lib = {
          inherit genAttrs;
          makeLibraryPath = ps: builtins.concatStringsSep ":" (map (p: "${p}/lib") ps);
        };
        python312 = drv "python312" // { interpreter = "/stub/python312/bin/python3.12"; };
        stdenv.cc.cc.lib = drv "libstdcxx";
        mkShell = args: args;
      } // genAttrs (builtins.fromJSON ''@ATTRS@'') drv;
    in {
      lib = { inherit genAttrs; };
      legacyPackages = genAttrs [ "x86_64-linux" "aarch64-linux" ] (_: pkgs);
    };
}
"""


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        message = f"{tool} not found (CI installs Debian's nix-bin)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def nix_env(tmp_path_factory):
    _need("nix")
    _need("nix-instantiate")
    env = dict(os.environ)
    env["NIX_CONFIG"] = "experimental-features = nix-command flakes"
    # Nix keeps its fetcher and eval caches here; a fresh one per run, never the user's.
    env["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("nix-cache"))
    return env


@pytest.fixture(scope="module")
def flake_copy(tmp_path_factory):
    """The flake's own files alone, as a path: flake.

    A git+file flake sees only tracked files, and a path: flake of the checkout would copy
    .venv into the store; a copy of exactly the flake's files avoids both.
    """
    dest = tmp_path_factory.mktemp("flake")
    shutil.copy2(ROOT / "flake.nix", dest / "flake.nix")
    shutil.copy2(ROOT / "flake.lock", dest / "flake.lock")
    shutil.copytree(ROOT / "nix", dest / "nix")
    return dest


def _nix(env, *args, check=True):
    return subprocess.run(
        ["nix", *args], env=env, capture_output=True, text=True, timeout=180, check=check
    )


@pytest.fixture(scope="module")
def stub_nixpkgs(tmp_path_factory):
    dest = tmp_path_factory.mktemp("stub-nixpkgs")
    (dest / "flake.nix").write_text(STUB_NIXPKGS.replace("@ATTRS@", json.dumps(VERIFIED_ATTRS)))
    return dest


def _eval_with_stub(env, flake, stub, attr, *extra):
    return _nix(
        env, "eval", "--no-write-lock-file", "--override-input", "nixpkgs", f"path:{stub}",
        f"path:{flake}#{attr}", *extra,
    )  # fmt: skip


# --- without nix ---------------------------------------------------------------------------


def test_flake_lock_structure():
    lock = json.loads((ROOT / "flake.lock").read_text())
    assert lock["version"] == 7
    assert lock["root"] == "root"
    assert set(lock["nodes"]) == {"root", "nixpkgs"}
    assert lock["nodes"]["root"] == {"inputs": {"nixpkgs": "nixpkgs"}}
    node = lock["nodes"]["nixpkgs"]
    assert node["locked"] == {
        "owner": "NixOS",
        "repo": "nixpkgs",
        "type": "github",
        "rev": NIXPKGS_REV,
        "narHash": NIXPKGS_NAR_HASH,
        "lastModified": NIXPKGS_LAST_MODIFIED,
    }
    assert node["original"] == NIXPKGS_ORIGINAL


def test_flake_text_pins_and_systems():
    text = (ROOT / "flake.nix").read_text()
    assert 'inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.05"' in text
    assert "nixpkgs.lib.genAttrs" in text
    assert "flake-utils" not in text
    assert "./nix/devshell.nix" in text


def test_devshell_text_uses_the_lock():
    text = DEVSHELL.read_text()
    for name in ("python312", "redis", "lshw", "uv"):
        assert f"pkgs.{name}" in text
    assert 'sh "$scoring_lab_root/nix/uv-sync" --project "$scoring_lab_root"' in text
    assert 'UV_PYTHON_DOWNLOADS = "never"' in text
    assert "pip install" not in text
    assert "UV_PROJECT_ENVIRONMENT =" not in text


# --- with nix ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", [ROOT / "flake.nix", *sorted((ROOT / "nix").glob("*.nix"))], ids=lambda p: p.name
)
def test_nix_files_parse(nix_env, path):
    subprocess.run(
        ["nix-instantiate", "--parse", str(path)],
        env=nix_env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip


def test_flake_metadata_is_locked_offline(nix_env, flake_copy):
    out = _nix(
        nix_env, "flake", "metadata", "--json", "--no-update-lock-file", f"path:{flake_copy}"
    )
    meta = json.loads(out.stdout)
    assert meta["locks"]["root"] == "root"
    node = meta["locks"]["nodes"]["nixpkgs"]
    assert node["locked"]["rev"] == NIXPKGS_REV
    assert node["locked"]["narHash"] == NIXPKGS_NAR_HASH
    assert node["original"] == NIXPKGS_ORIGINAL


def test_flake_metadata_rejects_a_lock_that_does_not_match(nix_env, tmp_path, flake_copy):
    shutil.copytree(flake_copy, tmp_path / "f")
    flake = tmp_path / "f" / "flake.nix"
    flake.write_text(flake.read_text().replace("nixos-25.05", "nixos-24.11"))
    out = _nix(
        nix_env, "flake", "metadata", "--json", "--no-update-lock-file", f"path:{flake.parent}",
        check=False,
    )  # fmt: skip
    assert out.returncode != 0


def test_devshell_evaluates_for_every_system(nix_env, flake_copy, stub_nixpkgs):
    out = _eval_with_stub(
        nix_env, flake_copy, stub_nixpkgs, "devShells", "--json", "--apply",
        "ds: builtins.mapAttrs (s: v: { packages = map (p: p.name) v.default.packages;"
        " inherit (v.default) UV_PYTHON UV_PYTHON_DOWNLOADS LD_LIBRARY_PATH; }) ds",
    )  # fmt: skip
    shells = json.loads(out.stdout)
    assert set(shells) == set(SYSTEMS)
    for shell in shells.values():
        assert set(shell["packages"]) >= REQUIRED_PACKAGES
        assert shell["UV_PYTHON"] == "/stub/python312/bin/python3.12"
        assert shell["UV_PYTHON_DOWNLOADS"] == "never"
        assert shell["LD_LIBRARY_PATH"] == "/stub/libstdcxx/lib"


def test_formatter_evaluates(nix_env, flake_copy, stub_nixpkgs):
    out = _eval_with_stub(
        nix_env, flake_copy, stub_nixpkgs, "formatter", "--json", "--apply",
        "builtins.mapAttrs (s: f: f.name)",
    )  # fmt: skip
    assert json.loads(out.stdout) == dict.fromkeys(SYSTEMS, "nixfmt-rfc-style")


def test_shell_hook_syncs_from_the_lock(nix_env, flake_copy, stub_nixpkgs, tmp_path):
    hook = _eval_with_stub(
        nix_env, flake_copy, stub_nixpkgs, "devShells.x86_64-linux.default.shellHook", "--raw"
    ).stdout
    project = tmp_path / "project"
    (project / "nix").mkdir(parents=True)
    shutil.copy2(ROOT / "nix" / "uv-sync", project / "nix" / "uv-sync")
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    log = tmp_path / "uv.log"
    # The venv each sync makes, when it is not .venv.
    echo = 'echo "$@ CPPFLAGS=$CPPFLAGS${UV_PROJECT_ENVIRONMENT:+ venv=$UV_PROJECT_ENVIRONMENT}"'
    (fake_bin / "uv").write_text(f'#!/bin/sh\n{echo} >> "{log}"\n')
    (fake_bin / "uv").chmod(0o755)
    (fake_bin / "pip").write_text(f'#!/bin/sh\necho "pip $@" >> "{log}"\n')
    (fake_bin / "pip").chmod(0o755)
    env = {**nix_env, "PATH": f"{fake_bin}:{os.environ['PATH']}", "PYTHONPATH": "/leak"}
    out = subprocess.run(
        ["bash", "-c", hook + '\nprintf "%s\\n%s\\n" "$PATH" "${PYTHONPATH-unset}"'],
        cwd=project, env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    path, pythonpath = out.stdout.splitlines()[-2:]
    # Through nix/uv-sync, with the C flags meinheld needs on GCC 14 (tests/toolchain/).
    flags = "CPPFLAGS=-D_GNU_SOURCE -include sys/uio.h"
    root = project.resolve()
    assert log.read_text().splitlines() == [
        f"sync --frozen --project {root} {flags}",
        # The BentoML model server's own venv, from its own lock.
        f"sync --frozen --project {root}/services/bentoml_model {flags}"
        f" venv={root}/.venv-bentoml",
    ]
    assert path.split(":")[0] == f"{project.resolve()}/.venv/bin"
    assert pythonpath == "unset"
