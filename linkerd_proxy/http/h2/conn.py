"""The HTTP/2 connection core shared by the server driver and the client connection.

Sits under ``server.py`` and ``client.py`` and over a ``trio.abc.Stream``; the
protocol state machine is h2's (sans-IO), slightly adjusted in ``proto.py``.
:class:`H2Core` owns:

- the read loop: bytes in, h2 events out, dispatched synchronously (a handler never
  blocks the loop; request/response bodies are fed with ``PipeBody.push``, bounded
  by the stream windows we advertise, and window is returned as the consumer reads);
- the write loop: one task that takes everything h2 has queued and writes it in one
  call (BENCH.md lesson 4), so frames queued by many streams between two writes go
  out together;
- send-side flow control: a stream sending DATA waits for window, and every sender
  waits while more than ``max_send_buffer`` bytes are queued for the socket; the
  read loop stops reading while that is so (PING/SETTINGS floods cannot grow the
  output buffer: h2 auto-acks into it);
- per-stream state (``stream.py``), resets, PING keep-alive, and the end of the
  connection.

Sockets are driven with the system call first and a readiness wait only on
``EAGAIN`` (BENCH.md lesson 1); other streams (TLS, memory) through their methods.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Callable, Iterator

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import trio
from h2.errors import ErrorCodes

from linkerd_proxy.errors import H2ConnectionError, H2ProtocolError
from linkerd_proxy.http.body import Body, BodyError, StreamReset
from linkerd_proxy.http.h2.headers import MalformedHeaders, outbound_fields, parse_trailers
from linkerd_proxy.http.h2.proto import Proto
from linkerd_proxy.http.h2.stream import StreamGone, StreamState

log = logging.getLogger(__name__)

READ_SIZE = 64 * 1024
#: Consecutive reads served without a readiness wait before yielding anyway.
_READ_BATCH = 8
_IO_ERRORS = (OSError, trio.BrokenResourceError, trio.ClosedResourceError)


@contextlib.contextmanager
def _borrow(stream: trio.abc.Stream) -> Iterator[socket.socket | None]:
    """A stdlib view of a SocketStream's fd for non-blocking calls (else None)."""
    if not isinstance(stream, trio.SocketStream):
        yield None
        return
    sock = stream.socket
    view = socket.socket(sock.family, sock.type, sock.proto, fileno=sock.fileno())
    try:
        view.setblocking(False)
        yield view
    finally:
        view.detach()


class H2Core:
    """The connection loops and stream bookkeeping; subclasses handle stream heads.

    Subclasses override :meth:`on_head` (a request or response head arrived) and
    may override the other ``on_*`` hooks.
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        proto: Proto,
        *,
        max_send_buffer: int,
        close_timeout: float,
        keepalive: tuple[float, float] | None,
    ) -> None:
        self.stream = stream
        self.proto = proto
        self.streams: dict[int, StreamState] = {}
        self.error: BaseException | None = None
        self.closed = trio.Event()
        self._max_send_buffer = max_send_buffer
        self._close_timeout = close_timeout
        self._keepalive = keepalive
        self._sock: socket.socket | None = None
        self._writer = trio.lowlevel.ParkingLot()
        self._drained = trio.lowlevel.ParkingLot()
        self._inflight = 0
        self._write_failed = False
        self._window_waiters: set[StreamState] = set()
        self._pings: dict[bytes, trio.Event] = {}
        self._nursery: trio.Nursery | None = None
        self._dispatch: dict[type[h2.events.Event], Callable[[h2.events.Event], None]] = {}
        for kind, fn in (
            (h2.events.RequestReceived, self._on_head_event),
            (h2.events.ResponseReceived, self._on_head_event),
            (h2.events.DataReceived, self._on_data),
            (h2.events.TrailersReceived, self._on_trailers),
            (h2.events.StreamEnded, self._on_stream_ended),
            (h2.events.StreamReset, self._on_reset_event),
            (h2.events.WindowUpdated, self._on_window),
            (h2.events.RemoteSettingsChanged, self._on_settings),
            (h2.events.PingAckReceived, self._on_ping_ack),
            (h2.events.ConnectionTerminated, self._on_goaway_event),
        ):
            self._dispatch[kind] = fn  # type: ignore[assignment]

    # --- hooks ---------------------------------------------------------------------

    def on_head(self, stream_id: int, headers: list[tuple[bytes, bytes]], end: bool) -> None:
        raise NotImplementedError

    def on_reset(self, st: StreamState, code: int) -> None:
        """The peer reset ``st``."""

    def on_stream_ended(self, st: StreamState) -> None:
        """The peer finished sending on ``st``."""

    def on_goaway(self, error_code: int, last_stream_id: int) -> None:
        """The peer sent GOAWAY."""

    def on_settings(self, changed: dict[int, h2.settings.ChangedSetting]) -> None:
        """The peer's SETTINGS arrived."""

    def on_end(self) -> None:
        """The connection ended (``self.error`` says why, ``None``: gracefully)."""

    def body_abandoned(self, st: StreamState) -> None:
        """The consumer of ``st``'s received body went away."""

    @property
    def nursery(self) -> trio.Nursery:
        assert self._nursery is not None
        return self._nursery

    # --- running -------------------------------------------------------------------

    async def run(
        self, prefix: bytes = b"", *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the connection until it ends, then close the stream.

        Cancellation: cancels every stream task of the connection and closes it.
        """
        try:
            with _borrow(self.stream) as sock:
                self._sock = sock
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    nursery.start_soon(self._write_loop)
                    nursery.start_soon(self._read_loop, prefix)
                    if self._keepalive is not None:
                        nursery.start_soon(self._ping_loop, *self._keepalive)
                    self.started()
                    task_status.started()
                    await self.closed.wait()
                    with trio.move_on_after(self._close_timeout):
                        while (self.proto.pending_out or self._inflight) and not self._write_failed:
                            self._writer.unpark_all()
                            await self._drained.park()
                    nursery.cancel_scope.cancel()
        finally:
            self._sock = None
            if not self.closed.is_set():
                self.end(H2ConnectionError("HTTP/2 connection cancelled"))
            with trio.CancelScope(shield=True):
                await self.stream.aclose()

    def started(self) -> None:
        """Called once the loops run (subclasses start their own tasks here)."""

    def end(self, error: BaseException | None) -> None:
        """End the connection: fail what waits on it, let ``run`` flush and close."""
        if self.closed.is_set():
            return
        self.error = error
        for st in list(self.streams.values()):
            if st.body is not None:
                st.body.fail(BodyError(f"HTTP/2 connection closed: {error or 'shutdown'}"))
            st.window.unpark_all()
        self._drained.unpark_all()
        self.on_end()
        self.closed.set()
        self._writer.unpark_all()

    def wake_writer(self) -> None:
        """Have the write loop send what h2 has queued."""
        self._writer.unpark_all()

    def fatal(self, code: ErrorCodes, reason: str) -> None:
        """GOAWAY with ``code`` and end the connection."""
        log.info("closing HTTP/2 connection: %s", reason)
        with contextlib.suppress(h2.exceptions.H2Error):
            self.proto.close_connection(code)
        err = H2ProtocolError(reason) if code != ErrorCodes.NO_ERROR else None
        self.end(err)

    async def _read_loop(self, prefix: bytes) -> None:
        try:
            if prefix:
                self._receive(prefix)
            streak = 0
            while not self.closed.is_set():
                if self.proto.pending_out + self._inflight > self._max_send_buffer:
                    self._writer.unpark_all()
                    await self._drained.park()
                    continue
                sock = self._sock
                if sock is None:
                    data = await self.stream.receive_some(READ_SIZE)
                else:
                    try:
                        data = sock.recv(READ_SIZE)
                    except BlockingIOError:
                        streak = 0
                        await trio.lowlevel.wait_readable(sock)
                        continue
                    streak += 1
                    if streak >= _READ_BATCH:
                        streak = 0
                        await trio.lowlevel.checkpoint()
                if not data:
                    self.end(H2ConnectionError("HTTP/2 connection closed by the peer"))
                    return
                self._receive(data)
        except _IO_ERRORS as exc:
            self.end(H2ConnectionError(f"HTTP/2 connection failed: {exc!r}"))

    def _receive(self, data: bytes | bytearray) -> None:
        try:
            events = self.proto.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            # h2 has queued a GOAWAY with the right code.
            log.info("HTTP/2 protocol error: %s", exc)
            self.end(H2ProtocolError(str(exc)))
            return
        dispatch = self._dispatch
        for event in events:
            fn = dispatch.get(type(event))
            if fn is not None:
                fn(event)
                if self.closed.is_set():
                    break
        self._writer.unpark_all()

    async def _write_loop(self) -> None:
        proto = self.proto
        try:
            while True:
                data = proto.data_to_send()
                if not data:
                    self._drained.unpark_all()
                    await self._writer.park()
                    continue
                self._inflight = len(data)
                await self._send_all(data)
                self._inflight = 0
                self._drained.unpark_all()
        except _IO_ERRORS as exc:
            self._inflight = 0
            self._write_failed = True
            self.end(H2ConnectionError(f"HTTP/2 connection failed: {exc!r}"))

    async def _send_all(self, data: bytes) -> None:
        sock = self._sock
        if sock is None:
            await self.stream.send_all(data)
            return
        view = memoryview(data)
        sent = 0
        while sent < len(data):
            try:
                sent += sock.send(view[sent:], socket.MSG_NOSIGNAL)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(sock)
        await trio.lowlevel.checkpoint_if_cancelled()

    async def _ping_loop(self, interval: float, ack_within: float) -> None:
        count = 0
        while True:
            await trio.sleep(interval)
            count += 1
            payload = count.to_bytes(8, "big")
            acked = self._pings[payload] = trio.Event()
            try:
                self.proto.ping(payload)
            except h2.exceptions.H2Error:
                return
            self._writer.unpark_all()
            with trio.move_on_after(ack_within):
                await acked.wait()
            self._pings.pop(payload, None)
            if not acked.is_set():
                log.info("HTTP/2 keep-alive timed out")
                self.end(H2ConnectionError("HTTP/2 keep-alive timed out"))
                return

    # --- events --------------------------------------------------------------------

    def _on_head_event(self, ev: h2.events.RequestReceived | h2.events.ResponseReceived) -> None:
        assert ev.stream_id is not None and ev.headers is not None
        self.on_head(ev.stream_id, ev.headers, ev.stream_ended is not None)

    def _on_data(self, ev: h2.events.DataReceived) -> None:
        assert ev.stream_id is not None and ev.data is not None
        fc = ev.flow_controlled_length or 0
        st = self.streams.get(ev.stream_id)
        body = None if st is None else st.body
        if body is None or body.abandoned:
            self.ack(ev.stream_id, fc)
            return
        data = ev.data
        if fc > len(data):
            self.ack(ev.stream_id, fc - len(data))  # padding
        if data:
            body.push(data)

    def _on_trailers(self, ev: h2.events.TrailersReceived) -> None:
        assert ev.stream_id is not None and ev.headers is not None
        st = self.streams.get(ev.stream_id)
        if st is None or st.body is None:
            return
        try:
            trailers = parse_trailers(ev.headers)
        except MalformedHeaders as exc:
            st.body.fail(H2ProtocolError(str(exc)))
            self.reset(st, ErrorCodes.PROTOCOL_ERROR)
            return
        st.body.finish(trailers)

    def _on_stream_ended(self, ev: h2.events.StreamEnded) -> None:
        assert ev.stream_id is not None
        st = self.streams.get(ev.stream_id)
        if st is None:
            return
        st.recv_done = True
        if st.body is not None:
            st.body.finish()
        self.on_stream_ended(st)

    def _on_reset_event(self, ev: h2.events.StreamReset) -> None:
        assert ev.stream_id is not None
        st = self.streams.get(ev.stream_id)
        if st is None or st.reset_code is not None:
            return
        code = int(ev.error_code or 0)
        st.reset_code = code
        if st.body is not None:
            st.body.fail(StreamReset(code))
        st.window.unpark_all()
        if ev.remote_reset:
            self.on_reset(st, code)

    def _on_window(self, ev: h2.events.WindowUpdated) -> None:
        if not ev.stream_id:
            for waiter in self._window_waiters:
                waiter.window.unpark_all()
            return
        st = self.streams.get(ev.stream_id)
        if st is not None:
            st.window.unpark_all()

    def _on_settings(self, ev: h2.events.RemoteSettingsChanged) -> None:
        if h2.settings.SettingCodes.INITIAL_WINDOW_SIZE in ev.changed_settings:
            for st in self._window_waiters:
                st.window.unpark_all()
        self.on_settings(ev.changed_settings)

    def _on_ping_ack(self, ev: h2.events.PingAckReceived) -> None:
        if ev.ping_data is not None:
            acked = self._pings.get(ev.ping_data)
            if acked is not None:
                acked.set()

    def _on_goaway_event(self, ev: h2.events.ConnectionTerminated) -> None:
        self.on_goaway(int(ev.error_code or 0), ev.last_stream_id or 0)

    # --- stream operations -----------------------------------------------------------

    def ack(self, stream_id: int, n: int) -> None:
        """Return ``n`` bytes of receive window (the consumer took them)."""
        if n <= 0 or self.closed.is_set():
            return
        with contextlib.suppress(h2.exceptions.H2Error):
            self.proto.acknowledge_received_data(n, stream_id)
            self._writer.unpark_all()

    def reset(self, st: StreamState, code: int) -> None:
        """Reset ``st`` with ``code`` (once); its senders get :class:`StreamGone`."""
        if st.reset_code is not None:
            return
        st.reset_code = code
        if not self.closed.is_set():
            with contextlib.suppress(h2.exceptions.H2Error):
                self.proto.reset_stream(st.id, code)
                self._writer.unpark_all()
        if st.body is not None and not st.recv_done:
            st.body.fail(StreamReset(code, "stream reset by the proxy"))
        st.window.unpark_all()

    def send_headers(self, st: StreamState, headers: list[tuple[bytes, bytes]], end: bool) -> None:
        """Queue a HEADERS block on ``st``.

        Raises:
            StreamGone: the stream was reset or the connection ended.
        """
        if st.reset_code is not None or self.closed.is_set():
            raise StreamGone
        try:
            self.proto.send_headers(st.id, headers, end_stream=end)
        except h2.exceptions.H2Error as exc:
            raise StreamGone from exc
        if end:
            st.send_done = True
        self._writer.unpark_all()

    async def send_data(self, st: StreamState, data: bytes, end: bool) -> None:
        """Queue ``data`` on ``st`` as window allows, waiting for window and buffer space.

        Raises:
            StreamGone: the stream was reset or the connection ended.

        Cancellation: safe; what was queued before the cancel stays queued.
        """
        proto = self.proto
        pos = 0
        total = len(data)
        while True:
            if st.reset_code is not None or self.closed.is_set():
                raise StreamGone
            if self.proto.pending_out + self._inflight >= self._max_send_buffer:
                self._writer.unpark_all()
                await self._drained.park()
                continue
            try:
                if pos == total:
                    if end:
                        proto.end_stream(st.id)
                        st.send_done = True
                        self._writer.unpark_all()
                    return
                window = min(proto.local_flow_control_window(st.id), proto.max_outbound_frame_size)
                if window <= 0:
                    self._window_waiters.add(st)
                    try:
                        await st.window.park()
                    finally:
                        self._window_waiters.discard(st)
                    continue
                size = min(window, total - pos)
                last = end and pos + size == total
                chunk = data[pos : pos + size] if size < total else data
                proto.send_data(st.id, chunk, end_stream=last)
            except h2.exceptions.H2Error as exc:
                raise StreamGone from exc
            pos += size
            self._writer.unpark_all()
            if last:
                st.send_done = True
                return

    async def send_body(self, st: StreamState, body: Body) -> None:
        """Send ``body`` on ``st``: DATA, then trailers or an empty END_STREAM.

        Raises:
            StreamGone: the stream was reset or the connection ended.
            BodyError: the body failed (the caller resets the stream).

        Cancellation: the body is closed either way.
        """
        try:
            while chunk := await body.read():
                await self.send_data(st, chunk, body.is_end_stream)
                if st.send_done:
                    return
            if body.trailers:
                self.send_headers(st, outbound_fields([], body.trailers), end=True)
            else:
                await self.send_data(st, b"", True)
        finally:
            await body.aclose()
