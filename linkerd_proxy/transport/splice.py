"""The kernel-side copy fast path for opaque TCP: ``os.splice`` through a pipe.

Sits under ``duplex.proxy_streams``, which picks it when both ends are plain
TCP :class:`trio.SocketStream` (no TLS, no wrapper) and ``os.splice`` exists.
Bytes move socket -> pipe -> socket inside the kernel; Python only sees
counts, and trio only sees readiness (``wait_readable``/``wait_writable``), so
one direction costs a couple of system calls per pipe-full.

Details that matter:

- Each direction owns a non-blocking pipe, closed in ``finally`` (cancellation
  included). Bytes still in the pipe when the copy is torn down are dropped,
  which is what closing the connection does anyway.
- The source's EOF becomes ``shutdown(SHUT_WR)`` on the destination (half-close
  passes through; the other direction keeps going).
- A partial ``splice(pipe -> socket)`` re-sets ``TCP_NODELAY`` on the
  destination (BENCH.md lesson 2): the kernel otherwise holds the tail of a
  partial write back as if more were coming, stalling small responses.
- ``on_read(n)`` is called for every chunk moved, like the stream copy.
- A checkpoint every few chunks keeps cancellation and fairness when data is
  always ready.

Pipe size (``PIPE_SIZE``), measured with 1 GiB one way through
``proxy_streams`` over loopback (sender: ``sendfile``; receiver: ``MSG_TRUNC``;
2 cores shared with them and with other work, so throughput is noisy and the
proxy's CPU seconds per GiB is the steadier figure). Medians of 7 rounds, two
separate runs:

=====================  ===============  =================
copy                   MB/s (run 1/2)   CPU s/GiB (1/2)
=====================  ===============  =================
splice, 64 KiB pipe    1539 / 1017      0.49 / 0.44
splice, 256 KiB pipe   1570 / 1374      0.35 / 0.35
splice, 1 MiB pipe     1302 / 1359      0.30 / 0.30
raw recv/send copy     1004 / 713       0.73 / 0.79
=====================  ===============  =================

256 KiB is the starting size: about 25% less CPU than the default 64 KiB,
while a non-root user's pipe budget (``/proc/sys/fs/pipe-user-pages-soft``,
16384 pages by default, counted by capacity) lasts for 128 open spliced
connections rather than 32 at 1 MiB. Past the budget the kernel gives new pipes
two pages and refuses to grow them; the copy still works, with more system calls.

A direction that has moved :data:`BULK_AFTER` bytes is a bulk transfer: its pipe
grows to :data:`BULK_PIPE_SIZE` (if the budget allows; else it keeps what it has).
In the benchmark's pods (1 GiB one way, proxy vs nginx stream, 3 rounds each,
medians, one run): 64 KiB pipes 710 MB/s (nginx 1,050), 128 KiB 914 (1,014),
256 KiB 1,130 (1,018), 1 MiB 1,251 (1,045) at 0.56 CPU s/GiB against nginx's
0.92. Short connections keep the small pipe; long copies get the large one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
from collections.abc import Callable

import trio

from .sockopt import set_nodelay

#: Whether this platform has ``os.splice`` (Linux, Python 3.10+).
HAS_SPLICE = hasattr(os, "splice")

#: The pipe capacity asked for each direction (see the module docstring).
PIPE_SIZE = 256 * 1024
#: Bytes moved one way after which a direction's pipe grows to BULK_PIPE_SIZE.
BULK_AFTER = 8 * 1024 * 1024
BULK_PIPE_SIZE = 1024 * 1024

# Consecutive chunks moved without waiting before a forced checkpoint.
_BATCH = 16

_SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 0) | getattr(os, "SPLICE_F_NONBLOCK", 0)
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)
_SPLICEABLE_FAMILIES = (socket.AF_INET, socket.AF_INET6)


def can_splice(a: object, b: object) -> bool:
    """Whether both objects are plain TCP ``trio.SocketStream``s splice can drive."""
    if not HAS_SPLICE:
        return False
    for stream in (a, b):
        if type(stream) is not trio.SocketStream:
            return False
        if stream.socket.family not in _SPLICEABLE_FAMILIES:
            return False
        if stream.socket.fileno() < 0:
            return False
    return True


def _open_pipe(size: int) -> tuple[int, int, int]:
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    # Above /proc/sys/fs/pipe-max-size (unprivileged): keep the default size.
    return r, w, _set_pipe_size(w, size, 65536)


def grow_pipe(w: int, size: int, capacity: int) -> int:
    """Ask for ``size`` bytes of capacity on the (empty) pipe whose write end is
    ``w``; return the capacity it has now (unchanged when the budget refuses)."""
    return _set_pipe_size(w, size, capacity)


def _set_pipe_size(w: int, size: int, capacity: int) -> int:
    with contextlib.suppress(OSError):
        fcntl.fcntl(w, _F_SETPIPE_SZ, size)
    try:
        return int(fcntl.fcntl(w, _F_GETPIPE_SZ))
    except OSError:
        return capacity


def shutdown_write(stream: trio.SocketStream) -> None:
    """Send FIN on ``stream``; a peer that is already gone is not an error."""
    try:
        stream.socket.shutdown(socket.SHUT_WR)
    except OSError as exc:
        if exc.errno != errno.ENOTCONN:
            raise


async def splice_one_way(
    src: trio.SocketStream,
    dst: trio.SocketStream,
    on_read: Callable[[int], None],
    *,
    pipe_size: int | None = None,
) -> int:
    """Move bytes from ``src`` to ``dst`` until ``src`` reaches EOF, then half-close ``dst``.

    Args:
        src: the stream to read from.
        dst: the stream to write to; gets ``shutdown(SHUT_WR)`` at ``src``'s EOF.
        on_read: called with the size of every chunk read from ``src``.
        pipe_size: the pipe capacity to ask for; ``None`` for :data:`PIPE_SIZE`.

    Returns:
        The number of bytes moved.

    Raises:
        OSError: from either socket (e.g. ``ECONNRESET``, ``EPIPE``).

    Cancellation:
        Safe at any wait; the pipe is closed and any bytes in it are dropped.
    """
    src_fd = src.socket.fileno()
    dst_fd = dst.socket.fileno()
    r, w, capacity = _open_pipe(PIPE_SIZE if pipe_size is None else pipe_size)
    total = 0
    batch = 0
    # Only the default pipe grows (an explicit ``pipe_size`` is kept as asked).
    grow_at = BULK_AFTER if pipe_size is None and capacity < BULK_PIPE_SIZE else None
    try:
        while True:
            try:
                n = os.splice(src_fd, w, capacity, flags=_SPLICE_FLAGS)
            except BlockingIOError:
                # The pipe is empty here, so it is the socket that has nothing.
                await trio.lowlevel.wait_readable(src_fd)
                batch = 0
                continue
            if n == 0:
                break
            total += n
            on_read(n)
            pending = n
            while pending:
                try:
                    sent = os.splice(r, dst_fd, pending, flags=_SPLICE_FLAGS)
                except BlockingIOError:
                    await trio.lowlevel.wait_writable(dst_fd)
                    batch = 0
                    continue
                pending -= sent
                if pending:
                    set_nodelay(dst.socket)
            if grow_at is not None and total >= grow_at:
                grow_at = None  # the pipe is empty here: resizing is safe
                capacity = grow_pipe(w, BULK_PIPE_SIZE, capacity)
            batch += 1
            if batch >= _BATCH:
                batch = 0
                await trio.lowlevel.checkpoint()
        shutdown_write(dst)
        return total
    finally:
        os.close(r)
        os.close(w)
