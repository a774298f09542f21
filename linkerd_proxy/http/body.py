"""Message bodies: streams of data chunks, then optional trailers.

A body is read by exactly one consumer (``await body.read()`` until it returns
``b""``; then ``body.trailers`` is final) and written by exactly one producer (a
wire driver, or a layer that synthesizes a body).

Back-pressure is built in: :class:`PipeBody` holds at most ``limit`` bytes, and
:meth:`PipeBody.send` waits while it is full, so a slow reader slows the writer
and nothing buffers without bound. HTTP/2 drivers, which must not block their
connection's read loop on one stream, use :meth:`PipeBody.push` instead (the
stream's flow-control window bounds what the peer can send) and return window
from the ``on_consumed`` callback as the consumer reads.

When the consumer stops early it calls :meth:`Body.aclose`; a producer then gets
:class:`BodyAbandoned` from ``send`` (an HTTP/2 driver resets the stream, an
HTTP/1 driver closes the connection). When the producer fails (the peer reset the
stream, the connection broke) it calls :meth:`PipeBody.fail` and the consumer's
next ``read`` raises the error.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

import trio

from linkerd_proxy.errors import ProxyError

# Reads and closes that complete without waiting honour cancellation
# (``checkpoint_if_cancelled``) but do not yield to the scheduler: on the HTTP
# hot path every yield is a task switch per request.

Headers = list[tuple[bytes, bytes]]

#: How much a PipeBody holds before ``send`` waits.
DEFAULT_LIMIT = 64 * 1024


class BodyError(ProxyError):
    """A body could not be read to its end (the peer went away, or reset it)."""


class StreamReset(BodyError):
    """The peer reset the stream; ``code`` is the HTTP/2 error code."""

    def __init__(self, code: int, message: str = "") -> None:
        super().__init__(message or f"stream reset with code {code}")
        self.code = code


class BodyAbandoned(ProxyError):
    """Raised to a producer whose consumer closed the body early."""


class Body:
    """The consumer side of a body. Subclasses implement :meth:`read`.

    Attributes:
        content_length: the exact length when the producer knows it, else ``None``.
        trailers: set once :meth:`read` has returned ``b""`` (``None``: no trailers).
    """

    content_length: int | None = None
    trailers: Headers | None = None

    @property
    def is_end_stream(self) -> bool:
        """True when the body is known to be empty without reading it."""
        return False

    @property
    def buffered(self) -> int:
        """More than 0 when :meth:`read` can return data without waiting (a
        writer then sends it with the head, in one write); 0 when unknown."""
        return 0

    async def read(self) -> bytes:
        """The next chunk, or ``b""`` at the end.

        Raises:
            BodyError: the body failed before its end.
        """
        raise NotImplementedError

    async def aclose(self) -> None:
        """Tell the producer nothing more will be read (idempotent)."""

    async def read_all(self, limit: int) -> bytes:
        """Read the whole body, at most ``limit`` bytes.

        Raises:
            BodyError: the body failed, or is longer than ``limit``.
        """
        parts: list[bytes] = []
        total = 0
        while chunk := await self.read():
            total += len(chunk)
            if total > limit:
                await self.aclose()
                raise BodyError(f"body longer than {limit} bytes")
            parts.append(chunk)
        return b"".join(parts)


class EmptyBody(Body):
    """A body with no data (and optionally trailers)."""

    def __init__(self, trailers: Headers | None = None) -> None:
        self.content_length = 0
        self._trailers = trailers

    @property
    def is_end_stream(self) -> bool:
        return self._trailers is None

    async def read(self) -> bytes:
        await trio.lowlevel.checkpoint_if_cancelled()
        self.trailers = self._trailers
        return b""


class BytesBody(Body):
    """A body held in memory (synthesized responses, buffered retries)."""

    def __init__(self, data: bytes, trailers: Headers | None = None) -> None:
        self.content_length = len(data)
        self._data: bytes | None = data
        self._trailers = trailers

    @property
    def is_end_stream(self) -> bool:
        return not self._data and self._trailers is None

    @property
    def buffered(self) -> int:
        return len(self._data) if self._data else 0

    async def read(self) -> bytes:
        await trio.lowlevel.checkpoint_if_cancelled()
        data, self._data = self._data, None
        if data:
            return data
        self.trailers = self._trailers
        return b""


class PipeBody(Body):
    """A body written by a producer task while a consumer reads it.

    Args:
        content_length: the exact length if known (framing for the next hop).
        limit: bytes held before :meth:`send` waits.
        on_consumed: called with the size of each chunk the consumer takes (an
            HTTP/2 driver returns flow-control window from it).
    """

    def __init__(
        self,
        *,
        content_length: int | None = None,
        limit: int = DEFAULT_LIMIT,
        on_consumed: Callable[[int], None] | None = None,
    ) -> None:
        self.content_length = content_length
        self._limit = limit
        self._on_consumed = on_consumed
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._finished = False
        self._final_trailers: Headers | None = None
        self._error: BaseException | None = None
        self._abandoned = False
        self._readers = trio.lowlevel.ParkingLot()
        self._writers = trio.lowlevel.ParkingLot()

    # --- producer ------------------------------------------------------------------

    @property
    def abandoned(self) -> bool:
        """True once the consumer has closed the body."""
        return self._abandoned

    @property
    def buffered(self) -> int:
        return self._buffered

    def push(self, data: bytes) -> None:
        """Append ``data`` without waiting (the caller bounds what it pushes).

        Raises:
            BodyAbandoned: the consumer has closed the body.
        """
        if self._abandoned:
            raise BodyAbandoned("the body's reader went away")
        if self._finished:
            raise RuntimeError("push after finish")
        if data:
            self._chunks.append(data)
            self._buffered += len(data)
            self._readers.unpark_all()

    async def send(self, data: bytes) -> None:
        """Append ``data``, first waiting while the body holds ``limit`` bytes.

        Raises:
            BodyAbandoned: the consumer has closed the body.

        Cancellation: safe; ``data`` is not appended if cancelled while waiting.
        """
        while self._buffered >= self._limit and not self._abandoned:
            await self._writers.park()
        await trio.lowlevel.checkpoint_if_cancelled()
        self.push(data)

    async def wait_drained(self) -> None:
        """Wait until the consumer has taken everything pushed so far."""
        while self._buffered and not self._abandoned:
            await self._writers.park()

    def finish(self, trailers: Headers | None = None) -> None:
        """End the body (with trailers, if any). Idempotent after the first call."""
        if self._finished or self._error is not None:
            return
        self._finished = True
        self._final_trailers = trailers
        self._readers.unpark_all()

    def fail(self, error: BaseException) -> None:
        """End the body with an error; the consumer's next read raises it."""
        if self._finished or self._error is not None:
            return
        self._error = error
        self._readers.unpark_all()

    # --- consumer ------------------------------------------------------------------

    async def read(self) -> bytes:
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                self._writers.unpark_all()
                if self._on_consumed is not None:
                    self._on_consumed(len(chunk))
                return chunk
            if self._error is not None:
                raise self._error
            if self._finished:
                self.trailers = self._final_trailers
                return b""
            await self._readers.park()

    async def aclose(self) -> None:
        if not self._abandoned:
            self._abandoned = True
            self._chunks.clear()
            self._buffered = 0
            self._writers.unpark_all()
        await trio.lowlevel.checkpoint_if_cancelled()

    @property
    def is_end_stream(self) -> bool:
        return self._finished and not self._chunks and self._final_trailers is None
