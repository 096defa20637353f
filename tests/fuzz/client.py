"""A raw HTTP/1.1 client for hostile requests: it sends exactly the bytes it is given (in
pieces, with pauses, or cut off) and reads one response with a bounded wait, so a server that
hangs is a result ("hang"), never a stuck test."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field

# Longer than any deadline of the lab's servers (request timeout ~3 s, model/Redis 2 s):
# a case that gets nothing back within this is a hang.
READ_TIMEOUT_S = 10.0


@dataclass
class Reply:
    status: int | None  # None: no response (see outcome)
    outcome: str = "response"  # response | closed (no response, connection closed) | hang | refused
    headers: dict[str, list[str]] = field(default_factory=dict)
    body: bytes = b""
    elapsed_s: float = 0.0

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None


def _read_until(sock: socket.socket, buffer: bytearray, marker: bytes, deadline: float) -> int:
    while (end := buffer.find(marker)) < 0:
        _recv_into(sock, buffer, deadline)
    return end


def _recv_into(sock: socket.socket, buffer: bytearray, deadline: float) -> None:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    sock.settimeout(left)
    chunk = sock.recv(65536)
    if not chunk:
        raise EOFError
    buffer += chunk


def _read_exact(sock, buffer: bytearray, size: int, deadline: float) -> None:
    while len(buffer) < size:
        _recv_into(sock, buffer, deadline)


def _parse(sock, buffer: bytearray, method: str, deadline: float) -> Reply:
    reply = _parse_one(sock, buffer, method, deadline)
    while reply.status is not None and 100 <= reply.status < 200:  # 100 Continue: next
        reply = _parse_one(sock, buffer, method, deadline)
    return reply


def _parse_one(sock, buffer: bytearray, method: str, deadline: float) -> Reply:
    end = _read_until(sock, buffer, b"\r\n\r\n", deadline)
    head = bytes(buffer[:end]).decode("latin-1").split("\r\n")
    del buffer[: end + 4]
    parts = head[0].split(" ", 2)
    status = int(parts[1])
    headers: dict[str, list[str]] = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    reply = Reply(status, headers=headers)
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return reply
    if "chunked" in ",".join(headers.get("transfer-encoding", [])).lower():
        body = bytearray()
        while True:
            line_end = _read_until(sock, buffer, b"\r\n", deadline)
            size = int(bytes(buffer[:line_end]).split(b";")[0], 16)
            del buffer[: line_end + 2]
            if size == 0:
                _read_until(sock, buffer, b"\r\n", deadline)  # no trailers from the lab
                break
            _read_exact(sock, buffer, size + 2, deadline)
            body += buffer[:size]
            del buffer[: size + 2]
        reply.body = bytes(body)
    elif "content-length" in headers:
        size = int(headers["content-length"][0])
        _read_exact(sock, buffer, size, deadline)
        reply.body = bytes(buffer[:size])
    else:  # until the server closes
        try:
            while True:
                _recv_into(sock, buffer, deadline)
        except EOFError:
            pass
        reply.body = bytes(buffer)
    return reply


def exchange(port: int, pieces: list[bytes], method: str, *, pause_s: float = 0.0,
             half_close: bool = False, timeout_s: float = READ_TIMEOUT_S) -> Reply:
    """Send ``pieces`` (pausing ``pause_s`` between them), optionally shut down the write side,
    then read one response within ``timeout_s``."""
    started = time.monotonic()
    deadline = started + timeout_s
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
    except OSError:
        return Reply(None, "refused")
    with sock:
        buffer = bytearray()
        try:
            for i, piece in enumerate(pieces):
                if i and pause_s:
                    time.sleep(pause_s)
                sock.sendall(piece)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server may answer (413, 431) and close before taking everything
        try:
            reply = _parse(sock, buffer, method, deadline)
        except TimeoutError:
            return Reply(None, "hang", elapsed_s=time.monotonic() - started)
        except (EOFError, ConnectionError):
            return Reply(None, "closed", elapsed_s=time.monotonic() - started)
        except (ValueError, IndexError):
            return Reply(None, "garbled", body=bytes(buffer[:200]),
                         elapsed_s=time.monotonic() - started)
    reply.elapsed_s = time.monotonic() - started
    return reply
