"""The HTTP/2 client connection: a ``Service[Request, Response]`` over one connection.

Sits at the bottom of an endpoint stack (above connect/TLS), on the shared core in
``conn.py``. Requests are multiplexed as streams; the call returns as soon as the
response head arrives and the body streams after it. The request body is sent by
a task in the connection's nursery, so request and response bodies flow at the
same time (gRPC bidirectional streams).

Shape (trio style): the connection's tasks run in :meth:`H2Connection.serve`,
started in a nursery the caller owns::

    conn = await H2Connection.open(stream, settings, nursery)
    rsp = await conn(request)
    ...
    await conn.aclose()

or, scoped: ``async with open_h2_connection(stream, settings) as conn: ...``.

Behaviour:

- at most the server's SETTINGS_MAX_CONCURRENT_STREAMS streams are open (before
  its SETTINGS arrive, ``initial_max_streams``); further calls wait for a slot;
- cancelling a call (or closing the response body early) resets the stream with
  CANCEL; the server's RST_STREAM fails the call or the body with
  ``StreamReset``, REFUSED_STREAM with :class:`H2Refused` (retryable);
- after GOAWAY the connection takes no new requests (:attr:`is_usable` is false),
  requests above its last stream id fail with :class:`H2Refused`, the others
  finish, then the connection closes;
- :attr:`is_closed` tells the endpoint layer to drop it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import h2.exceptions
import h2.settings
import trio
from h2.errors import ErrorCodes

from linkerd_proxy.errors import H2ConnectionError, H2ProtocolError, H2Refused
from linkerd_proxy.http.body import Body, BodyError, EmptyBody, StreamReset
from linkerd_proxy.http.h2.conn import H2Core
from linkerd_proxy.http.h2.headers import (
    MalformedHeaders,
    outbound_fields,
    parse_response,
    request_pseudo,
)
from linkerd_proxy.http.h2.proto import make_proto
from linkerd_proxy.http.h2.settings import H2ClientSettings
from linkerd_proxy.http.h2.stream import RecvBody, StreamGone, StreamState
from linkerd_proxy.http.model import Request, Response, header

log = logging.getLogger(__name__)

__all__ = ["H2Connection", "open_h2_connection"]

_MAX_STREAM_ID = 2**31 - 1


class H2Connection(H2Core):
    """One HTTP/2 client connection; call it with a :class:`Request`.

    Args:
        stream: a connected stream (TCP or TLS with ALPN h2); owned from now on.
        settings: windows, keep-alive and limits.
    """

    def __init__(self, stream: trio.abc.Stream, settings: H2ClientSettings) -> None:
        proto = make_proto(
            client=True,
            stream_window=settings.initial_stream_window_size,
            connection_window=settings.initial_connection_window_size,
            decoder_limit=settings.max_header_list_size,
        )
        keepalive = None
        if settings.keepalive_interval is not None:
            keepalive = (settings.keepalive_interval, settings.keepalive_timeout)
        super().__init__(
            stream,
            proto,
            max_send_buffer=settings.max_send_buffer,
            close_timeout=settings.close_timeout,
            keepalive=keepalive,
        )
        self._settings = settings
        self._active = 0
        self._slots = trio.lowlevel.ParkingLot()
        self._peer_settings_seen = False
        self._goaway = False
        self._serving = False

    @classmethod
    async def open(
        cls, stream: trio.abc.Stream, settings: H2ClientSettings, nursery: trio.Nursery
    ) -> H2Connection:
        """Start a connection's tasks in ``nursery`` and return it, ready for calls."""
        conn = cls(stream, settings)
        await nursery.start(conn.serve)
        return conn

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the connection until it ends (``task_status`` when it takes requests).

        Cancellation: in-flight requests fail; the stream is closed.
        """
        self._serving = True
        await self.run(task_status=task_status)

    @property
    def is_closed(self) -> bool:
        """True once the connection has ended (or is ending)."""
        return self.closed.is_set()

    @property
    def is_usable(self) -> bool:
        """True while new requests may be sent on this connection."""
        return (
            not self.closed.is_set()
            and not self._goaway
            and self.proto.highest_outbound_stream_id < _MAX_STREAM_ID - 2
        )

    @property
    def active_streams(self) -> int:
        return self._active

    async def aclose(self) -> None:
        """GOAWAY and close now; in-flight requests fail. Idempotent."""
        if not self.closed.is_set():
            self._goaway = True
            with contextlib.suppress(h2.exceptions.H2Error):
                self.proto.send_goaway(ErrorCodes.NO_ERROR, 0)
            self.end(H2ConnectionError("HTTP/2 connection closed by the proxy"))
        await trio.lowlevel.checkpoint()

    def drain(self) -> None:
        """Take no new requests; close once the open streams are done."""
        self._goaway = True
        self._close_if_idle()

    # --- calls ---------------------------------------------------------------------------

    async def __call__(self, req: Request, /) -> Response:
        """Send ``req`` and return the response once its head arrives.

        Raises:
            H2Refused: the connection takes no new requests, or the server refused
                or did not process the stream (safe to retry elsewhere).
            StreamReset: the server reset the stream.
            H2ConnectionError: the connection failed before the response head.

        Cancellation: the stream is reset with CANCEL.
        """
        await self._acquire_slot()
        st: StreamState | None = None
        try:
            if not self.is_usable:
                raise H2Refused("HTTP/2 connection no longer takes requests")
            st = StreamState(self.proto.get_next_available_stream_id())
            st.counted = True
            self.streams[st.id] = st
            authority = req.authority
            if authority is None:
                host = header(req.headers, b"host")
                authority = None if host is None else host.decode("latin-1")
            pseudo = request_pseudo(req.method, req.scheme, authority, req.path)
            body = req.body
            end = body.is_end_stream
            self.send_headers(st, outbound_fields(pseudo, req.headers), end=end)
            if end:
                await body.aclose()
            else:
                self.nursery.start_soon(self._send_request_body, st, body)
            while st.head is None and st.error is None:
                await st.window.park()
        except StreamGone:
            assert st is not None
            error = self._stream_error(st)
            self._abandon(st)
            raise error from None
        except BaseException:
            if st is None:
                self._release_slot()
            else:
                self._abandon(st)
            raise
        if st.head is None:
            assert st.error is not None
            self._abandon(st)
            raise st.error
        status, headers = st.head
        rsp_body: Body = st.body if st.body is not None else EmptyBody()
        return Response(status=status, headers=headers, body=rsp_body, version="HTTP/2")

    def _stream_error(self, st: StreamState) -> BaseException:
        if st.error is not None:
            return st.error
        if self.error is not None:
            return H2ConnectionError(str(self.error))
        return StreamReset(st.reset_code or ErrorCodes.CANCEL)

    async def _acquire_slot(self) -> None:
        while self._active >= self._max_streams() and not self.closed.is_set():
            await self._slots.park()
        self._active += 1

    def _max_streams(self) -> int:
        limit = self.proto.remote_settings.max_concurrent_streams
        if not self._peer_settings_seen:
            limit = min(limit, self._settings.initial_max_streams)
        return limit

    def _release_slot(self) -> None:
        self._active -= 1
        self._slots.unpark(count=1)
        self._close_if_idle()

    def _release(self, st: StreamState) -> None:
        if st.counted and (st.reset_code is not None or (st.send_done and st.recv_done)):
            st.counted = False
            self.streams.pop(st.id, None)
            self._release_slot()

    def _abandon(self, st: StreamState) -> None:
        """The caller is gone before the head: cancel the stream."""
        st.scope.cancel()
        if not (st.send_done and st.recv_done):
            self.reset(st, ErrorCodes.CANCEL)
        if st.body is not None:
            st.body.abandon()
        self._release(st)

    def _close_if_idle(self) -> None:
        if self._goaway and self._active == 0:
            self.end(None)

    async def _send_request_body(self, st: StreamState, body: Body) -> None:
        try:
            with st.scope:
                await self.send_body(st, body)
        except StreamGone:
            pass
        except StreamReset as exc:
            self.reset(st, exc.code)
        except BodyError as exc:
            log.debug("request body failed on stream %d: %r", st.id, exc)
            self.reset(st, ErrorCodes.CANCEL)
        finally:
            self._release(st)

    # --- events ------------------------------------------------------------------------

    def on_head(self, stream_id: int, headers: list[tuple[bytes, bytes]], end: bool) -> None:
        st = self.streams.get(stream_id)
        if st is None or st.head is not None:
            return
        try:
            status, fields = parse_response(headers)
        except MalformedHeaders as exc:
            st.error = H2ProtocolError(f"malformed response: {exc}")
            self.reset(st, ErrorCodes.PROTOCOL_ERROR)
            st.window.unpark_all()
            return
        if status < 200:
            return  # 1xx: interim, the final head follows
        if not end:
            st.body = RecvBody(self, st, _content_length(fields))
        st.head = (status, fields)
        st.window.unpark_all()

    def on_stream_ended(self, st: StreamState) -> None:
        self._release(st)

    def on_reset(self, st: StreamState, code: int) -> None:
        if st.head is None and st.error is None:
            if code == ErrorCodes.REFUSED_STREAM:
                st.error = H2Refused("the server refused the stream")
            else:
                st.error = StreamReset(code)
        st.scope.cancel()
        st.window.unpark_all()
        self._release(st)

    def body_abandoned(self, st: StreamState) -> None:
        if not st.recv_done and st.reset_code is None:
            st.scope.cancel()
            self.reset(st, ErrorCodes.CANCEL)
            self._release(st)

    def on_settings(self, changed: dict[int, h2.settings.ChangedSetting]) -> None:
        self._peer_settings_seen = True
        self._slots.unpark_all()

    def on_goaway(self, error_code: int, last_stream_id: int) -> None:
        self._goaway = True
        if error_code != ErrorCodes.NO_ERROR:
            log.info("server sent GOAWAY with error %d", error_code)
        for st in list(self.streams.values()):
            if st.id > last_stream_id:
                if st.head is None and st.error is None:
                    st.error = H2Refused("stream not processed before GOAWAY")
                if st.body is not None:
                    st.body.fail(H2Refused("stream not processed before GOAWAY"))
                st.scope.cancel()
                st.window.unpark_all()
                st.reset_code = ErrorCodes.REFUSED_STREAM
                self._release(st)
        self._slots.unpark_all()
        self._close_if_idle()

    def on_end(self) -> None:
        error = self.error
        for st in list(self.streams.values()):
            if st.head is None and st.error is None:
                st.error = H2ConnectionError(f"HTTP/2 connection closed: {error or 'shutdown'}")
            st.scope.cancel()
            st.window.unpark_all()
        self._slots.unpark_all()


@contextlib.asynccontextmanager
async def open_h2_connection(
    stream: trio.abc.Stream, settings: H2ClientSettings
) -> AsyncIterator[H2Connection]:
    """An :class:`H2Connection` whose tasks live for the ``async with`` block.

    On exit the connection is closed (in-flight requests fail).
    """
    async with trio.open_nursery() as nursery:
        conn = await H2Connection.open(stream, settings, nursery)
        try:
            yield conn
        finally:
            await conn.aclose()


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    value = header(headers, b"content-length")
    if value is not None and value.isdigit():
        return int(value)
    return None
