"""Sans-IO HTTP/1.x server codec over httptools (llhttp).

Where it sits: the bottom of the HTTP/1 stack. A driver (the admin server now, the
proxy's HTTP/1 server later) owns a stream, feeds the bytes it receives to
:class:`H1ServerCodec` and acts on the events it gets back; it writes responses with
:func:`serialize_response_head` and the body framing helpers below. Nothing here
does I/O or imports trio.

Events for each request, in order: one :class:`RequestHead`, zero or more
:class:`Body`, one :class:`EndOfMessage`. A :class:`ProtocolError` can come at any
point and is always the codec's last event: the driver answers with its status (if
no response has started yet) and closes the connection.

Buffering: :meth:`H1ServerCodec.feed` parses all it is given and returns every
event at once, so what is buffered is bounded by what the driver feeds in one call
(one ``receive_some``). A driver handles the returned events before it reads again,
so it never reads far ahead of the request it is serving, even when the client
pipelines.

Strictness: llhttp runs with no leniencies. Bare-LF line endings, folded headers,
``Content-Length`` together with ``Transfer-Encoding``, duplicate
``Content-Length``, an unknown transfer coding on a request, ``Transfer-Encoding``
on HTTP/1.0, NUL or CR in values:
all are 400, which closes the usual request-smuggling doors.
"""

from __future__ import annotations

import enum
import http
import re
from collections.abc import Iterable
from typing import Final, Literal

import attrs
import httptools

from linkerd_proxy.http.h1.headers import (
    HOP_BY_HOP_HEADERS as HOP_BY_HOP_HEADERS,
)
from linkerd_proxy.http.h1.headers import (
    connection_tokens as connection_tokens,
)
from linkerd_proxy.http.h1.headers import (
    header_values as header_values,
)
from linkerd_proxy.http.h1.headers import (
    index_fields as index_fields,
)
from linkerd_proxy.http.h1.headers import (
    lower_connection_tokens as lower_connection_tokens,
)
from linkerd_proxy.http.h1.headers import (
    lower_strip_hop_by_hop as lower_strip_hop_by_hop,
)
from linkerd_proxy.http.h1.headers import (
    strip_hop_by_hop as strip_hop_by_hop,
)

HttpVersion = Literal["1.0", "1.1"]
Headers = list[tuple[bytes, bytes]]

#: hyper's default read-buffer limit, which bounds a request head in the reference.
DEFAULT_MAX_HEAD_BYTES: Final = 8192 + 4096 * 100
#: hyper's default limit on the number of header fields.
DEFAULT_MAX_HEADERS: Final = 100

# --- events ---------------------------------------------------------------------------


# The events are built once or more per request: plain slotted classes (attrs'
# frozen ``__init__`` costs ~3x as much); treat them as immutable all the same.


@attrs.define(eq=True)
class RequestHead:
    """The request line and header fields of one request.

    ``headers`` keeps the order and repetitions of the wire with names in lower case
    (as hyper presents them); values are the raw bytes. ``keep_alive`` is llhttp's
    verdict for this request (HTTP/1.1 unless ``Connection: close``; HTTP/1.0 only
    with ``Connection: keep-alive``). ``upgrade`` is true for ``CONNECT`` and for a
    request carrying ``Upgrade`` with ``Connection: upgrade``: after its
    :class:`EndOfMessage` the stream is no longer HTTP/1 (see
    :attr:`H1ServerCodec.trailing_data`).
    """

    method: bytes
    target: bytes
    version: HttpVersion
    headers: Headers
    keep_alive: bool
    upgrade: bool
    #: ``headers`` indexed by name in one pass (name -> values in order), so that the
    #: per-request checks (host, framing, upgrade, connection, te, expect) do not
    #: each rescan the list. Built from ``headers`` as given; do not mutate either.
    fields: dict[bytes, list[bytes]] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self.fields = index_fields(self.headers)

    def values(self, name: bytes) -> list[bytes]:
        """Every value of the lower-case field ``name``, in order (no copy: do not
        mutate)."""
        return self.fields.get(name, _NO_VALUES)


_NO_VALUES: Final[list[bytes]] = []


@attrs.define(eq=True)
class Body:
    """A piece of the request body, already de-chunked."""

    data: bytes


@attrs.define(eq=True)
class EndOfMessage:
    """The request is complete; ``trailers`` holds chunked trailer fields, if any."""

    trailers: Headers = attrs.Factory(list)


@attrs.frozen
class ProtocolError:
    """The input is not acceptable HTTP/1; ``status`` is the response to send (400,
    431 or 505) and ``reason`` says why, for logs."""

    status: int
    reason: str


Event = RequestHead | Body | EndOfMessage | ProtocolError


# --- the parser -----------------------------------------------------------------------


class _State(enum.Enum):
    IDLE = "idle"  # between requests, nothing of the next one seen
    HEAD = "head"  # a request has started, its head is not complete
    BODY = "body"  # head delivered, body or trailers under way
    CLOSED = "closed"  # the last request said the connection ends after it
    UPGRADED = "upgraded"  # the stream now belongs to another protocol
    FAILED = "failed"  # a ProtocolError was emitted


class _Stop(Exception):
    """Raised from a parser callback to abort parsing; the sink holds the error."""


class _Sink:
    """The llhttp callback target: turns callbacks into events, enforcing limits."""

    def __init__(self, max_head_bytes: int, max_headers: int) -> None:
        self.max_head_bytes = max_head_bytes
        self.max_headers = max_headers
        self.parser: httptools.HttpRequestParser | None = None
        self.events: list[Event] = []
        self.state = _State.IDLE
        self.error: ProtocolError | None = None
        self.head_bytes = 0  # counted from callbacks
        self.head_raw = 0  # counted from reads after the one that began the head
        self._url: list[bytes] = []
        self._headers: Headers = []
        self._trailers: Headers = []
        self._trailer_bytes = 0
        self._body: list[bytes] = []

    def closed_cleanly(self) -> bool:
        # A method, so that type checkers do not narrow ``state`` across a parse.
        return self.state is _State.CLOSED

    def fail(self, error: ProtocolError) -> None:
        self.flush_body()
        self.events.append(error)
        self.error = error
        self.state = _State.FAILED

    def _stop(self, status: int, reason: str) -> _Stop:
        self.error = ProtocolError(status, reason)
        return _Stop(reason)

    def flush_body(self) -> None:
        if self._body:
            data = self._body[0] if len(self._body) == 1 else b"".join(self._body)
            self.events.append(Body(data))
            self._body.clear()

    # llhttp callbacks, named as httptools looks them up.

    def on_message_begin(self) -> None:
        self.state = _State.HEAD
        self.head_bytes = 0
        self.head_raw = 0
        self._url = []
        self._headers = []
        self._trailers = []
        self._trailer_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._url.append(url)
        self.head_bytes += len(url)
        if self.head_bytes > self.max_head_bytes:
            raise self._stop(431, "request head too large")

    def on_header(self, name: bytes, value: bytes) -> None:
        size = len(name) + len(value) + 4
        if self.state is _State.HEAD:
            self._headers.append((name.lower(), value))
            self.head_bytes += size
            fields, total = len(self._headers), self.head_bytes
        else:
            self._trailers.append((name.lower(), value))
            self._trailer_bytes += size
            fields, total = len(self._trailers), self._trailer_bytes
        if fields > self.max_headers:
            raise self._stop(431, f"more than {self.max_headers} header fields")
        if total > self.max_head_bytes:
            raise self._stop(431, "request head too large")

    def on_headers_complete(self) -> None:
        parser = self.parser
        assert parser is not None
        version = parser.get_http_version()
        if version not in ("1.0", "1.1"):
            raise self._stop(505, f"unsupported HTTP version {version}")
        if version == "1.0" and any(n == b"transfer-encoding" for n, _ in self._headers):
            # RFC 9112 6.1: its framing is faulty; reject it as hyper does.
            raise self._stop(400, "Transfer-Encoding in an HTTP/1.0 request")
        self.events.append(
            RequestHead(
                method=parser.get_method(),
                target=b"".join(self._url),
                version="1.0" if version == "1.0" else "1.1",
                headers=self._headers,
                keep_alive=parser.should_keep_alive(),
                upgrade=parser.should_upgrade(),
            )
        )
        self.state = _State.BODY

    def on_body(self, data: bytes) -> None:
        self._body.append(data)

    def on_message_complete(self) -> None:
        parser = self.parser
        assert parser is not None
        self.flush_body()
        self.events.append(EndOfMessage(self._trailers))
        self.state = _State.IDLE if parser.should_keep_alive() else _State.CLOSED


class H1ServerCodec:
    """Parses the requests of one server-side HTTP/1 connection into events.

    Args:
        max_head_bytes: the largest request head (request line and header fields)
            accepted; a larger one is a 431 :class:`ProtocolError`. Chunked
            trailers are held to the same limit.
        max_headers: the most header fields accepted in a head (and in trailers);
            more is a 431.
    """

    def __init__(
        self,
        *,
        max_head_bytes: int = DEFAULT_MAX_HEAD_BYTES,
        max_headers: int = DEFAULT_MAX_HEADERS,
    ) -> None:
        self._sink = _Sink(max_head_bytes, max_headers)
        self._parser = httptools.HttpRequestParser(self._sink)
        self._sink.parser = self._parser
        self._tail = b""
        self._trailing = b""

    @property
    def idle(self) -> bool:
        """True between requests: no byte of a next request has been seen.

        A driver starts its header-read deadline when this turns false.
        """
        return self._sink.state is _State.IDLE

    @property
    def closed(self) -> bool:
        """True once no further request can come: the last one asked to close, the
        stream was upgraded, the peer closed, or a :class:`ProtocolError` was given."""
        return self._sink.state in (_State.CLOSED, _State.UPGRADED, _State.FAILED)

    @property
    def upgraded(self) -> bool:
        """True after an upgrade (or ``CONNECT``) request has been parsed."""
        return self._sink.state is _State.UPGRADED

    @property
    def trailing_data(self) -> bytes:
        """After an upgrade: the bytes that followed the request, which belong to the
        new protocol."""
        return self._trailing

    def resume_http(self, *, keep_alive: bool = True) -> list[Event]:
        """Decline an upgrade: go on reading HTTP/1 from :attr:`trailing_data`.

        For an upgrade the proxy does not perform (``h2c``, an upgrade on
        HTTP/1.0, a ``101`` that never came). Returns the events of the trailing
        data; with ``keep_alive=False`` the connection is closed instead.

        Raises:
            RuntimeError: if the codec is not :attr:`upgraded`.
        """
        if self._sink.state is not _State.UPGRADED:
            raise RuntimeError("resume_http without an upgrade")
        self._sink.state = _State.IDLE if keep_alive else _State.CLOSED
        data, self._trailing = self._trailing, b""
        return self.feed(data) if data else []

    def feed(self, data: bytes | bytearray) -> list[Event]:
        """Parse ``data`` (the next bytes from the peer) and return the events it
        completes, in order.

        Data that arrives after the connection is :attr:`closed` is ignored: once a
        request says ``Connection: close`` (or HTTP/1.0 without keep-alive) a
        pipelined request behind it is never served.

        Raises:
            RuntimeError: if fed after an upgrade; take :attr:`trailing_data` instead.
        """
        sink = self._sink
        if sink.state is _State.UPGRADED:
            raise RuntimeError("HTTP/1 codec fed after an upgrade")
        if sink.state in (_State.CLOSED, _State.FAILED) or not data:
            return []
        if sink.state is _State.HEAD and self._count_head_continuation(data):
            return self._take_events()
        self._tail = (self._tail + data[-3:])[-3:]
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            offset = upgrade.args[0]
            sink.state = _State.UPGRADED
            self._trailing = bytes(data[offset:])
        except httptools.HttpParserCallbackError:
            if sink.error is None:
                raise  # a bug in a callback, not bad input
            sink.fail(sink.error)
        except httptools.HttpParserError as exc:
            # llhttp refuses data after a message that closes the connection; that
            # data is simply never served, so it is not an error of this request.
            if not sink.closed_cleanly():
                sink.fail(ProtocolError(400, str(exc) or "malformed request"))
        return self._take_events()

    def feed_eof(self) -> list[Event]:
        """The peer closed its side. Returns a 400 :class:`ProtocolError` if a request
        was cut short, else nothing; the codec is :attr:`closed` afterwards."""
        sink = self._sink
        if sink.state in (_State.HEAD, _State.BODY):
            sink.fail(ProtocolError(400, "connection closed in the middle of a request"))
        elif sink.state is _State.IDLE:
            sink.state = _State.CLOSED
        return self._take_events()

    def _count_head_continuation(self, data: bytes | bytearray) -> bool:
        # A head that spans several reads is also counted by raw bytes: llhttp skips
        # some whitespace without a callback, and httptools holds a header field
        # until it is complete, so callbacks alone would let a slow head grow. Each
        # count is at most the true size, so either one passing the limit is real.
        window = self._tail + data
        end = window.find(b"\r\n\r\n")
        added = len(data) if end < 0 else max(0, end + 4 - len(self._tail))
        self._sink.head_raw += added
        if self._sink.head_raw > self._sink.max_head_bytes:
            self._sink.fail(ProtocolError(431, "request head too large"))
            return True
        return False

    def _take_events(self) -> list[Event]:
        sink = self._sink
        sink.flush_body()
        events, sink.events = sink.events, []
        return events


# --- responses ------------------------------------------------------------------------

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(rb"[\x00\r\n]")


_PHRASES: Final = {s.value: s.phrase.encode("ascii") for s in http.HTTPStatus}


def reason_phrase(status: int) -> bytes:
    """The standard reason phrase for ``status`` (empty for an unknown code)."""
    return _PHRASES.get(status, b"")


def serialize_response_head(
    status: int,
    headers: Iterable[tuple[bytes, bytes]],
    version: HttpVersion = "1.1",
    reason: bytes | None = None,
) -> bytes:
    """Render a status line and header fields, ending with the blank line.

    The caller chooses the framing headers (``content-length`` or
    ``transfer-encoding: chunked``, see :func:`response_has_body`).

    Raises:
        ValueError: if the status is not three digits or a name or value could split
            the response (a non-token name; CR, LF or NUL in a value).
    """
    if not 100 <= status <= 999:
        raise ValueError(f"invalid status code {status}")
    phrase = reason_phrase(status) if reason is None else reason
    if _BAD_VALUE.search(phrase):
        raise ValueError("invalid reason phrase")
    out = [b"HTTP/%s %d %s\r\n" % (version.encode("ascii"), status, phrase)]
    for name, value in headers:
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"invalid header name {name!r}")
        if _BAD_VALUE.search(value):
            raise ValueError(f"invalid value for header {name!r}")
        out.append(b"%s: %s\r\n" % (name, value))
    out.append(b"\r\n")
    return b"".join(out)


def response_has_body(request_method: bytes, status: int) -> bool:
    """Whether a response may carry a body (and so a framing header): not to
    ``HEAD``, not 1xx, 204 or 304, not a 2xx to ``CONNECT``."""
    if request_method == b"HEAD" or status < 200 or status in (204, 304):
        return False
    return not (request_method == b"CONNECT" and 200 <= status < 300)


def encode_chunk(data: bytes) -> bytes:
    """One chunk of a chunked body; empty data encodes to nothing, since an empty
    chunk would end the body."""
    if not data:
        return b""
    return b"%x\r\n%s\r\n" % (len(data), data)


def encode_last_chunk(trailers: Iterable[tuple[bytes, bytes]] = ()) -> bytes:
    """The terminating chunk of a chunked body, with optional trailer fields.

    Raises:
        ValueError: for a trailer that could split the message.
    """
    out = [b"0\r\n"]
    for name, value in trailers:
        if not _TOKEN.fullmatch(name) or _BAD_VALUE.search(value):
            raise ValueError(f"invalid trailer {name!r}")
        out.append(b"%s: %s\r\n" % (name, value))
    out.append(b"\r\n")
    return b"".join(out)


def expects_continue(head: RequestHead) -> bool:
    """Whether the client waits for ``100 Continue`` before sending the body."""
    if head.version != "1.1":
        return False
    return any(v.strip().lower() == b"100-continue" for v in head.values(b"expect"))


@attrs.frozen
class ReasonPhrase:
    """A response extension: the reason phrase an HTTP/1 upstream sent, when it is
    not the standard one, so that the HTTP/1 server writes it back unchanged (as
    hyper does)."""

    value: bytes
