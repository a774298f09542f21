"""Tests for the sans-IO HTTP/1 server codec (linkerd_proxy.http.h1.codec)."""

from __future__ import annotations

import itertools
import subprocess
import sys

import httptools
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linkerd_proxy.http.h1.codec import (
    HOP_BY_HOP_HEADERS,
    Body,
    EndOfMessage,
    Event,
    H1ServerCodec,
    ProtocolError,
    RequestHead,
    connection_tokens,
    encode_chunk,
    encode_last_chunk,
    expects_continue,
    header_values,
    reason_phrase,
    response_has_body,
    serialize_response_head,
    strip_hop_by_hop,
)

PIPELINE = (
    b"GET /one HTTP/1.1\r\nHost: a\r\nX-Multi: 1\r\nX-Multi: 2\r\n\r\n"
    b"POST /two?q=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world"
    b"PUT /three HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: yes\r\n\r\n"
    b"\r\nDELETE /four HTTP/1.1\r\nConnection: close\r\n\r\n"
)


def normalized(events: list[Event]) -> list[Event]:
    """Merge adjacent Body events: how a body is cut is not part of the contract."""
    out: list[Event] = []
    for event in events:
        if isinstance(event, Body) and out and isinstance(out[-1], Body):
            out[-1] = Body(out[-1].data + event.data)
        elif not (isinstance(event, Body) and not event.data):
            out.append(event)
    return out


def feed_all(chunks: list[bytes], **limits: int) -> list[Event]:
    codec = H1ServerCodec(**limits)
    events: list[Event] = []
    for chunk in chunks:
        events.extend(codec.feed(chunk))
    return normalized(events)


def feed_bytewise(data: bytes, **limits: int) -> list[Event]:
    return feed_all([data[i : i + 1] for i in range(len(data))], **limits)


def test_a_simple_request() -> None:
    codec = H1ServerCodec()
    events = codec.feed(b"GET /ready HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n")
    assert events == [
        RequestHead(
            method=b"GET",
            target=b"/ready",
            version="1.1",
            headers=[(b"host", b"localhost"), (b"accept", b"*/*")],
            keep_alive=True,
            upgrade=False,
        ),
        EndOfMessage(),
    ]
    assert codec.idle and not codec.closed


def test_pipelined_requests_come_out_in_order_with_their_bodies() -> None:
    events = feed_all([PIPELINE])
    heads = [e for e in events if isinstance(e, RequestHead)]
    assert [(h.method, h.target) for h in heads] == [
        (b"GET", b"/one"),
        (b"POST", b"/two?q=1"),
        (b"PUT", b"/three"),
        (b"DELETE", b"/four"),
    ]
    assert heads[0].headers == [(b"host", b"a"), (b"x-multi", b"1"), (b"x-multi", b"2")]
    assert events[2:5] == [heads[1], Body(b"hello world"), EndOfMessage()]
    assert events[5:8] == [heads[2], Body(b"hello world"), EndOfMessage([(b"x-trailer", b"yes")])]
    assert events[8:] == [heads[3], EndOfMessage()]
    assert [h.keep_alive for h in heads] == [True, True, True, False]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(PIPELINE)), max_size=12))
def test_any_split_of_a_pipelined_stream_gives_the_same_events(cuts: list[int]) -> None:
    points = [0, *sorted(cuts), len(PIPELINE)]
    chunks = [PIPELINE[a:b] for a, b in itertools.pairwise(points)]
    assert feed_all(chunks) == feed_all([PIPELINE])


def test_bytewise_feeding_matches_one_feed() -> None:
    assert feed_bytewise(PIPELINE) == feed_all([PIPELINE])


@pytest.mark.parametrize(
    ("request_head", "keep_alive"),
    [
        (b"GET / HTTP/1.1\r\n\r\n", True),
        (b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", False),
        (b"GET / HTTP/1.1\r\nConnection: Close\r\n\r\n", False),
        (b"GET / HTTP/1.1\r\nConnection: keep-alive\r\n\r\n", True),
        (b"GET / HTTP/1.0\r\n\r\n", False),
        (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", True),
        (b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", True),
        (b"GET / HTTP/1.0\r\nConnection: close\r\n\r\n", False),
    ],
)
def test_keep_alive_rules(request_head: bytes, keep_alive: bool) -> None:
    codec = H1ServerCodec()
    head = codec.feed(request_head)[0]
    assert isinstance(head, RequestHead)
    assert head.keep_alive is keep_alive
    assert codec.closed is not keep_alive


def test_nothing_is_parsed_after_a_closing_request() -> None:
    codec = H1ServerCodec()
    events = codec.feed(b"GET /a HTTP/1.0\r\n\r\nGET /b HTTP/1.1\r\n\r\n")
    assert [type(e) for e in events] == [RequestHead, EndOfMessage]
    assert codec.closed
    assert codec.feed(b"GET /c HTTP/1.1\r\n\r\n") == []


def test_request_versions() -> None:
    head = H1ServerCodec().feed(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")[0]
    assert isinstance(head, RequestHead) and head.version == "1.0"
    assert H1ServerCodec().feed(b"GET / HTTP/2.0\r\n\r\n") == [
        ProtocolError(505, "unsupported HTTP version 2.0")
    ]
    [error] = H1ServerCodec().feed(b"GET / HTTP/0.9\r\n\r\n")
    assert isinstance(error, ProtocolError) and error.status == 505


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\nHost: a\n\n",  # bare LF
        b"GET / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc",
        b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Header: 1\r\n\r\n",
        b"GET / HTTP/1.1\r\nA: 1\r\n folded\r\n\r\n",
        b"GET / HTTP/1.1\r\nA: x\x00y\r\n\r\n",
        b"BREW / HTTP/1.1\r\n\r\n",
        b"GET /\xff HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.2\r\n\r\n",
        b"GET / FTP/1.1\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",  # TE on 1.0
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",  # a TLS ClientHello
    ],
)
def test_malformed_input_is_a_400_and_the_last_event(data: bytes) -> None:
    for events in (feed_all([data]), feed_bytewise(data)):
        assert isinstance(events[-1], ProtocolError)
        assert events[-1].status == 400
        assert events[-1].reason
        assert not any(isinstance(e, EndOfMessage) for e in events)
    codec = H1ServerCodec()
    codec.feed(data)
    assert codec.closed
    assert codec.feed(b"GET / HTTP/1.1\r\n\r\n") == []


def test_a_large_head_in_one_read_is_431() -> None:
    big = b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 2000 + b"\r\n\r\n"
    assert feed_all([big], max_head_bytes=1000) == [ProtocolError(431, "request head too large")]
    ok = feed_all([big], max_head_bytes=4000)
    assert [type(e) for e in ok] == [RequestHead, EndOfMessage]


def test_a_long_target_is_431() -> None:
    data = b"GET /" + b"x" * 2000 + b" HTTP/1.1\r\n\r\n"
    assert feed_all([data], max_head_bytes=1000) == [ProtocolError(431, "request head too large")]


def test_a_slow_head_is_cut_off_before_it_completes() -> None:
    codec = H1ServerCodec(max_head_bytes=1000)
    assert codec.feed(b"GET / HTTP/1.1\r\nX-Big: ") == []
    assert not codec.idle
    errors: list[Event] = []
    for _ in range(2000):
        errors = codec.feed(b"a")
        if errors:
            break
    assert errors == [ProtocolError(431, "request head too large")]
    assert codec.closed


def test_a_slow_head_of_whitespace_is_cut_off() -> None:
    # llhttp skips the spaces before a value without telling us; raw bytes count.
    codec = H1ServerCodec(max_head_bytes=1000)
    codec.feed(b"GET / HTTP/1.1\r\nX-Pad:")
    results = [codec.feed(b" " * 100) for _ in range(20)]
    assert [ProtocolError(431, "request head too large")] in results


def test_pipelined_small_heads_do_not_add_up_to_the_limit() -> None:
    one = b"GET / HTTP/1.1\r\nX-Pad: " + b"p" * 400 + b"\r\n\r\n"
    events = feed_bytewise(one * 5, max_head_bytes=600)
    assert [type(e) for e in events] == [RequestHead, EndOfMessage] * 5


def test_too_many_headers_is_431() -> None:
    def request(n: int) -> bytes:
        fields = b"".join(b"X-H%d: v\r\n" % i for i in range(n))
        return b"GET / HTTP/1.1\r\n" + fields + b"\r\n"

    assert [type(e) for e in feed_all([request(10)], max_headers=10)] == [
        RequestHead,
        EndOfMessage,
    ]
    assert feed_all([request(11)], max_headers=10) == [
        ProtocolError(431, "more than 10 header fields")
    ]
    trailers = b"".join(b"T%d: v\r\n" % i for i in range(11))
    chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n" + trailers + b"\r\n"
    assert feed_all([chunked], max_headers=10)[-1] == ProtocolError(
        431, "more than 10 header fields"
    )


def test_upgrade_hands_over_the_trailing_bytes() -> None:
    codec = H1ServerCodec()
    events = codec.feed(
        b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x00raw"
    )
    head = events[0]
    assert isinstance(head, RequestHead) and head.upgrade
    assert events[1:] == [EndOfMessage()]
    assert codec.upgraded and codec.closed
    assert codec.trailing_data == b"\x81\x00raw"
    with pytest.raises(RuntimeError):
        codec.feed(b"more")


def test_connect_is_an_upgrade() -> None:
    codec = H1ServerCodec()
    [head, end] = codec.feed(b"CONNECT example.com:443 HTTP/1.1\r\n\r\n")
    assert isinstance(head, RequestHead)
    assert (head.method, head.target, head.upgrade) == (b"CONNECT", b"example.com:443", True)
    assert end == EndOfMessage() and codec.trailing_data == b""


def test_an_upgrade_header_without_connection_upgrade_is_plain_http() -> None:
    events = feed_all([b"GET / HTTP/1.1\r\nUpgrade: h2c\r\n\r\nGET /2 HTTP/1.1\r\n\r\n"])
    heads = [e for e in events if isinstance(e, RequestHead)]
    assert [h.upgrade for h in heads] == [False, False]


def test_eof_in_the_middle_of_a_request_is_an_error() -> None:
    codec = H1ServerCodec()
    assert codec.feed(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc") == [
        RequestHead(b"POST", b"/", "1.1", [(b"content-length", b"10")], True, False),
        Body(b"abc"),
    ]
    [error] = codec.feed_eof()
    assert isinstance(error, ProtocolError) and error.status == 400
    assert codec.closed


def test_eof_between_requests_is_clean() -> None:
    codec = H1ServerCodec()
    codec.feed(b"GET / HTTP/1.1\r\n\r\n")
    assert codec.feed_eof() == []
    assert codec.closed


def test_idle_tracks_whether_a_request_has_started() -> None:
    codec = H1ServerCodec()
    assert codec.idle
    codec.feed(b"GE")
    assert not codec.idle
    codec.feed(b"T / HTTP/1.1\r\nContent-Length: 2\r\n\r\n")
    assert not codec.idle
    codec.feed(b"ok")
    assert codec.idle


# --- responses ------------------------------------------------------------------------


def test_serialize_response_head() -> None:
    head = serialize_response_head(
        200, [(b"content-type", b"text/plain"), (b"content-length", b"5")]
    )
    assert head == b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\r\n"
    assert serialize_response_head(503, [], "1.0") == b"HTTP/1.0 503 Service Unavailable\r\n\r\n"
    assert serialize_response_head(431, []).startswith(
        b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    )
    assert serialize_response_head(299, [], reason=b"Fine") == b"HTTP/1.1 299 Fine\r\n\r\n"
    assert reason_phrase(599) == b""


@pytest.mark.parametrize(
    ("status", "headers"),
    [
        (200, [(b"x-evil", b"a\r\nset-cookie: b")]),
        (200, [(b"x-evil", b"a\nb")]),
        (200, [(b"x evil", b"a")]),
        (200, [(b"", b"a")]),
        (200, [(b"x:y", b"a")]),
        (42, []),
    ],
)
def test_serialize_refuses_response_splitting(
    status: int, headers: list[tuple[bytes, bytes]]
) -> None:
    with pytest.raises(ValueError):
        serialize_response_head(status, headers)


def test_response_has_body() -> None:
    assert response_has_body(b"GET", 200)
    assert response_has_body(b"POST", 404)
    assert not response_has_body(b"HEAD", 200)
    assert not response_has_body(b"GET", 204)
    assert not response_has_body(b"GET", 304)
    assert not response_has_body(b"GET", 101)
    assert not response_has_body(b"CONNECT", 200)
    assert response_has_body(b"CONNECT", 502)


class _ResponseRecorder:
    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""
        self.complete = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.complete = True


def test_chunked_framing_round_trips_through_llhttp() -> None:
    wire = serialize_response_head(
        200, [(b"transfer-encoding", b"chunked"), (b"trailer", b"grpc-status")]
    )
    wire += encode_chunk(b"hello ") + encode_chunk(b"") + encode_chunk(b"x" * 300)
    wire += encode_last_chunk([(b"grpc-status", b"0")])
    recorder = _ResponseRecorder()
    parser = httptools.HttpResponseParser(recorder)
    parser.feed_data(wire)
    assert parser.get_status_code() == 200
    assert recorder.complete
    assert recorder.body == b"hello " + b"x" * 300
    assert recorder.headers[-1] == (b"grpc-status", b"0")
    assert encode_chunk(b"") == b""
    assert encode_last_chunk() == b"0\r\n\r\n"
    with pytest.raises(ValueError):
        encode_last_chunk([(b"t", b"a\r\nb")])


# --- header helpers -------------------------------------------------------------------


def test_strip_hop_by_hop() -> None:
    headers = [
        (b"Host", b"a"),
        (b"Connection", b"keep-alive, X-Private ,Upgrade"),
        (b"connection", b"x-other"),
        (b"Keep-Alive", b"timeout=5"),
        (b"TE", b"trailers"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Proxy-Connection", b"close"),
        (b"Trailer", b"x"),
        (b"Upgrade", b"h2c"),
        (b"X-Private", b"secret"),
        (b"X-Other", b"1"),
        (b"X-Kept", b"2"),
    ]
    assert strip_hop_by_hop(headers) == [(b"Host", b"a"), (b"X-Kept", b"2")]
    assert connection_tokens(headers) == {b"keep-alive", b"x-private", b"upgrade", b"x-other"}
    assert b"transfer-encoding" in HOP_BY_HOP_HEADERS
    assert header_values(headers, b"CONNECTION") == [b"keep-alive, X-Private ,Upgrade", b"x-other"]


def test_expects_continue() -> None:
    def head(version: str, headers: list[tuple[bytes, bytes]]) -> RequestHead:
        return RequestHead(b"PUT", b"/", "1.1" if version == "1.1" else "1.0", headers, True, False)

    assert expects_continue(head("1.1", [(b"expect", b"100-Continue")]))
    assert not expects_continue(head("1.0", [(b"expect", b"100-continue")]))
    assert not expects_continue(head("1.1", []))


def test_the_codec_does_not_import_trio() -> None:
    code = (
        "import sys, linkerd_proxy.http.h1.codec; "
        "sys.exit(1 if any(m == 'trio' or m.startswith('trio.') for m in sys.modules) else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
