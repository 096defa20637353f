"""The model API's device: ``k`` exclusive slots shared by every worker process of one service.

A real model is bound by a resource its calls share (an accelerator runs one batch at a time;
a CPU model's cores). The fake model's sleep costs nothing, so without a device many sleeps run
at once and batching them can only add waiting. With ``SCORING_LAB_DEVICE_SLOTS=k`` a
prediction (a batch of one, or a micro-batch) holds one of k slots while it computes.

A device is one per service, not per worker, so the slots must be exclusive across the
gunicorn or uvicorn worker processes. They are tokens in a named FIFO, as GNU make's jobserver
shares job slots between processes: the server's master process (``services/serve.py``, before
any worker exists) makes the FIFO, writes k one-byte tokens and keeps it open for its lifetime;
every worker opens it by the path it finds in its environment (``DEVICE_ENV``; gunicorn's
forked workers and uvicorn's spawned ones both inherit the master's environment, which a
semaphore object made before the fork would not reach in uvicorn's spawned workers). Taking a
slot reads one byte, giving it back writes it. Why this and not the alternatives:
- a waiter sleeps in the kernel and is woken when a token comes back (no polling, no CPU spent
  on the host being measured), and it is an ordinary file descriptor, so the async workers wait
  for it on the event loop (``add_reader``), and gevent's patched ``select`` waits for it in a
  greenlet;
- ``flock`` on k lock files releases a dead holder's slot, but cannot wait for "any of k"
  without polling; a SysV semaphore with SEM_UNDO could, but needs ctypes or a new package and
  a thread per async waiter;
- the cost: a worker killed while it holds a slot (SIGKILL mid-prediction) loses that token
  until the service restarts. ``free_slots()`` (the FIFO's byte count, every worker's view)
  shows it at ``GET /api/v1/debug/model``.

Without a master (an app built in a test, one process) the app makes its own FIFO: one
process is then the whole service, so the slots are still exclusive.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import fcntl
import os
import select
import shutil
import struct
import tempfile
import termios
import time
from collections.abc import AsyncIterator, Iterator

from services.settings import Settings

# Not a setting (no SCORING_LAB_ prefix): the master's hand-over of its FIFO to its workers.
DEVICE_ENV = "_SCORING_LAB_DEVICE_FIFO"
TOKEN = b"t"

_owned: list[int] = []  # FIFOs this process made: kept open so their tokens live on


def create_fifo(slots: int) -> str:
    """Make a FIFO holding ``slots`` tokens, kept open (and so filled) until this process
    exits, then removed. Its path."""
    folder = tempfile.mkdtemp(prefix="scoring-lab-device-")
    path = os.path.join(folder, "slots")
    os.mkfifo(path, 0o600)
    # O_RDWR: Linux opens a FIFO for read and write without waiting for a peer (fifo(7)), and
    # the FIFO never sees end-of-file or a broken pipe while this descriptor lives.
    fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    os.write(fd, TOKEN * slots)
    _owned.append(fd)
    atexit.register(_remove, folder, os.getpid())
    return path


def _remove(folder: str, maker: int) -> None:
    # Forked workers inherit this atexit entry; a worker that exits (and is replaced by the
    # master) must not take the FIFO away from the replacement.
    if os.getpid() == maker:
        shutil.rmtree(folder, ignore_errors=True)


def share_with_workers(settings: Settings) -> None:
    """In a server's master, before it starts workers: the device every worker will share."""
    if settings.device_slots > 0:
        os.environ[DEVICE_ENV] = create_fifo(settings.device_slots)


class Device:
    """One worker's handle on the service's device (``open_device``). ``hold()`` (blocking
    threads and gevent's greenlets) and ``hold_async()`` (coroutines) take a slot; this
    worker's holds and busy seconds are counted for the debug endpoint."""

    def __init__(self, slots: int, path: str | None) -> None:
        self.slots = slots
        self._fd = None if path is None else os.open(path, os.O_RDWR | os.O_NONBLOCK)
        self._waiters: collections.deque[asyncio.Future] = collections.deque()
        self._reading = False
        self.holds = 0
        self.busy_s = 0.0

    @property
    def bounded(self) -> bool:
        return self._fd is not None

    def _take(self) -> bool:
        try:
            return os.read(self._fd, 1) == TOKEN
        except BlockingIOError:
            return False

    def _give(self) -> None:
        os.write(self._fd, TOKEN)  # at most `slots` bytes are ever in the pipe: never blocks

    def free_slots(self) -> int | None:
        """Slots free right now across every worker (None: no device limit)."""
        if self._fd is None:
            return None
        buffer = fcntl.ioctl(self._fd, termios.FIONREAD, b"\0\0\0\0")
        return struct.unpack("i", buffer)[0]

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        """Count the block as one hold of this worker's (slot taken or not)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.holds += 1
            self.busy_s += time.perf_counter() - started

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """A slot for the block (for sync workers; waits in ``select``, which gevent patches)."""
        if self._fd is None:
            with self.busy():
                yield
            return
        while not self._take():
            select.select([self._fd], [], [])
        try:
            with self.busy():
                yield
        finally:
            self._give()

    @contextlib.asynccontextmanager
    async def hold_async(self) -> AsyncIterator[None]:
        """A slot for the block, waited for on the event loop; this worker's waiters are served
        in arrival order (the other workers compete for the same tokens)."""
        await self.acquire()
        try:
            with self.busy():
                yield
        finally:
            self.release()

    async def acquire(self) -> None:
        """Wait on the event loop for a slot (no limit: at once); ``release()`` gives it back."""
        if self._fd is None or (not self._waiters and self._take()):
            return
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        self._waiters.append(waiter)
        if not self._reading:
            loop.add_reader(self._fd, self._hand_out, loop)
            self._reading = True
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._give()  # handed a token just as it was cancelled: not ours to keep
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        if self._fd is not None:
            self._give()

    def _hand_out(self, loop: asyncio.AbstractEventLoop) -> None:
        """The FIFO is readable: give tokens to waiters in order while there are both."""
        while self._waiters:
            if self._waiters[0].done():  # cancelled while waiting
                self._waiters.popleft()
                continue
            if not self._take():
                return
            self._waiters.popleft().set_result(None)
        loop.remove_reader(self._fd)
        self._reading = False

    def stats(self) -> dict[str, object]:
        return {"device_slots": self.slots, "device_free_slots": self.free_slots(),
                "device_holds": self.holds, "device_busy_s": round(self.busy_s, 6)}


def open_device(settings: Settings) -> Device:
    """This worker's handle on the device: the master's FIFO when there is one, else (an app
    built outside a server: one process) a FIFO of its own; no limit with 0 slots."""
    if settings.device_slots == 0:
        return Device(0, None)
    path = os.environ.get(DEVICE_ENV) or create_fifo(settings.device_slots)
    return Device(settings.device_slots, path)
