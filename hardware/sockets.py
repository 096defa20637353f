"""Count the inet sockets (TCP and UDP, v4 and v6, listening ones included) of groups of pids.

A process's fds say only "socket:[inode]"; whether that socket is inet is found in the
/proc/<pid>/net/{tcp,tcp6,udp,udp6} tables. Generating those tables is expensive for the kernel
(it walks the whole connection hash table: ~2-3 ms per table on a 24 GB VM even when nearly
empty), and psutil's Process.net_connections() regenerates all four for every process. So:
- an inode's verdict is cached: a socket never changes family, so an inet inode stays inet
  while it exists;
- the tables are read only when a sampled process holds a socket inode with no verdict yet, at
  most once per sample and network namespace;
- "not inet" verdicts expire (a TCP socket is only listed once bound or connected, so a socket
  caught in between must be looked at again).
A server with a stable set of sockets then costs a listdir and a few readlinks per sample.

The same table reads also give each connected TCP socket its two endpoints (local and peer
address:port), cached per inode like the verdict: a connected socket never changes either end.
`links` uses them to list the connections between lab processes (which scoring worker holds a
connection to which model worker) without reading any table of its own.
Linux only.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterable, Mapping

INET_TABLES = ("tcp", "tcp6", "udp", "udp6")
NOT_INET_TTL_S = 10.0
TCP_LISTEN = "0A"  # st column of /proc/net/tcp: a listening socket has no peer


def _endpoint(hex_addr: str) -> str:
    """'0100007F:1388' (as /proc/net/tcp{,6} print it) -> '127.0.0.1:5000', '[::1]:5000'.

    The kernel prints the address as 32-bit words in host order (little-endian here)."""
    addr, port = hex_addr.split(":")
    raw = b"".join(bytes.fromhex(addr[i:i + 8])[::-1] for i in range(0, len(addr), 8))
    if len(raw) == 4:
        return f"{socket.inet_ntop(socket.AF_INET, raw)}:{int(port, 16)}"
    return f"[{socket.inet_ntop(socket.AF_INET6, raw)}]:{int(port, 16)}"


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets a process holds open; OSError if /proc/<pid>/fd is unreadable."""
    fd_dir = f"/proc/{pid}/fd"
    inodes = set()
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(f"{fd_dir}/{fd}")
        except OSError:
            continue  # closed since listdir
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def inet_inodes(pid: int, tcp_ends: dict[int, tuple[str, str]] | None = None) -> set[int]:
    """Inodes of every inet socket in the network namespace of pid; with tcp_ends, also
    fill it with (local, peer) of every TCP socket that has a peer (not listening)."""
    inodes = set()
    for table in INET_TABLES:
        try:
            with open(f"/proc/{pid}/net/{table}") as f:
                next(f, None)  # header
                for line in f:
                    fields = line.split(None, 10)
                    if len(fields) > 9:
                        inode = int(fields[9])
                        inodes.add(inode)
                        if (tcp_ends is not None and table.startswith("tcp") and inode
                                and fields[3] != TCP_LISTEN):
                            tcp_ends[inode] = (_endpoint(fields[1]), _endpoint(fields[2]))
        except OSError:
            continue  # no IPv6 in this kernel, or the process just exited
    return inodes


def _netns(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return "?"


class InetCounter:
    """Keeps inode verdicts from one sample to the next; one instance per sampler."""

    def __init__(self) -> None:
        self._inet: set[int] = set()
        self._not_inet: dict[int, float] = {}  # inode -> when the verdict was taken
        self.table_reads = 0  # how often the kernel tables were read (for cost checks)
        self._tcp: dict[int, tuple[str, str]] = {}  # inode -> (local, peer), connected TCP
        self._held: dict[int, set[int]] = {}  # pid -> socket inodes, as of the last count()

    def count(self, groups: Mapping[str, Iterable[int]]) -> dict[str, int | None]:
        """Distinct inet sockets per group of pids (a socket shared after fork counts once).

        None for a group whose processes all had unreadable fds (exited, another user's).
        """
        now = time.monotonic()
        tables: dict[str, set[int]] = {}  # read at most once per namespace in this call
        held_now: set[int] = set()
        self._held = {}
        counts: dict[str, int | None] = {}
        for name, pids in groups.items():
            pids = list(pids)
            inodes: set[int] = set()
            readable = not pids  # no live process: zero sockets, not "unknown"
            for pid in pids:
                try:
                    socks = socket_inodes(pid)
                except OSError:
                    continue
                readable = True
                held_now |= socks
                self._held[pid] = socks
                unknown = {
                    i
                    for i in socks - self._inet
                    if now - self._not_inet.get(i, -NOT_INET_TTL_S) >= NOT_INET_TTL_S
                }
                if unknown:
                    ns = _netns(pid)
                    if ns not in tables:
                        tables[ns] = inet_inodes(pid, self._tcp)
                        self.table_reads += 1
                    for inode in unknown:
                        if inode in tables[ns]:
                            self._inet.add(inode)
                            self._not_inet.pop(inode, None)
                        else:
                            self._not_inet[inode] = now
                inodes |= socks & self._inet
            counts[name] = len(inodes) if readable else None
        # Forget closed sockets so the caches stay as small as the live socket set.
        self._inet &= held_now
        self._not_inet = {i: t for i, t in self._not_inet.items() if i in held_now}
        self._tcp = {i: e for i, e in self._tcp.items() if i in held_now}
        return counts

    def links(self, pids: Iterable[int]) -> dict[int, list[str]]:
        """Per pid, its TCP connections whose other end is held by one of pids, as
        "local->peer" strings, from the sockets seen by the last count() (no table read).

        Only sockets whose endpoints were read when first seen are listed: a socket caught
        while connecting (before it had a peer) is listed from the next table read on.
        """
        pids = [p for p in pids if p in self._held]
        ends = {p: [self._tcp[i] for i in sorted(self._held[p]) if i in self._tcp] for p in pids}
        locals_ = {local for pairs in ends.values() for local, _ in pairs}
        return {p: [f"{local}->{peer}" for local, peer in pairs if peer in locals_]
                for p, pairs in ends.items()}
