"""Pair tests for the HTTP/1 codecs: client serializer -> server codec, server
serializer -> client codec, with random split points."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linkerd_proxy.http.h1.client_codec import (
    ClientEvent,
    H1ClientCodec,
    ResponseHead,
    serialize_request_head,
)
from linkerd_proxy.http.h1.codec import (
    Body,
    EndOfMessage,
    Event,
    H1ServerCodec,
    ProtocolError,
    RequestHead,
    encode_chunk,
    encode_last_chunk,
    serialize_response_head,
)

names = st.from_regex(rb"\Ax-[a-z0-9\-]{1,12}\Z")
values = st.from_regex(rb"\A[!-~]([ -~]{0,20}[!-~])?\Z")
header_lists = st.lists(st.tuples(names, values), max_size=8)
bodies = st.lists(st.binary(min_size=1, max_size=64), max_size=5)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, last = [], 0
    for p in points:
        out.append(data[last:p])
        last = p
    out.append(data[last:])
    return [c for c in out if c]


def merged(events: list[ClientEvent] | list[Event]) -> list[object]:
    out: list[object] = []
    for e in events:
        if isinstance(e, Body) and out and isinstance(out[-1], Body):
            out[-1] = Body(out[-1].data + e.data)
        else:
            out.append(e)
    return out


@settings(max_examples=60, deadline=None)
@given(headers=header_lists, chunks=bodies, cuts=st.lists(st.integers(0, 10_000), max_size=6))
def test_request_serializer_to_server_codec(
    headers: list[tuple[bytes, bytes]], chunks: list[bytes], cuts: list[int]
) -> None:
    wire = serialize_request_head(
        b"POST", b"/p?q=1", [(b"host", b"h"), *headers, (b"transfer-encoding", b"chunked")]
    )
    wire += b"".join(encode_chunk(c) for c in chunks) + encode_last_chunk([(b"x-t", b"1")])
    codec = H1ServerCodec()
    events: list[Event] = []
    for piece in split(wire, cuts):
        events.extend(codec.feed(piece))
    events = [e for e in events if not (isinstance(e, Body) and not e.data)]
    out = merged(events)
    head = out[0]
    assert isinstance(head, RequestHead)
    assert (head.method, head.target, head.version) == (b"POST", b"/p?q=1", "1.1")
    assert head.headers[1:-1] == headers
    body = b"".join(c for c in chunks)
    assert out[1:] == ([Body(body)] if body else []) + [EndOfMessage([(b"x-t", b"1")])]


@settings(max_examples=60, deadline=None)
@given(
    headers=header_lists,
    chunks=bodies,
    cuts=st.lists(st.integers(0, 10_000), max_size=6),
    chunked=st.booleans(),
)
def test_response_serializer_to_client_codec(
    headers: list[tuple[bytes, bytes]], chunks: list[bytes], cuts: list[int], chunked: bool
) -> None:
    body = b"".join(chunks)
    if chunked:
        framing = [(b"transfer-encoding", b"chunked")]
        payload = b"".join(encode_chunk(c) for c in chunks) + encode_last_chunk()
    else:
        framing = [(b"content-length", b"%d" % len(body))]
        payload = body
    wire = b"HTTP/1.1 100 Continue\r\n\r\n"
    wire += serialize_response_head(200, [*headers, *framing]) + payload
    codec = H1ClientCodec()
    codec.start(b"GET")
    events: list[ClientEvent] = []
    for piece in split(wire, cuts):
        events.extend(codec.feed(piece))
    out = merged([e for e in events if not (isinstance(e, Body) and not e.data)])
    assert isinstance(out[0], ResponseHead) and out[0].status == 100
    final = out[1]
    assert isinstance(final, ResponseHead)
    assert final.status == 200 and final.headers == [*headers, *framing]
    assert final.framing == ("chunked" if chunked else "length")
    assert out[2:] == ([Body(body)] if body else []) + [EndOfMessage()]
    assert codec.done and codec.clean


@pytest.mark.parametrize(
    ("method", "wire", "status"),
    [
        (b"HEAD", b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n", 200),
        (b"GET", b"HTTP/1.1 204 No Content\r\n\r\n", 204),
        (b"GET", b"HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n", 304),
    ],
)
def test_bodiless_responses_end_at_their_head(method: bytes, wire: bytes, status: int) -> None:
    codec = H1ClientCodec()
    codec.start(method)
    events = codec.feed(wire)
    assert [type(e) for e in events] == [ResponseHead, EndOfMessage]
    assert isinstance(events[0], ResponseHead) and events[0].status == status
    assert codec.done and codec.clean
    codec.start(b"GET")  # the connection can carry the next request
    assert codec.feed(b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nx")[-1] == EndOfMessage()


def test_close_delimited_response_ends_at_eof() -> None:
    codec = H1ClientCodec()
    codec.start(b"GET")
    events = codec.feed(b"HTTP/1.1 200 OK\r\n\r\nsome")
    head = events[0]
    assert isinstance(head, ResponseHead) and head.framing == "eof" and not head.keep_alive
    assert codec.feed_eof() == [EndOfMessage()]


def test_truncated_response_is_an_error() -> None:
    codec = H1ClientCodec()
    codec.start(b"GET")
    codec.feed(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
    [event] = codec.feed_eof()
    assert isinstance(event, ProtocolError)


def test_upgrade_keeps_trailing_bytes() -> None:
    codec = H1ClientCodec()
    codec.start(b"CONNECT")
    events = codec.feed(b"HTTP/1.1 200 OK\r\n\r\n\x16\x03\x01")
    assert [type(e) for e in events] == [ResponseHead]
    assert codec.upgraded and codec.trailing_data == b"\x16\x03\x01"


@pytest.mark.parametrize(
    "wire",
    [
        b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab",
        b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\r\n folded\r\n\r\n",
        b"HTTP/9.9 200 OK\r\n\r\n",
    ],
)
def test_malformed_responses_are_errors(wire: bytes) -> None:
    codec = H1ClientCodec()
    codec.start(b"GET")
    assert isinstance(codec.feed(wire)[-1], ProtocolError)


def test_response_head_limit() -> None:
    codec = H1ClientCodec(max_head_bytes=256)
    codec.start(b"GET")
    events = codec.feed(b"HTTP/1.1 200 OK\r\nx-big: " + b"a" * 1000 + b"\r\n")
    assert isinstance(events[-1], ProtocolError)


@pytest.mark.parametrize(
    ("method", "target", "headers"),
    [
        (b"GET /", b"/", []),
        (b"GET", b"/ x", []),
        (b"GET", b"/", [(b"bad name", b"v")]),
        (b"GET", b"/", [(b"x", b"a\r\nInjected: 1")]),
    ],
)
def test_request_serializer_refuses_splitting(
    method: bytes, target: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    with pytest.raises(ValueError):
        serialize_request_head(method, target, headers)


def test_client_codec_is_pure() -> None:
    code = "import sys, linkerd_proxy.http.h1.client_codec; sys.exit('trio' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
