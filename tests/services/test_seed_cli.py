"""``python -m services seed`` as the deploy runs it: against a real redis-server that requires a
password and keeps its data in a snapshot (dir + dbfilename, no save schedule, like the lab's
redis.conf). Seeded features survive a Redis restart; the password comes from a file and never
appears in the output."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from services import features
from tests.conftest import ROOT, free_port, require, stop, wait_until

PASSWORD = "s3cret-Seed-Test-0123456789"


@dataclass
class Store:
    port: int
    directory: Path
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [require("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1",
             "--requirepass", PASSWORD, "--dir", str(self.directory),
             "--dbfilename", "features.rdb", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_until(self._answers, 10, f"redis-server on port {self.port}")

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"-NOAUTH")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: no shutdown save; what comes back is what the seeder saved."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, password=PASSWORD)


@pytest.fixture
def store(tmp_path) -> Iterator[Store]:
    server = Store(free_port(), tmp_path)
    server.start()
    yield server
    if server.process is not None:
        stop(server.process)


def _seed(*args: str, url: str | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "services", "seed", *args]
    if url is not None:
        cmd += ["--redis-url", url]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)


@pytest.mark.slow  # each starts, kills and restarts a redis-server
def test_persisted_features_survive_a_killed_redis_and_are_not_reseeded(store, tmp_path):
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")
    done = _seed("--entities", "40", "--password-file", str(secret), "--persist",
                 "--if-needed", url=store.url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("seeded 40 entities") and "saved to disk" in done.stdout
    assert features.unsaved_changes(store.client()) == 0

    store.kill()
    store.start()
    client = store.client()
    assert features.stored_entities(client) == 40
    assert client.get(features.key("39")) == features.encode(features.vector("39"))

    again = _seed("--entities", "40", "--password-file", str(secret), "--persist",
                  "--if-needed", "--wait", "5", url=store.url)
    assert again.returncode == 0 and again.stdout.startswith("already seeded: 40"), again
    # Other writers (the job queues share this Redis) do not make the features look unsaved.
    client.set("rq:queue:other-writer", b"1")
    assert features.unsaved_changes(client) > 0
    other = _seed("--entities", "40", "--password-file", str(secret), "--persist",
                  "--if-needed", url=store.url)
    assert other.returncode == 0 and other.stdout.startswith("already seeded: 40"), other
    more = _seed("--entities", "50", "--password-file", str(secret), "--persist",
                 "--if-needed", url=store.url)
    assert more.returncode == 0 and "(10 new, saved to disk)" in more.stdout, more


@pytest.mark.slow
def test_without_persist_a_killed_redis_comes_back_empty(store, tmp_path):
    """The control: what --persist changes (the lab's Redis has no save schedule)."""
    secret = tmp_path / "password"
    secret.write_text(PASSWORD)
    assert _seed("--entities", "5", "--password-file", str(secret), url=store.url).returncode == 0
    store.kill()
    store.start()
    assert features.stored_entities(store.client()) == 0


@pytest.mark.slow
def test_a_missing_or_wrong_password_is_a_clean_error_that_never_shows_it(store, tmp_path):
    missing = _seed("--entities", "5", url=store.url)
    assert missing.returncode == 1 and missing.stderr.startswith("error: Redis at"), missing
    assert "Traceback" not in missing.stderr

    wrong = tmp_path / "wrong"
    wrong.write_text("not-" + PASSWORD)
    refused = _seed("--entities", "5", "--password-file", str(wrong), url=store.url)
    assert refused.returncode == 1 and "refused the password" in refused.stderr, refused
    assert "not-" + PASSWORD not in refused.stderr + refused.stdout

    empty = tmp_path / "empty"
    empty.write_text("\n")
    bad = _seed("--entities", "5", "--password-file", str(empty), url=store.url)
    assert bad.returncode == 2 and str(empty) in bad.stderr, bad
    absent = _seed("--entities", "5", "--password-file", str(tmp_path / "nope"), url=store.url)
    assert absent.returncode == 2 and "nope" in absent.stderr, absent

    # A password in the URL works and is shown masked.
    in_url = f"redis://:{PASSWORD}@127.0.0.1:{store.port}/0"
    done = _seed("--entities", "5", url=in_url)
    assert done.returncode == 0, done.stderr
    assert PASSWORD not in done.stdout and f":***@127.0.0.1:{store.port}" in done.stdout


def test_wait_gives_up_on_a_redis_that_never_answers():
    port = free_port()  # nothing listens here
    done = _seed("--entities", "1", "--wait", "0.5", url=f"redis://127.0.0.1:{port}/0")
    assert done.returncode == 1 and f"127.0.0.1:{port}" in done.stderr, done
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ("redis://:pw@10.0.0.1:6379/0", "redis://:***@10.0.0.1:6379/0"),
    ("redis://user:pw@h:1/0", "redis://user:***@h:1/0"),
    ("rediss://:p%40w@h:1/0?x=1", "rediss://:***@h:1/0?x=1"),
])
def test_redact_hides_only_the_password(url, shown):
    assert features.redact(url) == shown
