"""A stream wrapper that reports bytes and the close to a connection's TCP metrics.

The opaque path counts bytes in its copy loop (so that the splice fast path keeps
them); HTTP drivers read and write through streams, so the accepted connection and
every client connection of an HTTP endpoint are wrapped in :class:`MeteredStream`.

It is also the HTTP drivers' socket fast path (BENCH.md lesson 1): over a plain
``trio.SocketStream`` it makes the system call on the non-blocking socket first and
waits for readiness only on ``EAGAIN``, instead of trio's two scheduler passes per
call. Cancellation is still honoured at every call (``checkpoint_if_cancelled``),
and every :data:`_BATCH` calls that did not wait yield to the scheduler once, so a
busy connection cannot starve the others.
"""

from __future__ import annotations

import errno as errno_codes
import socket
import ssl

import trio

from linkerd_proxy.tcp.accepted import ConnMetrics

#: Calls completed without waiting before one scheduler pass.
_BATCH = 16
_RECV_SIZE = 64 * 1024


def _translate(exc: OSError) -> trio.BrokenResourceError | trio.ClosedResourceError:
    # As trio.SocketStream does: EBADF means closed under us, anything else broken.
    if exc.errno == errno_codes.EBADF:
        return trio.ClosedResourceError("this socket was already closed")
    return trio.BrokenResourceError(f"socket connection broken: {exc}")


class MeteredStream(trio.abc.HalfCloseableStream):
    """Counts bytes through ``inner``; closes ``metrics`` when closed.

    The errno of the first OS error seen (``ECONNRESET``...) is reported with the
    close, for ``tcp_close_total{errno}``.
    """

    def __init__(self, inner: trio.abc.Stream, metrics: ConnMetrics) -> None:
        self.inner = inner
        self.metrics = metrics
        self._errno: int | None = None
        self._closed = False
        self._sock: socket.socket | None = None
        self._streak = 0
        self._sending = False
        self._receiving = False
        if isinstance(inner, trio.SocketStream):
            s = inner.socket
            view = socket.socket(s.family, s.type, s.proto, fileno=s.fileno())
            view.setblocking(False)
            self._sock = view

    @property
    def raw_socket(self) -> socket.socket | None:
        """A non-blocking stdlib view of the socket (``None`` if not a plain
        socket, or closed), for checks that must not wait (see the HTTP/1 pool)."""
        return self._sock

    def _seen(self, exc: BaseException) -> None:
        cause: BaseException | None = exc
        while cause is not None and self._errno is None:
            # ssl.SSLError's errno is an OpenSSL code, not an OS errno.
            if isinstance(cause, OSError) and not isinstance(cause, ssl.SSLError) and cause.errno:
                self._errno = cause.errno
            cause = cause.__cause__ or cause.__context__

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        sock = self._sock
        if sock is None:
            if self._closed:
                raise trio.ClosedResourceError("stream is closed")
            try:
                await self.inner.send_all(data)
            except (OSError, trio.BrokenResourceError) as exc:
                self._seen(exc)
                raise
            self.metrics.add_write(len(data))
            return
        if self._sending:
            raise trio.BusyResourceError("another task is writing to this stream")
        await trio.lowlevel.checkpoint_if_cancelled()
        self._sending = True
        try:
            total = len(data)
            sent = 0
            waited = False
            view: memoryview | None = None
            while True:
                try:
                    sent += sock.send(data if view is None else view[sent:], socket.MSG_NOSIGNAL)
                except BlockingIOError:
                    waited = True
                    await trio.lowlevel.wait_writable(sock)
                    continue
                except OSError as exc:
                    self._seen(exc)
                    raise _translate(exc) from exc
                if sent >= total:
                    break
                if view is None:
                    view = memoryview(data)
            if not waited:
                # _yield_sometimes, inlined (two calls per request on the hot path).
                self._streak += 1
                if self._streak >= _BATCH:
                    self._streak = 0
                    await trio.lowlevel.cancel_shielded_checkpoint()
        finally:
            self._sending = False
        self.metrics.add_write(total)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        sock = self._sock
        if sock is None:
            if self._closed:
                raise trio.ClosedResourceError("stream is closed")
            try:
                data = await self.inner.receive_some(max_bytes)
            except (OSError, trio.BrokenResourceError) as exc:
                self._seen(exc)
                raise
            if data:
                self.metrics.add_read(len(data))
            return bytes(data)
        if self._receiving:
            raise trio.BusyResourceError("another task is reading from this stream")
        await trio.lowlevel.checkpoint_if_cancelled()
        self._receiving = True
        try:
            size = _RECV_SIZE if max_bytes is None else max_bytes
            while True:
                try:
                    data = sock.recv(size)
                    break
                except BlockingIOError:
                    self._streak = 0
                    await trio.lowlevel.wait_readable(sock)
                except OSError as exc:
                    self._seen(exc)
                    raise _translate(exc) from exc
            self._streak += 1  # _yield_sometimes, inlined
            if self._streak >= _BATCH:
                self._streak = 0
                await trio.lowlevel.cancel_shielded_checkpoint()
        finally:
            self._receiving = False
        if data:
            self.metrics.add_read(len(data))
        return data

    async def send_eof(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("stream is closed")
        if isinstance(self.inner, trio.abc.HalfCloseableStream):
            await self.inner.send_eof()
        else:
            await self.inner.aclose()

    async def aclose(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.detach()  # the inner stream owns the descriptor
        try:
            await self.inner.aclose()
        finally:
            if not self._closed:
                self._closed = True
                self.metrics.close(self._errno)
