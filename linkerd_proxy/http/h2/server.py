"""The HTTP/2 server driver: one accepted connection in, ``Request``s to a service.

Sits between detection (which hands over the stream and the bytes it read, the
client preface) and the HTTP layers (a ``Service[Request, Response]``). Built on
the shared core in ``conn.py``. Each stream becomes a :class:`Request` whose body
is fed by the read loop; the service runs in its own task (one nursery per
connection) and its response head, DATA and trailers are written with flow
control. Protections (HARDENING.md):

- SETTINGS_MAX_CONCURRENT_STREAMS is advertised and enforced: excess streams are
  refused with REFUSED_STREAM (item 11);
- a header list over the advertised limit is answered 431 on its stream only;
  one over 4x the limit is a connection error (item 7, CONTINUATION floods: 3);
- malformed requests (connection-specific headers, bad pseudo-headers) are reset
  with PROTOCOL_ERROR (item 9); too many such local resets → GOAWAY (item 2);
- too many client resets within a window → GOAWAY ENHANCE_YOUR_CALM (item 1);
- PING floods cannot grow the output buffer (the core stops reading; item 4).

Drain (``Shutdown``) sends GOAWAY with the last stream id seen, lets open streams
finish, then closes; a client's GOAWAY does the same.
"""

from __future__ import annotations

import logging

import trio
from h2.errors import ErrorCodes

from linkerd_proxy.app.shutdown import Shutdown
from linkerd_proxy.http.body import Body, BodyError, EmptyBody, StreamReset
from linkerd_proxy.http.h2.conn import H2Core
from linkerd_proxy.http.h2.headers import MalformedHeaders, outbound_fields, parse_request
from linkerd_proxy.http.h2.proto import make_proto
from linkerd_proxy.http.h2.settings import H2ServerSettings
from linkerd_proxy.http.h2.stream import RecvBody, StreamGone, StreamState
from linkerd_proxy.http.model import Request, Response, header
from linkerd_proxy.stack import Service

log = logging.getLogger(__name__)

__all__ = ["serve_h2"]


async def serve_h2(
    stream: trio.abc.Stream,
    service: Service[Request, Response],
    *,
    settings: H2ServerSettings,
    drain: Shutdown | None = None,
    prefix: bytes = b"",
    extensions: dict[type, object] | None = None,
) -> None:
    """Serve HTTP/2 on ``stream`` until the connection ends; close it then.

    Args:
        stream: the accepted connection (plaintext or TLS).
        service: called once per request stream, each call in its own task.
        settings: what to advertise and enforce.
        drain: when triggered, GOAWAY, let open streams finish, then close.
        prefix: bytes already read from ``stream`` (the client preface).
        extensions: copied into every request's ``extensions``.

    Returns when the client closed the connection, after a drain or GOAWAY once
    the last stream is done, or after a connection error (GOAWAY sent).

    Cancellation: every stream's service call is cancelled, the stream closed.
    """
    server = _Server(stream, service, settings, drain, extensions or {})
    await server.run(prefix)


class _Server(H2Core):
    def __init__(
        self,
        stream: trio.abc.Stream,
        service: Service[Request, Response],
        settings: H2ServerSettings,
        drain: Shutdown | None,
        extensions: dict[type, object],
    ) -> None:
        proto = make_proto(
            client=False,
            stream_window=settings.initial_stream_window_size,
            connection_window=settings.initial_connection_window_size,
            decoder_limit=4 * settings.max_header_list_size,
            max_frame_size=settings.max_frame_size,
            max_concurrent_streams=settings.max_concurrent_streams,
            max_header_list_size=settings.max_header_list_size,
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
        self._service = service
        self._settings = settings
        self._drain = drain
        self._extensions = extensions
        self._active = 0
        self._draining = False
        self._last_stream_id = 2**31 - 1
        self._resets = 0
        self._reset_window_start = 0.0
        self._local_resets = 0

    def started(self) -> None:
        if self._drain is not None:
            self.nursery.start_soon(self._watch_drain, self._drain)

    async def _watch_drain(self, drain: Shutdown) -> None:
        await drain.wait()
        self.start_drain()

    def start_drain(self) -> None:
        """GOAWAY(NO_ERROR); new streams are refused; close once none is open."""
        if self._draining or self.closed.is_set():
            return
        self._draining = True
        self._last_stream_id = self.proto.highest_inbound_stream_id
        self.proto.send_goaway(ErrorCodes.NO_ERROR, self._last_stream_id)
        self.wake_writer()
        self._check_drained()

    def _check_drained(self) -> None:
        if self._draining and self._active == 0:
            self.end(None)

    # --- new streams -----------------------------------------------------------------

    def on_head(self, stream_id: int, headers: list[tuple[bytes, bytes]], end: bool) -> None:
        if stream_id in self.streams:
            return  # trailers are a separate event; nothing else repeats a head
        st = StreamState(stream_id)
        limit = self._settings.max_concurrent_streams
        if stream_id > self._last_stream_id or self._active >= limit:
            self.reset(st, ErrorCodes.REFUSED_STREAM)
            return
        try:
            head = parse_request(headers)
        except MalformedHeaders as exc:
            log.debug("malformed request on stream %d: %s", stream_id, exc)
            self.reset(st, ErrorCodes.PROTOCOL_ERROR)
            self._local_resets += 1
            if self._local_resets > self._settings.max_local_resets:
                self.fatal(ErrorCodes.ENHANCE_YOUR_CALM, "too many malformed requests")
            return
        if head.size > self._settings.max_header_list_size:
            log.debug("header list of %d bytes on stream %d", head.size, stream_id)
            self.send_headers(st, [(b":status", b"431")], end=True)
            if not end:
                self.reset(st, ErrorCodes.NO_ERROR)
            return
        body: Body
        if end:
            body = EmptyBody()
            st.recv_done = True
        else:
            st.body = body = RecvBody(self, st, _content_length(head.headers))
        req = Request(
            method=head.method,
            scheme=head.scheme,
            authority=head.authority,
            path=head.path,
            version="HTTP/2",
            headers=head.headers,
            body=body,
            extensions=dict(self._extensions),
        )
        self.streams[stream_id] = st
        self._active += 1
        st.counted = True
        self.nursery.start_soon(self._handle, st, req)

    def _uncount(self, st: StreamState) -> None:
        """Stop counting ``st`` against the concurrency limit (once).

        Called as soon as the stream is done on the wire, not when its task has
        cleaned up: a client that saw our END_STREAM may open the next stream at
        once, and must not be refused for a stream that is already closed.
        """
        if st.counted:
            st.counted = False
            self._active -= 1

    def on_reset(self, st: StreamState, code: int) -> None:
        st.scope.cancel()
        now = trio.current_time()
        if now - self._reset_window_start > self._settings.reset_window:
            self._reset_window_start = now
            self._resets = 0
        self._resets += 1
        if self._resets > self._settings.max_client_resets:
            self.fatal(ErrorCodes.ENHANCE_YOUR_CALM, "too many streams reset by the client")

    def on_goaway(self, error_code: int, last_stream_id: int) -> None:
        if error_code != ErrorCodes.NO_ERROR:
            log.info("client sent GOAWAY with error %d", error_code)
        self._draining = True
        self._last_stream_id = min(self._last_stream_id, self.proto.highest_inbound_stream_id)
        self._check_drained()

    def on_end(self) -> None:
        for st in self.streams.values():
            st.scope.cancel()

    # --- one stream --------------------------------------------------------------------

    async def _handle(self, st: StreamState, req: Request) -> None:
        try:
            with st.scope:
                try:
                    rsp = await self._service(req)
                except StreamReset as exc:
                    # The upstream reset the stream: the client gets the same code.
                    log.debug("HTTP/2 stream %d reset upstream: %r", st.id, exc)
                    self.reset(st, exc.code)
                    return
                except Exception as exc:
                    log.warning("service failed on HTTP/2 stream %d: %r", st.id, exc)
                    self.reset(st, ErrorCodes.INTERNAL_ERROR)
                    return
                await self._respond(st, rsp)
        finally:
            self._uncount(st)
            del self.streams[st.id]
            if st.body is not None:
                st.body.abandon()
            if st.send_done and not st.recv_done:
                # The response is complete; stop the client sending the rest.
                self.reset(st, ErrorCodes.NO_ERROR)
            self._check_drained()

    async def _respond(self, st: StreamState, rsp: Response) -> None:
        fields = outbound_fields([(b":status", str(rsp.status).encode())], rsp.headers)
        body = rsp.body
        try:
            if body.is_end_stream:
                self.send_headers(st, fields, end=True)
                if st.recv_done:
                    self._uncount(st)
                await body.aclose()
                return
            self.send_headers(st, fields, end=False)
            await self.send_body(st, body)
            if st.recv_done:
                self._uncount(st)
        except StreamGone:
            await body.aclose()
        except StreamReset as exc:
            self.reset(st, exc.code)
        except BodyError as exc:
            log.debug("response body failed on stream %d: %r", st.id, exc)
            self.reset(st, ErrorCodes.INTERNAL_ERROR)


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    value = header(headers, b"content-length")
    if value is not None and value.isdigit():
        return int(value)
    return None
