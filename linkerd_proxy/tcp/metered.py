"""A stream wrapper that reports bytes and the close to a connection's TCP metrics.

The opaque path counts bytes in its copy loop (so that the splice fast path keeps
them); HTTP drivers read and write through streams, so the accepted connection and
every client connection of an HTTP endpoint are wrapped in :class:`MeteredStream`.
"""

from __future__ import annotations

import trio

from linkerd_proxy.tcp.accepted import ConnMetrics


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

    def _seen(self, exc: BaseException) -> None:
        cause: BaseException | None = exc
        while cause is not None and self._errno is None:
            if isinstance(cause, OSError) and cause.errno:
                self._errno = cause.errno
            cause = cause.__cause__ or cause.__context__

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        try:
            await self.inner.send_all(data)
        except (OSError, trio.BrokenResourceError) as exc:
            self._seen(exc)
            raise
        self.metrics.add_write(len(data))

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        try:
            data = await self.inner.receive_some(max_bytes)
        except (OSError, trio.BrokenResourceError) as exc:
            self._seen(exc)
            raise
        if data:
            self.metrics.add_read(len(data))
        return bytes(data)

    async def send_eof(self) -> None:
        if isinstance(self.inner, trio.abc.HalfCloseableStream):
            await self.inner.send_eof()
        else:
            await self.inner.aclose()

    async def aclose(self) -> None:
        try:
            await self.inner.aclose()
        finally:
            if not self._closed:
                self._closed = True
                self.metrics.close(self._errno)
