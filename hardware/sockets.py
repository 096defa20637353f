"""Count the inet sockets (TCP and UDP, v4 and v6, listening ones included) of a set of pids.

psutil's Process.net_connections() re-parses every /proc/net table for every process; a load
generator with thousands of connections times a dozen workers would then make the sampler the
busiest process on the monitor host. Here each table is parsed once per sample and network
namespace, and each process contributes only the inodes of its socket file descriptors.
Linux only; elsewhere the counts are None.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

INET_TABLES = ("tcp", "tcp6", "udp", "udp6")


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


def inet_inodes(pid: int) -> set[int]:
    """Inodes of every inet socket in the network namespace of pid."""
    inodes = set()
    for table in INET_TABLES:
        try:
            with open(f"/proc/{pid}/net/{table}") as f:
                next(f, None)  # header
                for line in f:
                    fields = line.split()
                    if len(fields) > 9:
                        inodes.add(int(fields[9]))
        except OSError:
            continue  # no IPv6 in this kernel, or the process just exited
    return inodes


def _netns(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return "?"


class InetCounter:
    """Per-sample helper: distinct inet sockets of a group of pids."""

    def __init__(self) -> None:
        self._tables: dict[str, set[int]] = {}

    def count(self, pids: Iterable[int]) -> int | None:
        """Distinct inet sockets held by pids (a socket shared after fork counts once)."""
        inodes: set[int] = set()
        pids = list(pids)
        readable = not pids  # no live process: zero sockets, not "unknown"
        for pid in pids:
            try:
                socks = socket_inodes(pid)
            except OSError:
                continue  # exited, or another user's process
            readable = True
            if not socks:
                continue
            ns = _netns(pid)
            if ns not in self._tables:
                self._tables[ns] = inet_inodes(pid)
            inodes |= socks & self._tables[ns]
        return len(inodes) if readable else None
