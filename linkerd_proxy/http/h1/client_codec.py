"""Sans-IO HTTP/1.x client codec: request serialization and a response parser.

Where it sits: the bottom of the HTTP/1 client side.
:class:`~linkerd_proxy.http.h1.client.H1Connection` owns an upstream stream,
writes requests rendered by :func:`serialize_request_head` (plus the body framing
helpers of :mod:`~linkerd_proxy.http.h1.codec`) and feeds what it reads to
:class:`H1ClientCodec`. Nothing here does I/O or imports trio.

Events per response, in order: zero or more interim :class:`ResponseHead` (1xx other
than 101), then the final :class:`ResponseHead`, zero or more
:class:`~linkerd_proxy.http.h1.codec.Body`, one
:class:`~linkerd_proxy.http.h1.codec.EndOfMessage`. A
:class:`~linkerd_proxy.http.h1.codec.ProtocolError` ends everything (the connection
is unusable).

Framing of the response, decided from the request method and the head (RFC 9112
6.3): no body for ``HEAD``, 1xx, 204, 304 and a 2xx to ``CONNECT``; else chunked,
else ``Content-Length``, else the body runs until the server closes. llhttp parses
heads and bodies; because its Python binding cannot be told that a response has
no body (a ``HEAD`` response carries the ``Content-Length`` of the ``GET``), the
codec stops llhttp at the end of such a head and finds the head's end itself
(llhttp, strict, has already checked that it ends with CRLF CRLF). A fresh llhttp
parser serves each response; the bytes left over after a response are kept for
the next one (or, after ``101``/``CONNECT``, handed to the tunnel).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from typing import Literal

import attrs
import httptools

from linkerd_proxy.http.h1.codec import (
    DEFAULT_MAX_HEAD_BYTES,
    DEFAULT_MAX_HEADERS,
    Body,
    EndOfMessage,
    Headers,
    HttpVersion,
    ProtocolError,
)

__all__ = [
    "ClientEvent",
    "H1ClientCodec",
    "ResponseHead",
    "serialize_request_head",
]

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(rb"[\x00\r\n]")
_BAD_TARGET = re.compile(rb"[\x00-\x20\x7f]")


def serialize_request_head(
    method: bytes,
    target: bytes,
    headers: Iterable[tuple[bytes, bytes]],
    version: HttpVersion = "1.1",
) -> bytes:
    """Render a request line and header fields, ending with the blank line.

    The caller chooses ``Host`` and the framing headers.

    Raises:
        ValueError: a method that is not a token, a target with whitespace or
            control bytes, a non-token header name, or CR, LF or NUL in a value:
            anything that could split the request.
    """
    if not _TOKEN.fullmatch(method):
        raise ValueError(f"invalid method {method!r}")
    if not target or _BAD_TARGET.search(target):
        raise ValueError(f"invalid request target {target!r}")
    out = [b"%s %s HTTP/%s\r\n" % (method, target, version.encode("ascii"))]
    for name, value in headers:
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"invalid header name {name!r}")
        if _BAD_VALUE.search(value):
            raise ValueError(f"invalid value for header {name!r}")
        out.append(b"%s: %s\r\n" % (name, value))
    out.append(b"\r\n")
    return b"".join(out)


Framing = Literal["none", "length", "chunked", "eof"]


@attrs.define(eq=True)  # built per response: see codec.RequestHead
class ResponseHead:
    """The status line and header fields of one response.

    ``headers`` keep the wire order with lower-case names. ``keep_alive`` is whether
    the server allows another request on this connection after this response.
    ``framing`` says how the body is delimited: ``"none"``, ``"length"``,
    ``"chunked"`` or ``"eof"`` (until the server closes).
    """

    status: int
    reason: bytes
    version: HttpVersion
    headers: Headers
    keep_alive: bool
    framing: Framing
    content_length: int | None


ClientEvent = ResponseHead | Body | EndOfMessage | ProtocolError


class _State(enum.Enum):
    IDLE = "idle"  # no request outstanding
    HEAD = "head"  # waiting for (the rest of) a response head
    BODY = "body"  # reading the body of the final response
    DONE = "done"  # the final response is complete; start() for the next one
    UPGRADED = "upgraded"  # 101, or 2xx to CONNECT: the stream is not HTTP/1 any more
    FAILED = "failed"


class _Stop(Exception):
    """Raised from a callback to stop llhttp."""


class _Sink:
    """llhttp callbacks for one response."""

    def __init__(self, codec: H1ClientCodec) -> None:
        self.codec = codec
        self.parser: httptools.HttpResponseParser | None = None
        self.reason: list[bytes] = []
        self.headers: Headers = []
        self.trailers: Headers = []
        self.head_bytes = 0
        self.in_body = False
        self.no_body_head = False
        self.complete = False
        self.began = False
        self.error: ProtocolError | None = None

    def _limit(self, status: int, reason: str) -> _Stop:
        self.error = ProtocolError(status, reason)
        return _Stop(reason)

    def on_message_begin(self) -> None:
        if self.began:
            raise self._limit(502, "unexpected data after a response")
        self.began = True

    def on_status(self, status: bytes) -> None:
        self.reason.append(status)
        self.head_bytes += len(status)

    def on_header(self, name: bytes, value: bytes) -> None:
        fields = self.trailers if self.in_body else self.headers
        fields.append((name.lower(), value))
        self.head_bytes += len(name) + len(value) + 4
        if len(fields) > self.codec.max_headers:
            raise self._limit(502, "too many header fields in the response")
        if self.head_bytes > self.codec.max_head_bytes:
            raise self._limit(502, "response head too large")

    def on_headers_complete(self) -> None:
        parser = self.parser
        assert parser is not None
        version = parser.get_http_version()
        if version not in ("1.0", "1.1"):
            raise self._limit(502, f"unsupported HTTP version {version}")
        status = parser.get_status_code()
        codec = self.codec
        has_body = not (
            codec.method == b"HEAD"
            or status < 200
            or status in (204, 304)
            or (codec.method == b"CONNECT" and 200 <= status < 300)
        )
        lengths = [v for k, v in self.headers if k == b"content-length"]
        codings = b",".join(v for k, v in self.headers if k == b"transfer-encoding")
        chunked = codings.rsplit(b",", 1)[-1].strip().lower() == b"chunked"
        length: int | None = None
        if lengths and not chunked:
            # llhttp has already refused differing duplicates and non-digits.
            length = int(lengths[0].strip())
        framing: Framing
        if not has_body:
            framing = "none"
        elif chunked:
            framing = "chunked"
        elif length is not None:
            framing = "length"
        else:
            framing = "eof"
        keep_alive = parser.should_keep_alive() and framing != "eof"
        head = ResponseHead(
            status=status,
            reason=b"".join(self.reason),
            version="1.0" if version == "1.0" else "1.1",
            headers=self.headers,
            keep_alive=keep_alive,
            framing=framing,
            content_length=length if framing == "length" else (0 if framing == "none" else None),
        )
        codec.events.append(head)
        codec.framing = framing
        if not has_body:
            self.no_body_head = True
            raise _Stop("head without a body")
        self.in_body = True

    def on_body(self, data: bytes) -> None:
        self.codec.events.append(Body(data))

    def on_message_complete(self) -> None:
        self.complete = True
        self.codec.events.append(EndOfMessage(self.trailers))


class H1ClientCodec:
    """Parses the responses of one client-side HTTP/1 connection into events.

    Call :meth:`start` with the method of each request before feeding the bytes of
    its response.

    Args:
        max_head_bytes: the largest response head accepted (the same bound holds
            for trailers); more is a :class:`ProtocolError`.
        max_headers: the most header fields accepted in a head.
    """

    def __init__(
        self,
        *,
        max_head_bytes: int = DEFAULT_MAX_HEAD_BYTES,
        max_headers: int = DEFAULT_MAX_HEADERS,
    ) -> None:
        self.max_head_bytes = max_head_bytes
        self.max_headers = max_headers
        self.method = b""
        self.events: list[ClientEvent] = []
        self._state = _State.IDLE
        self._buffer = b""  # bytes not yet parsed (after a response, or of a head)
        self._sink: _Sink | None = None
        self._parser: httptools.HttpResponseParser | None = None
        self.framing: Framing = "none"
        self.received_any = False
        self._extra = False

    @property
    def done(self) -> bool:
        """True once the final response to the current request is complete."""
        return self._state is _State.DONE

    @property
    def upgraded(self) -> bool:
        """True after a ``101`` (or a 2xx to ``CONNECT``) head."""
        return self._state is _State.UPGRADED

    @property
    def failed(self) -> bool:
        return self._state is _State.FAILED

    @property
    def trailing_data(self) -> bytes:
        """Bytes read past the last complete response (after an upgrade: the first
        bytes of the new protocol)."""
        return self._buffer

    @property
    def clean(self) -> bool:
        """True when the server sent nothing beyond the responses asked for."""
        return not self._buffer and not self._extra

    def start(self, method: bytes) -> None:
        """Expect the response to a request with ``method``.

        Raises:
            RuntimeError: if the previous response is not complete.
        """
        if self._state not in (_State.IDLE, _State.DONE):
            raise RuntimeError(f"cannot start a request in state {self._state.value}")
        self.method = method
        self._state = _State.HEAD
        self.received_any = bool(self._buffer)
        self._new_parser()

    def _new_parser(self) -> None:
        self._sink = _Sink(self)
        self._parser = httptools.HttpResponseParser(self._sink)
        self._sink.parser = self._parser
        self._head_parts: list[bytes] = []
        self._head_size = 0

    def feed(self, data: bytes) -> list[ClientEvent]:
        """Parse the next bytes from the server; return the events they complete.

        Bytes that come when no response is expected (or after an upgrade) are
        kept in :attr:`trailing_data`.
        """
        if self._state in (_State.IDLE, _State.DONE, _State.UPGRADED):
            if data:
                self._buffer += data
                self._extra = self._extra or self._state is not _State.UPGRADED
            return []
        if self._state is _State.FAILED:
            return []
        if self._buffer:
            data, self._buffer = self._buffer + data, b""
        if data:
            self.received_any = True
            self._run(data)
        return self._take()

    def feed_eof(self) -> list[ClientEvent]:
        """The server closed its side; ends a close-delimited body, else an
        unfinished response is a :class:`ProtocolError`."""
        if self._state is _State.BODY and self.framing == "eof":
            assert self._sink is not None
            self.events.append(EndOfMessage(self._sink.trailers))
            self._state = _State.DONE
        elif self._state in (_State.HEAD, _State.BODY):
            self._fail(ProtocolError(502, "connection closed before the response was complete"))
        return self._take()

    def _run(self, data: bytes | None) -> None:
        # Parses ``data``, through as many interim (1xx) responses as it holds.
        while data is not None:
            sink, parser = self._sink, self._parser
            assert sink is not None and parser is not None
            if not sink.in_body:
                self._head_parts.append(data)
                self._head_size += len(data)
            try:
                parser.feed_data(data)
            except httptools.HttpParserCallbackError:
                if sink.no_body_head:
                    data = self._after_head()
                    continue
                if sink.complete:  # a second message began: junk after the response
                    self._extra = True
                    self._state = _State.DONE
                    return
                self._fail(sink.error or ProtocolError(502, "invalid response"))
                return
            except httptools.HttpParserError as exc:
                if sink.complete:
                    self._extra = True
                    self._state = _State.DONE
                else:
                    self._fail(ProtocolError(502, str(exc) or "invalid response"))
                return
            if sink.complete:
                self._state = _State.DONE
            elif sink.in_body:
                self._state = _State.BODY
                self._head_parts = []
            elif self._head_size > self.max_head_bytes:
                self._fail(ProtocolError(502, "response head too large"))
            return

    def _after_head(self) -> bytes | None:
        # The head just parsed has no body: find where it ends and what follows.
        head = self.events[-1]
        assert isinstance(head, ResponseHead)
        buf = b"".join(self._head_parts)
        end = buf.find(b"\r\n\r\n")
        rest = buf[end + 4 :] if end >= 0 else b""
        self._head_parts = []
        if head.status == 101 or (self.method == b"CONNECT" and 200 <= head.status < 300):
            self._state = _State.UPGRADED
            self._buffer = rest
            return None
        if head.status < 200:
            self._new_parser()  # interim: the final response follows
            return rest or None
        self.events.append(EndOfMessage())
        self._state = _State.DONE
        self._buffer = rest
        self._extra = bool(rest)
        return None

    def _fail(self, error: ProtocolError) -> None:
        self.events.append(error)
        self._state = _State.FAILED

    def _take(self) -> list[ClientEvent]:
        events, self.events = self.events, []
        return events
