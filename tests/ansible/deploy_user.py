"""A non-root deploy user for the multi-host test, as real hosts have one: a system user with
passwordless sudo and SSH key login.

The test's hosts are network namespaces of this machine: they share its users, its sudoers and
its filesystem, so one user serves every host. The user reaches through SSH what the lab role
needs: the interpreter and uv the tests run on, and a copy of uv's cache (the namespaces reach
no package index, and uv writes to its cache). When those live under root's home (0700, e.g.
pyenv's Pythons and ``pip install --user``'s uv), the sshds run in a private mount namespace
where /root shows only those directories, read-only for the user as they are for root's other
users; nothing on the machine changes its permissions.

Not a test module (no ``test_`` prefix); the multi-host test imports it from its directory.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# The test's user and the mark in its GECOS field: the test only reuses or removes a user that
# carries the mark, never one of the machine's own.
USER = "labdeploy"
MARK = "scoring-lab multi-host test"
# sudo skips files in sudoers.d whose name has a dot: the temporary name is never read.
SUDOERS = Path("/etc/sudoers.d/scoring-lab-test-labdeploy")
ROOT_HOME = Path("/root")


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=120)


def process_uid(pid: int) -> int:
    """The real uid of a process (from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for process {pid}")


@dataclass
class DeployUser:
    """The deploy user, its sudoers file and the copies it needs, made by this test."""

    workdir: Path
    name: str = USER
    uid: int = -1
    python: str = ""
    uv: str = ""
    # Directories under /root the user's sshd sessions see (bind-mounted into a private view).
    exposed: list[Path] = field(default_factory=list)

    @property
    def home(self) -> Path:
        return self.workdir / f"home-{self.name}"

    @property
    def uv_cache(self) -> Path:
        return self.workdir / "uv-cache"

    @property
    def root_view(self) -> Path:
        return self.workdir / "root-view"

    def create(self, uv: str) -> None:
        """Create (or reuse this test's earlier) user, its sudoers file and home, and give it
        the test's interpreter, uv and a copy of uv's cache."""
        try:
            existing = pwd.getpwnam(self.name)
        except KeyError:
            existing = None
        if existing is not None and existing.pw_gecos != MARK:
            pytest.fail(f"user {self.name!r} exists and was not made by this test "
                        f"(GECOS {existing.pw_gecos!r}); remove it or change USER in {__file__}")
        if existing is None:
            _run("useradd", "--system", "--user-group", "--shell", "/bin/sh",
                 "--home-dir", str(self.home), "--comment", MARK, self.name)
        entry = pwd.getpwnam(self.name)
        self.uid = entry.pw_uid  # from here on, remove() deletes the user
        if existing is not None:  # left by an earlier run whose removal raced with its processes
            _run("usermod", "--home", str(self.home), self.name)
        # "*": no password login, but not locked ("!..."), which sshd refuses without PAM.
        _run("usermod", "--password", "*", self.name)
        self.home.mkdir(mode=0o700)
        os.chown(self.home, entry.pw_uid, entry.pw_gid)
        self._write_sudoers()
        # The user reaches its home, the SSH key and the run dirs' parent through the workdir.
        self.workdir.chmod(0o755)

        self.python = str(Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}."
                          f"{sys.version_info[1]}")
        self.uv = uv
        for path, subtree in ((self.python, Path(sys.base_prefix)),
                              (self.uv, Path(self.uv).parent)):
            if self.can_execute(path):
                continue
            if not subtree.is_relative_to(ROOT_HOME):
                pytest.fail(f"{path} is not executable for {self.name} and not under {ROOT_HOME}: "
                            "the test cannot hand it to the deploy user")
            self.exposed.append(subtree)
        for subtree in self.exposed:
            (self.root_view / subtree.relative_to(ROOT_HOME)).mkdir(parents=True, exist_ok=True)
        self._copy_uv_cache(entry.pw_uid, entry.pw_gid)

    def _write_sudoers(self) -> None:
        rule = f"{self.name} ALL=(ALL:ALL) NOPASSWD: ALL\n"
        staged = SUDOERS.with_name(SUDOERS.name + ".new")
        staged.write_text(rule)
        staged.chmod(0o440)
        checked = _run("visudo", "-c", "-q", "-f", str(staged), check=False)
        if checked.returncode != 0:
            staged.unlink()
            pytest.fail(f"visudo refuses {rule!r}: {checked.stdout}{checked.stderr}")
        os.replace(staged, SUDOERS)

    def _copy_uv_cache(self, uid: int, gid: int) -> None:
        """A copy the user owns of the uv cache `make setup` filled (uv writes to its cache)."""
        source = _run(*self.uv.split(), "cache", "dir").stdout.strip()
        started = time.monotonic()
        _run("cp", "-a", source, str(self.uv_cache))
        _run("chown", "-R", f"{uid}:{gid}", str(self.uv_cache))
        print(f"\nuv cache copied for {self.name} in {time.monotonic() - started:.1f} s")

    def can_execute(self, path: str) -> bool:
        return _run("runuser", "-u", self.name, "--", "test", "-x", path,
                    check=False).returncode == 0

    def mount_prefix(self) -> list[str]:
        """Command prefix for the sshds: a private mount namespace where /root holds only the
        exposed directories (empty when nothing needs exposing)."""
        if not self.exposed:
            return []
        binds = "".join(
            f'mount --bind "{subtree}" "{self.root_view / subtree.relative_to(ROOT_HOME)}"\n'
            for subtree in self.exposed)
        script = f'set -e\n{binds}mount --rbind "{self.root_view}" "{ROOT_HOME}"\nexec "$@"\n'
        return ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", script, "sh"]

    def remove(self) -> str | None:
        """Remove the sudoers file, the user and the uv cache copy; returns a warning when the
        user had to be left (userdel refuses while a process of it still runs)."""
        with contextlib.suppress(FileNotFoundError):
            SUDOERS.unlink()
        with contextlib.suppress(FileNotFoundError):
            SUDOERS.with_name(SUDOERS.name + ".new").unlink()
        shutil.rmtree(self.uv_cache, ignore_errors=True)
        if self.uid < 0:
            return None
        deadline = time.monotonic() + 10
        while True:
            done = _run("userdel", self.name, check=False)
            if done.returncode in (0, 6):  # removed, or already gone
                return None
            if time.monotonic() > deadline:
                return (f"user {self.name} left in place (userdel: {done.stderr.strip()}); "
                        "the next run reuses it")
            time.sleep(0.5)
