"""meinheld's greenlet patching (``SCORING_LAB_MEINHELD_PATCH``) made to run with greenlet 3.

``meinheld.patch.patch_all()`` replaces ``socket.socket`` with ``meinheld.msocket.socket``, whose
waits (connect, recv, send) call ``meinheld.server.trampoline``. That C function parks the
request's greenlet on the fd and switches to its parent, the hub running meinheld's event loop;
it finds the parent with ``PyGreenlet_GET_PARENT`` (server.c ``meinheld_trampoline`` ->
greensupport.c ``greenlet_getparent``), a macro of the greenlet 0.4.0 header meinheld bundles
(meinheld/server/greenlet.h): it reads the struct field ``parent``, 7 pointers into the object.
Since greenlet 2.0 the object is ``{PyObject_HEAD, weakreflist, dict, pimpl}``, 40 bytes, so
meinheld reads 16 bytes past its end, whatever the allocator put there, and hands it to
``PyGreenlet_Switch``: "TypeError: bad argument type for built-in operation" (seen from
redis-py's connect) or a SIGSEGV (the worker dies). Patch order plays no part: the first
cooperative wait fails, whichever module made the socket. No greenlet with the old layout
builds on Python >= 3.11, and the read is compiled into meinheld's server.so.

What this module does instead, in each worker before the server starts (gunicorn post_fork):

1. greenlets get room for that field: the greenlet type's allocation size is raised to cover
   it (allocation zeroes the memory; greenlet 3 never looks past its own 40 bytes), and before
   each cooperative wait the waiting greenlet's real parent is written where meinheld reads
   it. meinheld's other stale reads (``stack_start``/``stack_stop`` in ``greenlet_dead``) are
   only reached for greenlets meinheld ``spawn``s, which the lab never does.
2. only reads wait in meinheld's loop; a connect or a send that must wait blocks in ``poll``,
   bounded by the socket's timeout (on loopback or a LAN a connect takes well under a
   millisecond, and the lab's request bodies fit the socket buffer: sends do not wait). The
   reason is meinheld's epoll backend (picoev_epoll.c ``picoev_update_events_internal``): it
   registers an fd with EPOLLEXCLUSIVE, after which the kernel refuses EPOLL_CTL_MOD, and it
   defers deletes; so an fd keeps the interest of its first wait. msocket waits for a connect
   with read+write: every later read wait on that socket was woken at once by "writable",
   never blocked and never timed out (msocket's recv loop spun until the answer came).
3. a read wait's timeout reaches meinheld as whole seconds, rounded up: msocket truncates it
   with ``int()``, and meinheld reads 0 as "no timeout", so a socket timeout under 1 s never
   fired. A deadline (services/sync_app/deadline.py) is thus kept within 1 s, not to the
   millisecond. meinheld's own timeout exception is raised as TimeoutError, as a socket's is.
4. a wait outside a request greenlet (the worker's main greenlet: nothing to switch to) blocks
   in ``poll`` as an ordinary socket would, and closing a socket after the server loop ended
   skips meinheld's ``cancel_wait`` (it reads the freed loop: a SIGSEGV at every worker exit).

Where the layout is not the one this was checked against, ``incompatibility`` says why and the
service refuses to start (services/serve.py) instead of crashing mid-run.
"""

from __future__ import annotations

import ctypes
import math
import select

# meinheld's bundled greenlet 0.4.0 struct: PyObject_HEAD (refcount, type), then stack_start,
# stack_stop, stack_copy, stack_saved, stack_prev, parent. One pointer each.
_POINTER = ctypes.sizeof(ctypes.c_void_p)
_PARENT_OFFSET = 7 * _POINTER
_ROOMY_SIZE = _PARENT_OFFSET + _POINTER
# PyTypeObject: PyObject_VAR_HEAD (refcount, type, size), tp_name, then tp_basicsize.
_TP_BASICSIZE_OFFSET = 4 * _POINTER
# greenlet >= 2: {PyObject_HEAD, weakreflist, dict, pimpl}.
_GREENLET_3_SIZE = 5 * _POINTER
_UPSTREAM = ("meinheld/server/server.c meinheld_trampoline -> greensupport.c greenlet_getparent "
             "-> PyGreenlet_GET_PARENT of meinheld/server/greenlet.h (greenlet 0.4.0)")

_loop_ended = False


def _basicsize_field(greenlet_type: type) -> ctypes.c_ssize_t:
    return ctypes.c_ssize_t.from_address(id(greenlet_type) + _TP_BASICSIZE_OFFSET)


def incompatibility() -> str | None:
    """Why meinheld's cooperative sockets cannot run with the installed greenlet, or None."""
    import greenlet

    size = greenlet.greenlet.__basicsize__
    return layout_problem(size, _basicsize_field(greenlet.greenlet).value, greenlet.__version__)


def layout_problem(size: int, size_read: int, version: str) -> str | None:
    """None when a greenlet object of ``size`` bytes (``size_read``: the same size read where
    this module writes it) already has meinheld's parent field, or is greenlet 3's layout."""
    if size >= _ROOMY_SIZE or (size == _GREENLET_3_SIZE and size_read == size):
        return None
    return (f"SCORING_LAB_MEINHELD_PATCH=true cannot run: meinheld 1.0.2 reads a greenlet's "
            f"parent at byte {_PARENT_OFFSET} (greenlet 0.4 layout), and greenlet {version} "
            f"objects are {size} bytes in a layout the lab cannot adapt; upstream: {_UPSTREAM}")


def patch_worker(server, worker) -> None:
    """gunicorn ``post_fork``: the worker's sockets become meinheld's cooperative ones (the
    requests/redis clients included), adapted as the module says; runs in the worker before
    meinheld's server creates any request greenlet."""
    import greenlet
    from meinheld import msocket, patch
    from meinheld import server as meinheld_server

    if (reason := incompatibility()) is not None:
        raise RuntimeError(reason)  # serve.py refuses earlier; this keeps a stray call safe
    field = _basicsize_field(greenlet.greenlet)
    field.value = max(field.value, _ROOMY_SIZE)
    patch.patch_all()

    trampoline = meinheld_server.trampoline
    cancel_wait = msocket.cancel_wait

    def wait(fileno: int, timeout: float | None, *, read: bool, write: bool) -> None:
        current = greenlet.getcurrent()
        parent = current.parent
        if write or parent is None or type(current) is not greenlet.greenlet:
            _blocking_wait(fileno, timeout, read=read, write=write)
            return
        ctypes.c_void_p.from_address(id(current) + _PARENT_OFFSET).value = id(parent)
        try:
            trampoline(fileno, read=read, write=write, timeout=math.ceil(timeout or 0))
        except meinheld_server.timeout:
            # an OSError of meinheld's own: the clients recognise a timeout by TimeoutError
            raise TimeoutError("timed out") from None

    # msocket's send/recv/connect call these module-level names at each wait.
    msocket.wait_read = lambda fileno, timeout=None: wait(fileno, timeout, read=True,
                                                          write=False)
    msocket.wait_write = lambda fileno, timeout=None: wait(fileno, timeout, read=False,
                                                           write=True)
    msocket.wait_readwrite = lambda fileno, timeout=None: wait(fileno, timeout, read=True,
                                                               write=True)
    msocket.cancel_wait = lambda fileno: None if _loop_ended else cancel_wait(fileno)

    run = worker.run

    def run_then_mark_loop_ended() -> None:
        global _loop_ended
        try:
            run()
        finally:
            _loop_ended = True

    worker.run = run_then_mark_loop_ended


def _blocking_wait(fileno: int, timeout: float | None, *, read: bool, write: bool) -> None:
    poller = select.poll()
    poller.register(fileno, (select.POLLIN if read else 0) | (select.POLLOUT if write else 0))
    if not poller.poll(None if timeout is None else max(0, timeout) * 1000):
        raise TimeoutError("timed out")
