# The scoring-lab development shell. Nix pins the toolchain (interpreter, Redis, probes,
# deploy tools); the Python packages come from uv.lock, the same lock `make setup` and CI use.
{ pkgs }:

let
  # 3.12, not the moving python3: meinheld fails to import on 3.13 (requires-python < 3.13).
  python = pkgs.python312;
in
# mkShell rather than mkShellNoCC: meinheld ships only an sdist, so `uv sync` compiles it
# and needs the C compiler that stdenv brings.
pkgs.mkShell {
  packages = [
    python
    pkgs.uv
    pkgs.redis
    pkgs.lshw
    pkgs.openssh
    pkgs.util-linux # taskset, for pinning servers and load generators to CPU sets
    pkgs.iproute2
    # No pkgs.sudo: sudo only works setuid root, which nothing in the Nix store is; the deploy's
    # `become` and the multi-host test use the host's /usr/bin/sudo.
    pkgs.procps
    pkgs.gnumake
    pkgs.git
    # No pkgs.ansible: ansible-core and ansible-lint are locked in uv.lock and land in
    # .venv/bin. A second, nixpkgs-built ansible-core would be a second source of truth for
    # the deploy's Python side (and its site-packages would leak in through PYTHONPATH).
  ];

  # Why uv instead of uv2nix: uv2nix would build every package in Nix, but needs extra flake
  # inputs (uv2nix, pyproject-nix, build-system-pkgs) whose hashes cannot be verified from
  # the offline machines this lab is developed on. `uv sync --frozen` installs exactly the
  # lock, never re-resolves, and so cannot drift from what `make setup` installs (both run it
  # through nix/uv-sync).

  # uv must use the Nix interpreter, never one it downloads: the interpreter is part of the
  # pinned toolchain, and a downloaded one would bypass the flake.lock.
  UV_PYTHON = python.interpreter;
  UV_PYTHON_DOWNLOADS = "never";
  # UV_PROJECT_ENVIRONMENT stays unset on purpose: the venv is .venv, as without Nix.

  # manylinux wheels (greenlet, kiwisolver, scipy, ...) link libstdc++.so.6 and libgcc_s.so.1,
  # which the manylinux policy expects from the host. A Nix interpreter's loader never looks
  # in /usr/lib, so without this the imports fail with "libstdc++.so.6: cannot open".
  LD_LIBRARY_PATH = pkgs.lib.makeLibraryPath [ pkgs.stdenv.cc.cc.lib ];

  shellHook = ''
    # Python's setup hook puts every input's site-packages on PYTHONPATH; the venv is the
    # only place Python packages may come from.
    unset PYTHONPATH

    scoring_lab_root="$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
    # nix/uv-sync = `uv sync --frozen` (install exactly uv.lock, never re-lock) with the C
    # flags meinheld needs on GCC 14, this pin's compiler; nothing else installs packages.
    if ! sh "$scoring_lab_root/nix/uv-sync" --project "$scoring_lab_root"; then
      echo "devshell: 'nix/uv-sync' (uv sync --frozen) failed; .venv may be incomplete" >&2
    fi
    # The BentoML model server's own venv, from its own lock (services/bentoml_model/), as
    # `make setup` makes it.
    if ! UV_PROJECT_ENVIRONMENT="$scoring_lab_root/.venv-bentoml" sh "$scoring_lab_root/nix/uv-sync" \
        --project "$scoring_lab_root/services/bentoml_model"; then
      echo "devshell: the BentoML venv's sync failed; .venv-bentoml may be incomplete" >&2
    fi
    export PATH="$scoring_lab_root/.venv/bin:$PATH"
    unset scoring_lab_root
  '';
}
