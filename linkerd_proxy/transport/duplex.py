"""Bidirectional copy between a client and a server: the opaque TCP forwarder.

Sits at the end of every opaque path (outbound opaque endpoints, inbound
forward to the app, undetected protocols, TLS passthrough): once both
connections exist, :func:`proxy_streams` moves bytes both ways until both sides
are done, and reports what happened for ``tcp_*`` metrics.

Three copiers, picked per connection pair:

1. ``splice.py`` when both ends are plain TCP :class:`trio.SocketStream` and the
   platform has ``os.splice``: the kernel moves the bytes.
2. A raw socket copy when both are ``SocketStream`` but splice is off or absent:
   ``recv_into``/``send`` are tried first on the non-blocking socket and trio
   waits for readiness only on ``EAGAIN`` (BENCH.md lesson 1), with a
   checkpoint every few chunks so that cancellation is honoured.
3. The generic ``trio.abc.Stream`` copy for everything else (TLS, wrappers).

Half-close passes through (BENCH.md lesson 5): EOF from one side becomes
``send_eof`` on the other, and the opposite direction keeps going until it ends
too. A destination that cannot half-close (e.g. ``trio.SSLStream``; our ``TlsStream`` can) is closed
outright at the source's EOF, ending both directions, so that its peer sees the
end instead of waiting forever. An error in either direction stops both; both
streams are always closed on return.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Callable, Iterator

import attrs
import trio

from .splice import can_splice, shutdown_write, splice_one_way

#: Read size for the stream copies (each direction holds one buffer this big).
BUFFER_SIZE = 64 * 1024

# Consecutive chunks moved without waiting before a forced checkpoint.
_BATCH = 16

OnRead = Callable[[int], None]


@attrs.frozen
class DuplexResult:
    """How a proxied connection pair ended.

    Attributes:
        client_bytes: bytes read from the client by ``proxy_streams`` (the
            ``prefix`` is not included: whoever read it counted it).
        server_bytes: bytes read from the server.
        error: the first error in either direction, or ``None`` on a clean end.
        errno: the errno of the first OS error (``ECONNRESET`` ...), for the
            ``tcp_close_total{errno}`` label; ``None`` otherwise.
        spliced: whether the splice fast path carried the bytes.
    """

    client_bytes: int
    server_bytes: int
    error: Exception | None
    errno: int | None
    spliced: bool


def error_errno(exc: BaseException | None) -> int | None:
    """The errno of the first ``OSError`` in ``exc``'s cause/context chain.

    ``ssl.SSLError`` is an ``OSError`` whose ``errno`` is an OpenSSL error code
    (a peer closing without close_notify gives 8, which is not ``ENOEXEC``): TLS
    errors have no errno, as in the reference.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and not isinstance(exc, ssl.SSLError) and exc.errno:
            return exc.errno
        exc = exc.__cause__ or exc.__context__
    return None


@contextlib.contextmanager
def _borrow(sock: trio.socket.SocketType) -> Iterator[socket.socket]:
    """A stdlib view of a trio socket's fd, for synchronous non-blocking calls.

    The view is detached (not closed) on exit, so the trio socket keeps the fd.
    """
    view = socket.socket(sock.family, sock.type, sock.proto, fileno=sock.fileno())
    try:
        view.setblocking(False)
        yield view
    finally:
        view.detach()


async def copy_socket_one_way(
    src: trio.SocketStream, dst: trio.SocketStream, on_read: OnRead, *, size: int = BUFFER_SIZE
) -> int:
    """Copy ``src`` to ``dst`` with syscalls first, readiness waits on ``EAGAIN``.

    Half-closes ``dst`` at ``src``'s EOF.

    Returns:
        The number of bytes copied.

    Raises:
        OSError: from either socket.

    Cancellation:
        Safe at any wait; a chunk read but not yet written is dropped.
    """
    buf = bytearray(size)
    view = memoryview(buf)
    total = 0
    batch = 0
    with _borrow(src.socket) as s, _borrow(dst.socket) as d:
        while True:
            try:
                n = s.recv_into(buf)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(s)
                batch = 0
                continue
            if n == 0:
                break
            total += n
            on_read(n)
            sent = 0
            while sent < n:
                try:
                    sent += d.send(view[sent:n], socket.MSG_NOSIGNAL)
                except BlockingIOError:
                    await trio.lowlevel.wait_writable(d)
                    batch = 0
            batch += 1
            if batch >= _BATCH:
                batch = 0
                await trio.lowlevel.checkpoint()
    shutdown_write(dst)
    return total


async def copy_stream_one_way(
    src: trio.abc.ReceiveStream,
    dst: trio.abc.SendStream,
    on_read: OnRead,
    *,
    size: int = BUFFER_SIZE,
) -> int:
    """Copy ``src`` to ``dst`` through trio's stream API until ``src``'s EOF.

    Does not half-close ``dst``: the caller decides (see ``proxy_streams``).

    Returns:
        The number of bytes copied.

    Raises:
        trio.BrokenResourceError: either stream broke (the ``OSError`` is the
            ``__cause__``).
    """
    total = 0
    while True:
        data = await src.receive_some(size)
        if not data:
            return total
        total += len(data)
        on_read(len(data))
        await dst.send_all(data)


def _ignore(_n: int) -> None:
    pass


@attrs.define
class _Pair:
    """Mutable state of one ``proxy_streams`` call."""

    scope: trio.CancelScope
    spliced: bool
    counts: dict[str, int] = attrs.field(factory=lambda: {"client": 0, "server": 0})
    error: Exception | None = None

    async def run(
        self,
        side: str,
        src: trio.abc.Stream,
        dst: trio.abc.Stream,
        on_read: OnRead,
        prefix: bytes,
    ) -> None:
        def count(n: int) -> None:
            self.counts[side] += n
            on_read(n)

        try:
            if prefix:
                await dst.send_all(prefix)
            if isinstance(src, trio.SocketStream) and isinstance(dst, trio.SocketStream):
                if self.spliced:
                    await splice_one_way(src, dst, count)
                else:
                    await copy_socket_one_way(src, dst, count)
                return
            await copy_stream_one_way(src, dst, count)
            if isinstance(dst, trio.abc.HalfCloseableStream):
                await dst.send_eof()
            else:
                # No half-close available: end the whole pair so the peer sees
                # the end (both streams are closed in proxy_streams' finally).
                self.scope.cancel()
        except Exception as exc:
            if self.error is None:
                self.error = exc
            self.scope.cancel()


async def proxy_streams(
    client: trio.abc.Stream,
    server: trio.abc.Stream,
    *,
    on_client_read: OnRead | None = None,
    on_server_read: OnRead | None = None,
    prefix: bytes = b"",
    use_splice: bool = True,
) -> DuplexResult:
    """Copy bytes both ways between ``client`` and ``server`` until both end.

    Takes ownership of both streams: they are closed when this returns, however
    it returns.

    Args:
        client: the accepted connection.
        server: the connection to the endpoint.
        on_client_read: called with each chunk size read from the client
            (bytes read from the client = bytes written to the server).
        on_server_read: likewise for the server.
        prefix: bytes already read from the client (while detecting the
            protocol), sent to the server before anything else.
        use_splice: allow the ``os.splice`` path (``False`` forces the
            raw socket copy, for benchmarks and tests).

    Returns:
        A :class:`DuplexResult`. Errors in the copy are reported there, not
        raised.

    Cancellation:
        Both streams are closed and ``Cancelled`` propagates.
    """
    spliced = use_splice and can_splice(client, server)
    try:
        with trio.CancelScope() as scope:
            pair = _Pair(scope=scope, spliced=spliced)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    pair.run, "client", client, server, on_client_read or _ignore, prefix
                )
                nursery.start_soon(
                    pair.run, "server", server, client, on_server_read or _ignore, b""
                )
    finally:
        # Under an outer cancellation the first aclose raises Cancelled (its
        # checkpoint); the second must still run.
        try:
            await trio.aclose_forcefully(client)
        finally:
            await trio.aclose_forcefully(server)
    return DuplexResult(
        client_bytes=pair.counts["client"],
        server_bytes=pair.counts["server"],
        error=pair.error,
        errno=error_errno(pair.error),
        spliced=spliced,
    )
