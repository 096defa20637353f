"""The sync model client against a raw model API: the deadline bounds the whole call, and a
pooled connection the model closed is retried once on a fresh one."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from services import errors
from services.settings import Settings
from services.sync_app.clients import ModelClient

OK = b'{"detail": 0.04}'
ANSWER = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
          % (len(OK), OK))


class RawModel:
    """Answers each connection's requests with ``behaviour(conn, n)`` (n: request number)."""

    def __init__(self, behaviour) -> None:
        self.behaviour = behaviour
        self.connections = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/predict"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn) -> None:
        with conn:
            for n in range(100):
                data = b""
                while b"[" not in data or not data.endswith(b"]"):
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                if not self.behaviour(conn, n):
                    return

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw_model():
    servers = []

    def make(behaviour) -> RawModel:
        servers.append(RawModel(behaviour))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def test_a_connection_closed_by_the_model_is_retried_once(raw_model):
    def first_only(conn, n):  # answers once, then closes on the next request of the conn
        if n == 0:
            conn.sendall(ANSWER)
            return True
        return False

    model = raw_model(first_only)
    client = ModelClient(Settings(), model.url)
    assert client.predict(b"[1]") == 0.04
    assert client.predict(b"[1]") == 0.04  # pooled connection dead: retried on a new one
    assert model.connections == 2


def test_an_unsolicited_408_on_a_pooled_connection_is_retried_once(raw_model):
    # meinheld writes "408 Request Timeout" on an idle keep-alive connection; a request sent
    # on it just then reads that 408 as its answer.
    def stale_408(conn, n):
        if n == 0:
            conn.sendall(ANSWER)
            return True
        conn.sendall(b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n"
                     b"Connection: close\r\n\r\n")
        return False

    model = raw_model(stale_408)
    client = ModelClient(Settings(), model.url)
    assert client.predict(b"[1]") == 0.04
    assert client.predict(b"[1]") == 0.04
    assert model.connections == 2


def test_a_trickling_model_is_cut_at_the_deadline_not_per_read(raw_model):
    def trickle(conn, n):
        for byte in ANSWER:
            time.sleep(0.3)
            conn.sendall(bytes([byte]))
        return True

    client = ModelClient(Settings(model_timeout_s=1.0), raw_model(trickle).url)
    started = time.monotonic()
    with pytest.raises(errors.ApiError) as caught:
        client.predict(b"[1]")
    assert (caught.value.status, caught.value.code) == (504, "model_timeout")
    assert time.monotonic() - started < 1.0 + 1.0  # each read was < 0.3 s apart
