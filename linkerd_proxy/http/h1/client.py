"""One upstream HTTP/1.1 connection: send a request, stream its response.

Where it sits: under :class:`~linkerd_proxy.http.h1.pool.H1Pool` (which keeps
these per endpoint) and above the transport stream. It renders requests with
:mod:`~linkerd_proxy.http.h1.client_codec` and parses responses with it.

One request at a time. :meth:`H1Connection.send` returns once the response head
has arrived; the response body is read from the socket only as its consumer
reads it (no task, no buffer beyond one read). The request body is written by a
task in the ``background`` nursery when one is given, so that a server which
answers before it has read the whole body (or streams both ways) works; without
one, ``send`` writes the body itself before it returns the response.

The connection can take another request once the response body has been read to
its end, the request body has been written in full, and both sides allowed
keep-alive; it then calls ``on_idle`` (the pool's hook). Anything else (an
abandoned body, an error, a cancelled ``send``) closes it.

Request framing: ``Content-Length`` when the body's length is known (``0`` only for
methods that carry bodies), else chunked (HTTP/1.1; trailers pass). HTTP/1.0 has
no chunked coding, so an HTTP/1.0 request of unknown length is read into memory
up to ``max_buffered_body`` to count it. ``CONNECT`` carries no framing header.
Responses: see the client codec; ``Content-Length`` moves from the headers to
``body.content_length`` (kept in the headers only where there is no body, e.g. a
response to ``HEAD``).
"""

from __future__ import annotations

import collections
import logging
import socket
from collections.abc import Awaitable, Callable

import attrs
import trio

from linkerd_proxy.errors import H1ConnectionClosed, H1ProtocolError
from linkerd_proxy.http.body import Body, BodyError, BytesBody, EmptyBody
from linkerd_proxy.http.h1 import codec as h1
from linkerd_proxy.http.h1.client_codec import ClientEvent, H1ClientCodec, ResponseHead
from linkerd_proxy.http.h1.client_request import render_request
from linkerd_proxy.http.model import Headers, Request, Response, Version, get_ext, set_ext
from linkerd_proxy.http.upgrade import DownstreamUpgrade, Upgraded, UpstreamUpgrade

log = logging.getLogger(__name__)

#: Methods whose requests may be sent again when a reused connection failed
#: before any response byte (RFC 9110 9.2.2).
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})

OnIdle = Callable[["H1Connection"], Awaitable[None]]


@attrs.frozen
class H1ClientSettings:
    """Limits of an upstream HTTP/1 connection.

    Attributes:
        max_head_bytes: the largest response head accepted (else 502-worthy error).
        max_headers: the most response header fields accepted.
        read_size: bytes read from the socket at once.
        max_buffered_body: the largest HTTP/1.0 request body of unknown length
            that is buffered to compute its ``Content-Length``.
    """

    max_head_bytes: int = h1.DEFAULT_MAX_HEAD_BYTES
    max_headers: int = h1.DEFAULT_MAX_HEADERS
    read_size: int = 64 * 1024
    max_buffered_body: int = 1024 * 1024


def _raw_socket(stream: trio.abc.Stream) -> trio.socket.SocketType | None:
    while not isinstance(stream, trio.SocketStream):
        inner = getattr(stream, "transport_stream", None)
        if not isinstance(inner, trio.abc.Stream):
            return None
        stream = inner
    return stream.socket


_PEEK_FLAGS = int(socket.MSG_PEEK | socket.MSG_DONTWAIT)


def _peek_closed(sock: socket.socket) -> bool:
    try:
        sock.recv(1, _PEEK_FLAGS)
    except BlockingIOError:
        return False
    except OSError:
        return True
    return True  # EOF, or bytes nobody asked for


class H1Connection:
    """A client connection to one HTTP/1 server.

    Args:
        stream: the connected stream (owned from now on).
        settings: limits.
        background: where request bodies are written (see the module docstring).
        on_idle: awaited when the connection can take another request.
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        settings: H1ClientSettings | None = None,
        background: trio.Nursery | None = None,
        on_idle: OnIdle | None = None,
    ) -> None:
        self._stream = stream
        self._settings = settings or H1ClientSettings()
        self._background = background
        self._on_idle = on_idle
        self._codec = H1ClientCodec(
            max_head_bytes=self._settings.max_head_bytes, max_headers=self._settings.max_headers
        )
        self._events: collections.deque[ClientEvent] = collections.deque()
        self._busy = False
        self._closed = False
        self._detached = False  # the stream went to an upgrade
        self._keep_alive = False
        self._response_done = False
        self._upload_done = True
        self._upload_ok = True
        self._upload_scope: trio.CancelScope | None = None
        self.served = 0

    @property
    def is_idle(self) -> bool:
        """True when :meth:`send` may be called."""
        return not self._busy and not self._closed

    @property
    def is_closed(self) -> bool:
        return self._closed

    def peer_closed(self) -> bool:
        """Whether the server closed (or wrote to) this idle connection, checked
        without waiting. Either way it can no longer be used."""
        if self._closed:
            return True
        raw = getattr(self._stream, "raw_socket", None)
        if isinstance(raw, socket.socket):
            return _peek_closed(raw)
        sock = _raw_socket(self._stream)
        if sock is None:
            return False
        view = socket.socket(sock.family, sock.type, sock.proto, fileno=sock.fileno())
        try:
            return _peek_closed(view)
        finally:
            view.detach()

    async def aclose(self) -> None:
        """Close the connection (not the stream of an upgrade it handed over)."""
        if self._upload_scope is not None:
            self._upload_scope.cancel()
        if not self._closed:
            self._closed = True
            if not self._detached:
                await trio.aclose_forcefully(self._stream)

    async def send(self, request: Request) -> Response:
        """Send ``request``; return the response once its head has arrived.

        Raises:
            H1ConnectionClosed: the server closed before any response byte
                (``retryable`` says whether the request may go elsewhere).
            H1ProtocolError: the response was not valid HTTP/1, or the request
                cannot be sent as HTTP/1.
            BodyError: the request body failed.
            OSError, trio.BrokenResourceError: I/O failure.
            RuntimeError: the connection is busy or closed.

        Cancellation: the connection is closed (the server sees the request
        abandoned) and ``Cancelled`` propagates.
        """
        if not self.is_idle:
            raise RuntimeError("H1Connection.send on a busy or closed connection")
        self._busy = True
        self._response_done = False
        self._body_untouched = True
        self._wrote = False
        try:
            head, body = await self._render(request)
            self._codec.start(request.method.encode("ascii"))
            self._upload_done = False
            self._upload_ok = False
            if body is None:
                # Only a head to write: no task for it (the common case).
                await self._write_head_only(head)
                rsp_head = await self._read_head(request)
            elif self._background is not None:
                self._upload_scope = trio.CancelScope()
                self._background.start_soon(self._upload, head, body, self._upload_scope)
                rsp_head = await self._read_head(request)
            else:
                async with trio.open_nursery() as nursery:
                    self._upload_scope = trio.CancelScope()
                    nursery.start_soon(self._upload, head, body, self._upload_scope)
                    rsp_head = await self._read_head(request)
            return await self._response(request, rsp_head)
        except BaseException:
            await self._abort()
            raise

    # --- request --------------------------------------------------------------------

    async def _render(self, request: Request) -> tuple[bytes, Body | None]:
        head, body, consumed = await render_request(
            request, max_buffered_body=self._settings.max_buffered_body
        )
        if consumed:
            self._body_untouched = False
        return head, body

    async def _upload(self, head: bytes, body: Body | None, scope: trio.CancelScope) -> None:
        ok = False
        with scope:
            try:
                ok = await self._write_request(head, body)
            except (BodyError, trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                log.debug("h1 client: request not written in full: %s", exc)
                # Whatever the server read is a truncated request: end it.
                if body is not None and not self._response_done:
                    await self._abort()
        self._upload_ok = ok
        self._upload_done = True
        if self._response_done:
            await self._finish()

    async def _write_head_only(self, head: bytes) -> None:
        # As ``_upload`` for a request without a body: a failed write shows up
        # as the connection closing when the response is read.
        try:
            self._upload_ok = await self._write_request(head, None)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            log.debug("h1 client: request not written in full: %s", exc)
        self._upload_done = True

    async def _write_request(self, head: bytes, body: Body | None) -> bool:
        self._wrote = True
        if body is None:
            await self._stream.send_all(head)
            return True
        length = body.content_length
        self._body_untouched = False
        pending = head
        sent = 0
        while True:
            chunk = await body.read()
            if not chunk:
                break
            sent += len(chunk)
            if length is None:
                pending += h1.encode_chunk(chunk)
            else:
                if sent > length:
                    raise BodyError(f"request body longer than its content-length {length}")
                pending += chunk
            await self._stream.send_all(pending)
            pending = b""
        if length is None:
            pending += h1.encode_last_chunk(body.trailers or ())
        elif sent != length:
            raise BodyError(f"request body of {sent} bytes, content-length {length}")
        if pending:
            await self._stream.send_all(pending)
        return True

    # --- response -------------------------------------------------------------------

    async def _next_event(self) -> ClientEvent | None:
        while not self._events:
            try:
                data = bytes(await self._stream.receive_some(self._settings.read_size))
            except (trio.BrokenResourceError, OSError) as exc:
                if self._codec.failed:
                    return None
                data = b""
                log.debug("h1 client: read failed: %s", exc)
            self._events.extend(self._codec.feed(data) if data else self._codec.feed_eof())
            if not data and not self._events:
                return None
        return self._events.popleft()

    async def _read_head(self, request: Request) -> ResponseHead:
        first = True
        while True:
            event = await self._next_event()
            if isinstance(event, ResponseHead):
                if event.status >= 200 or event.status == 101:
                    return event
                first = False  # interim (100 Continue, 103): not forwarded
                continue
            if isinstance(event, h1.ProtocolError) and first and self._nothing_received():
                event = None
            if event is None:
                retryable = (
                    self.served > 0
                    and self._body_untouched
                    and (not self._wrote or request.method in IDEMPOTENT)
                )
                raise H1ConnectionClosed(
                    "connection closed before the response began", retryable=retryable
                )
            if isinstance(event, h1.ProtocolError):
                raise H1ProtocolError(f"invalid response: {event.reason}")
            raise H1ProtocolError(f"unexpected response event {type(event).__name__}")

    def _nothing_received(self) -> bool:
        return not self._codec.received_any

    async def _response(self, request: Request, head: ResponseHead) -> Response:
        version: Version = "HTTP/1.0" if head.version == "1.0" else "HTTP/1.1"
        connect = request.method == "CONNECT"
        upgrade = get_ext(request.extensions, DownstreamUpgrade)
        upgraded = head.status == 101 or (connect and 200 <= head.status < 300)
        if upgraded:
            if head.version != "1.1" or (not connect and (upgrade is None or upgrade.is_connect)):
                raise H1ProtocolError("upgrade response to a request that did not ask for one")
            headers = [
                (k, v)
                for k, v in h1.lower_strip_hop_by_hop(head.headers)
                if k not in (b"content-length", b"transfer-encoding")
            ]
            if not connect:
                headers.extend((b"upgrade", v) for v in h1.header_values(head.headers, b"upgrade"))
            handle = UpstreamUpgrade(None if connect else upgrade.protocol if upgrade else None)
            handle.resolve(Upgraded(self._stream, self._codec.trailing_data))
            self._detached = True
            self._closed = True
            rsp = Response(head.status, headers, EmptyBody(), version)
            rsp.extensions[UpstreamUpgrade] = handle
            _keep_reason(rsp, head)
            return rsp
        headers = h1.lower_strip_hop_by_hop(head.headers)
        self._keep_alive = head.keep_alive and request.version != "HTTP/1.0"
        if head.framing == "none":
            event = await self._next_event()
            assert isinstance(event, h1.EndOfMessage)
            await self._end_of_response()
            return _keep_reason(Response(head.status, headers, EmptyBody(), version), head)
        headers = [(k, v) for k, v in headers if k != b"content-length"]
        if head.framing == "length":
            data = self._complete_body()
            if data is not None:
                # The whole body came with the head (the common small response):
                # hand it over in memory and give the connection back now, rather
                # than a body that reads the rest of the exchange through the
                # layers above (and would close the connection if never read).
                await self._end_of_response()
                return _keep_reason(Response(head.status, headers, BytesBody(data), version), head)
        body = _ResponseBody(self, head.content_length)
        return _keep_reason(Response(head.status, headers, body, version), head)

    def _complete_body(self) -> bytes | None:
        # The body if the events already hold all of it and its end, else None.
        events = self._events
        if not events or not isinstance(events[-1], h1.EndOfMessage):
            return None
        chunks = []
        for i in range(len(events) - 1):
            event = events[i]
            if not isinstance(event, h1.Body):
                return None
            chunks.append(event.data)
        events.clear()
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def read_body(self) -> tuple[bytes, Headers | None]:
        """The next body chunk, or ``b""`` and the trailers at the end (for
        :class:`_ResponseBody`).

        Raises:
            BodyError: the response was cut short or malformed.
        """
        while True:
            event = await self._next_event()
            if isinstance(event, h1.Body):
                if event.data:
                    return event.data, None
            elif isinstance(event, h1.EndOfMessage):
                await self._end_of_response()
                return b"", event.trailers or None
            else:
                await self._abort()
                reason = event.reason if isinstance(event, h1.ProtocolError) else "closed"
                raise BodyError(f"response body cut short: {reason}")

    def buffered_body(self) -> bool:
        return any(isinstance(e, h1.Body) for e in self._events)

    async def _end_of_response(self) -> None:
        self._response_done = True
        if self._upload_done:
            await self._finish()

    async def _finish(self) -> None:
        # Both directions of the exchange are over.
        if self._closed or not self._busy:
            return
        self._busy = False
        self._upload_scope = None
        if self._keep_alive and self._upload_ok and self._codec.clean:
            self.served += 1
            if self._on_idle is not None:
                await self._on_idle(self)
        else:
            await self.aclose()

    async def _abort(self) -> None:
        self._busy = False
        await self.aclose()


def _keep_reason(response: Response, head: ResponseHead) -> Response:
    if head.reason != h1.reason_phrase(head.status):
        set_ext(response.extensions, h1.ReasonPhrase(head.reason))
    return response


class _ResponseBody(Body):
    """A response body read straight from the connection as it is consumed."""

    def __init__(self, conn: H1Connection, content_length: int | None) -> None:
        self.content_length = content_length
        self._conn: H1Connection | None = conn

    @property
    def buffered(self) -> int:
        return 1 if self._conn is not None and self._conn.buffered_body() else 0

    async def read(self) -> bytes:
        conn = self._conn
        if conn is None:
            await trio.lowlevel.checkpoint_if_cancelled()
            return b""
        data, trailers = await conn.read_body()
        if not data:
            self._conn = None
            self.trailers = trailers
        return data

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn._abort()
        await trio.lowlevel.checkpoint_if_cancelled()
