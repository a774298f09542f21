"""The transport header codec: golden bytes, round trips, every split, bad input."""

from __future__ import annotations

import ast
import pathlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import linkerd_proxy.transport.header as header_mod
from linkerd_proxy.errors import TransportHeaderError
from linkerd_proxy.transport.header import (
    MAX_HEADER_LEN,
    NO_HEADER,
    PREFACE,
    PROTOCOL,
    Decoded,
    NeedMore,
    SessionProtocol,
    TransportHeader,
    decode_header,
)

# Built by hand from the wire format (SPEC section 5, header.proto): the preface,
# a big-endian u32 length, then field 1 varint 4040 (0x08 0xc8 0x1f), field 2
# "foo.bar.example.com" (0x12 0x13 ...), field 3 SessionProtocol{http2 = {}}
# (0x1a 0x02, inside it field 2 empty: 0x12 0x00).
GOLDEN_MESSAGE = (
    bytes.fromhex("08c81f") + b"\x12\x13foo.bar.example.com" + bytes.fromhex("1a021200")
)
GOLDEN = b"transport.l5d.io/v1\r\n\r\n" + struct.pack(">I", 28) + GOLDEN_MESSAGE
GOLDEN_HEADER = TransportHeader(4040, "foo.bar.example.com", SessionProtocol.HTTP2)


def framed(message: bytes) -> bytes:
    return PREFACE + struct.pack(">I", len(message)) + message


def test_is_pure() -> None:
    tree = ast.parse(pathlib.Path(header_mod.__file__).read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not any(name.split(".")[0] == "trio" for name in names)


def test_preface_bytes() -> None:
    assert PROTOCOL == b"transport.l5d.io/v1"
    assert PREFACE == b"transport.l5d.io/v1\r\n\r\n"
    assert len(PREFACE) == 23


def test_golden_vector_encodes_and_decodes() -> None:
    assert len(GOLDEN_MESSAGE) == 28
    assert GOLDEN_HEADER.encode() == GOLDEN
    assert decode_header(GOLDEN + b"12345") == Decoded(GOLDEN_HEADER, len(GOLDEN))


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (TransportHeader(80), b"\x08\x50"),
        (TransportHeader(65535), b"\x08\xff\xff\x03"),
        (TransportHeader(8080, protocol=SessionProtocol.HTTP1), b"\x08\x90\x3f\x1a\x02\x0a\x00"),
        (TransportHeader(1, name="a.b"), b"\x08\x01\x12\x03a.b"),
    ],
)
def test_minimal_encodings(header: TransportHeader, message: bytes) -> None:
    assert header.encode() == framed(message)
    assert decode_header(framed(message)) == Decoded(header, len(framed(message)))


def test_every_split_of_the_golden_vector_needs_more() -> None:
    for i in range(len(GOLDEN)):
        result = decode_header(GOLDEN[:i])
        assert isinstance(result, NeedMore), i
        assert i < result.total <= len(GOLDEN), (i, result)
    # Reading as asked gets there in two steps after the preface and length.
    assert decode_header(GOLDEN[:10]) == NeedMore(27)
    assert decode_header(GOLDEN[:27]) == NeedMore(len(GOLDEN))


@pytest.mark.parametrize(
    "data",
    [b"G", b"GET / HTTP/1.1\r\n\r\n", b"transport.l5d.io/v2\r\n\r\n", b"\x16\x03\x01", b"t\x00"],
)
def test_no_header_is_decided_at_the_first_wrong_byte(data: bytes) -> None:
    assert decode_header(data) is NO_HEADER


def test_oversized_length_is_refused_before_reading_it() -> None:
    too_big = MAX_HEADER_LEN - len(PREFACE) - 4 + 1
    with pytest.raises(TransportHeaderError, match="exceeds"):
        decode_header(PREFACE + struct.pack(">I", too_big))
    with pytest.raises(TransportHeaderError, match="exceeds"):
        decode_header(PREFACE + b"\xff\xff\xff\xff")
    # The largest allowed length is merely waited for.
    fits = too_big - 1
    assert decode_header(PREFACE + struct.pack(">I", fits)) == NeedMore(MAX_HEADER_LEN)


@pytest.mark.parametrize(
    "message",
    [
        b"",  # no port: 0
        b"\x08\x00",
        b"\x08\x80\x80\x04",  # 65536
        b"\x08\xff\xff\xff\xff\x0f",  # -1 as int32
        b"\x08\x80\x80\x80\x80\x08",  # -2^31
    ],
)
def test_bad_port(message: bytes) -> None:
    with pytest.raises(TransportHeaderError, match="port"):
        decode_header(framed(message))


def test_port_wraps_as_int32_like_protobuf() -> None:
    # A 64-bit varint is truncated to int32, as protobuf decoders do: 2^32 + 80 is 80.
    wrapped = b"\x08" + bytes([0xD0, 0x80, 0x80, 0x80, 0x10])
    assert decode_header(framed(wrapped)) == Decoded(TransportHeader(80), len(framed(wrapped)))


@pytest.mark.parametrize(
    ("message", "why"),
    [
        (b"\x08", "truncated varint"),
        (b"\x08" + b"\xff" * 10 + b"\x01", "varint too long"),
        (b"\x08\x50\x12\x05ab", "truncated name"),
        (b"\x08\x50\x12\x02\xff\xfe", "name not UTF-8"),
        (b"\x08\x50\x1a\x04\x12\x00", "truncated session protocol"),
        (b"\x08\x50\x1a\x02\x10\x00", "http2 as a varint"),
        (b"\x0d\x50\x00\x00\x00", "port as fixed32"),
        (b"\x08\x50\x00\x01", "field number 0"),
        (b"\x08\x50\x0b", "a group"),
        (b"\x08\x50\x21\x00", "truncated unknown fixed64"),
    ],
)
def test_malformed_protobuf(message: bytes, why: str) -> None:
    with pytest.raises(TransportHeaderError, match="malformed"):
        decode_header(framed(message))


@pytest.mark.parametrize("name", ["not a name", "-a.example", "a" * 64 + ".example", "é.example"])
def test_bad_name(name: str) -> None:
    message = b"\x08\x50\x12" + bytes([len(name.encode())]) + name.encode()
    with pytest.raises(TransportHeaderError, match="name"):
        decode_header(framed(message))


def test_unknown_session_protocol_is_opaque() -> None:
    # SessionProtocol present with no known kind (an empty message, or a kind
    # this version does not know, field 3): no protocol, as the reference decodes it.
    for session in (b"", b"\x1a\x00"):
        message = b"\x08\x50\x1a" + bytes([len(session)]) + session
        assert decode_header(framed(message)) == Decoded(TransportHeader(80), len(framed(message)))


def test_unknown_fields_are_skipped() -> None:
    message = b"\x08\x50" + b"\x20\x07" + b"\x2a\x03abc" + b"\x35\x00\x00\x00\x00" + b"\x12\x03a.b"
    expected = TransportHeader(80, name="a.b")
    assert decode_header(framed(message)) == Decoded(expected, len(framed(message)))


def test_invalid_headers_cannot_be_built() -> None:
    for port in (0, -1, 65536):
        with pytest.raises(ValueError, match="port"):
            TransportHeader(port)
    with pytest.raises(ValueError, match="name"):
        TransportHeader(80, name="")
    with pytest.raises(ValueError, match="name"):
        TransportHeader(80, name="bad name")


_LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)
_NAMES = st.lists(_LABEL, min_size=1, max_size=5).map(".".join)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 65535),
    st.one_of(st.none(), _NAMES),
    st.sampled_from([None, SessionProtocol.HTTP1, SessionProtocol.HTTP2]),
    st.binary(max_size=32),
)
def test_round_trip(
    port: int, name: str | None, protocol: SessionProtocol | None, rest: bytes
) -> None:
    header = TransportHeader(port, name, protocol)
    wire = header.encode()
    assert decode_header(wire + rest) == Decoded(header, len(wire))


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_raw_never_raises_anything_else(data: bytes) -> None:
    for candidate in (data, framed(data)):
        try:
            result = decode_header(candidate)
        except TransportHeaderError:
            continue
        if isinstance(result, NeedMore):
            assert result.total > len(candidate)
        elif isinstance(result, Decoded):
            assert result.consumed <= len(candidate)
            # What decodes re-encodes to a header that decodes the same.
            again = decode_header(result.header.encode())
            assert isinstance(again, Decoded) and again.header == result.header
        else:
            assert result is NO_HEADER
