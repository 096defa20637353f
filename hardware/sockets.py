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
Linux only.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping

INET_TABLES = ("tcp", "tcp6", "udp", "udp6")
NOT_INET_TTL_S = 10.0


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
                    fields = line.split(None, 10)
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
    """Keeps inode verdicts from one sample to the next; one instance per sampler."""

    def __init__(self) -> None:
        self._inet: set[int] = set()
        self._not_inet: dict[int, float] = {}  # inode -> when the verdict was taken
        self.table_reads = 0  # how often the kernel tables were read (for cost checks)

    def count(self, groups: Mapping[str, Iterable[int]]) -> dict[str, int | None]:
        """Distinct inet sockets per group of pids (a socket shared after fork counts once).

        None for a group whose processes all had unreadable fds (exited, another user's).
        """
        now = time.monotonic()
        tables: dict[str, set[int]] = {}  # read at most once per namespace in this call
        held_now: set[int] = set()
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
                unknown = {
                    i
                    for i in socks - self._inet
                    if now - self._not_inet.get(i, -NOT_INET_TTL_S) >= NOT_INET_TTL_S
                }
                if unknown:
                    ns = _netns(pid)
                    if ns not in tables:
                        tables[ns] = inet_inodes(pid)
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
        return counts
