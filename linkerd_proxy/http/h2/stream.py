"""Per-stream state of an HTTP/2 connection, and the body the read loop feeds.

Sits between ``conn.py`` (which owns the streams) and the drivers. A
:class:`RecvBody` returns flow-control window to the connection as its consumer
reads, and all of it at once when the consumer goes away.
"""

from __future__ import annotations

from typing import Protocol

import trio

from linkerd_proxy.http.body import PipeBody


class _Core(Protocol):
    def ack(self, stream_id: int, n: int) -> None: ...

    def body_abandoned(self, st: StreamState) -> None: ...


class StreamGone(Exception):
    """Raised to a sender whose stream was reset or whose connection ended."""


class StreamState:
    """What a driver tracks for one stream."""

    def __init__(self, stream_id: int) -> None:
        self.id = stream_id
        self.body: RecvBody | None = None
        self.window = trio.lowlevel.ParkingLot()
        self.reset_code: int | None = None
        self.scope = trio.CancelScope()
        self.send_done = False
        self.recv_done = False
        # client side: the response head, or why there will be none
        self.head: tuple[int, list[tuple[bytes, bytes]]] | None = None
        self.error: BaseException | None = None
        self.counted = False


class RecvBody(PipeBody):
    """A body fed by the read loop; window is returned as the consumer reads."""

    def __init__(self, core: _Core, st: StreamState, content_length: int | None) -> None:
        super().__init__(content_length=content_length, on_consumed=self._consumed)
        self._core = core
        self._st = st

    def _consumed(self, n: int) -> None:
        self._core.ack(self._st.id, n)

    def abandon(self) -> None:
        """The consumer is gone: return the window of what is held, tell the driver."""
        if self.abandoned:
            return
        held = self.buffered
        self._abandoned = True
        self._chunks.clear()
        self._buffered = 0
        self._writers.unpark_all()
        self._core.ack(self._st.id, held)
        self._core.body_abandoned(self._st)

    async def aclose(self) -> None:
        self.abandon()
        await trio.lowlevel.checkpoint()
