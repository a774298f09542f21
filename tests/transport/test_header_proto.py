"""The hand-written transport header message against the generated betterproto2 classes.

``transport.header_proto`` must write exactly the bytes the generated
``linkerd_proxy.api.transport_header`` classes write, and read back what they
read, while the data path never imports a protobuf runtime.
"""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import linkerd_proxy.transport.header_proto as proto_mod
from linkerd_proxy.api import transport_header as pb
from linkerd_proxy.transport.header_proto import (
    HeaderFields,
    Kind,
    WireError,
    decode_fields,
    encode_fields,
)

_INT32 = st.integers(-(2**31), 2**31 - 1)
_KINDS = st.sampled_from([None, Kind.HTTP1, Kind.HTTP2])


def generated(port: int, name: str, kind: Kind | None) -> pb.Header:
    session = None
    if kind is Kind.HTTP1:
        session = pb.SessionProtocol(http1=pb.SessionProtocolHttp1())
    elif kind is Kind.HTTP2:
        session = pb.SessionProtocol(http2=pb.SessionProtocolHttp2())
    return pb.Header(port=port, name=name, session_protocol=session)


def from_generated(message: pb.Header) -> HeaderFields:
    session = message.session_protocol
    kind = None
    if session is not None and session.http1 is not None:
        kind = Kind.HTTP1
    elif session is not None and session.http2 is not None:
        kind = Kind.HTTP2
    return HeaderFields(message.port, message.name, kind)


def test_imports_no_protobuf_runtime_and_no_trio() -> None:
    tree = ast.parse(pathlib.Path(proto_mod.__file__).read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert names == {"__future__", "enum", "attrs"}
    # And the header codec as a whole loads none of it either.
    code = (
        "import sys, linkerd_proxy.transport.header_io;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in"
        " ('betterproto2', 'pydantic', 'asyncio', 'grpclib') or m.startswith('linkerd_proxy.api')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("fields", "wire"),
    [
        ((80, "", None), b"\x08\x50"),
        ((0, "", None), b""),
        ((4143, "web.ns.svc.cluster.local:80", Kind.HTTP2), None),
        ((8080, "", Kind.HTTP1), b"\x08\x90\x3f\x1a\x02\x0a\x00"),
        ((-1, "", None), b"\x08" + b"\xff" * 9 + b"\x01"),
        ((1, "é", None), b"\x08\x01\x12\x02\xc3\xa9"),
    ],
)
def test_golden_bytes_match_generated(
    fields: tuple[int, str, Kind | None], wire: bytes | None
) -> None:
    expected = bytes(generated(*fields))
    assert encode_fields(*fields) == expected
    if wire is not None:
        assert expected == wire
    assert decode_fields(expected) == HeaderFields(*fields)


@settings(max_examples=400, deadline=None)
@given(_INT32, st.text(max_size=300), _KINDS)
def test_encode_is_byte_for_byte_generated(port: int, name: str, kind: Kind | None) -> None:
    wire = encode_fields(port, name, kind)
    assert wire == bytes(generated(port, name, kind))
    assert decode_fields(wire) == HeaderFields(port, name, kind)
    assert from_generated(pb.Header.parse(wire)) == HeaderFields(port, name, kind)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, wire: int, payload: bytes) -> bytes:
    return _varint(number << 3 | wire) + payload


def _len_field(number: int, data: bytes) -> bytes:
    return _field(number, 2, _varint(len(data)) + data)


_UNKNOWN = st.one_of(
    st.builds(lambda n, v: _field(n, 0, _varint(v)), st.integers(4, 99), st.integers(0, 2**64 - 1)),
    st.builds(lambda n, b: _len_field(n, b), st.integers(4, 99), st.binary(max_size=8)),
    st.builds(lambda n, b: _field(n, 1, b), st.integers(4, 99), st.binary(min_size=8, max_size=8)),
    st.builds(lambda n, b: _field(n, 5, b), st.integers(4, 99), st.binary(min_size=4, max_size=4)),
)


@st.composite
def _messages(draw: st.DrawFn) -> bytes:
    """Each known field at most once, in any order, between unknown fields.

    The port may be any 64-bit varint (int32 truncation); a session protocol
    may carry no kind, an unknown kind, or a kind with unknown fields inside.
    """
    parts: list[bytes] = []
    if draw(st.booleans()):
        parts.append(_field(1, 0, _varint(draw(st.integers(0, 2**64 - 1)))))
    if draw(st.booleans()):
        parts.append(_len_field(2, draw(st.text(max_size=20)).encode()))
    if draw(st.booleans()):
        inner: list[bytes] = [draw(_UNKNOWN) for _ in range(draw(st.integers(0, 2)))]
        kind = draw(st.sampled_from([None, 1, 2]))
        if kind is not None:
            body = b"".join(draw(st.lists(_UNKNOWN, max_size=2)))
            inner.insert(draw(st.integers(0, len(inner))), _len_field(kind, body))
        parts.append(_len_field(3, b"".join(inner)))
    for _ in range(draw(st.integers(0, 3))):
        parts.insert(draw(st.integers(0, len(parts))), draw(_UNKNOWN))
    return b"".join(parts)


@settings(max_examples=500, deadline=None)
@given(_messages())
def test_decode_agrees_with_generated(message: bytes) -> None:
    assert decode_fields(message) == from_generated(pb.Header.parse(message))


def test_port_is_int32() -> None:
    assert decode_fields(b"\x08" + _varint(2**32 + 80)).port == 80
    assert decode_fields(b"\x08" + _varint(2**31)).port == -(2**31)
    assert decode_fields(b"\x08" + _varint(2**64 - 1)).port == -1


def test_last_scalar_wins_and_session_protocols_merge() -> None:
    # protobuf's rules, as the reference's decoder (prost) applies them.
    http1, http2 = _len_field(1, b""), _len_field(2, b"")
    assert decode_fields(b"\x08\x01\x08\x02").port == 2
    assert decode_fields(_len_field(2, b"a") + _len_field(2, b"b")).name == "b"
    # A later session_protocol without a kind keeps the earlier kind.
    assert decode_fields(_len_field(3, http1) + _len_field(3, b"")).kind is Kind.HTTP1
    assert decode_fields(_len_field(3, http1) + _len_field(3, http2)).kind is Kind.HTTP2
    # Within one message, the last member of the oneof set wins.
    assert decode_fields(_len_field(3, http1 + http2)).kind is Kind.HTTP2
    assert decode_fields(_len_field(3, http2 + http1)).kind is Kind.HTTP1
    # An unknown kind leaves the protocol unset.
    assert decode_fields(_len_field(3, _len_field(3, b""))).kind is None


@pytest.mark.parametrize(
    ("message", "match"),
    [
        (b"\x08", "truncated varint"),
        (b"\x08" + b"\x80" * 9 + b"\x02", "overflows"),
        (b"\x08" + b"\xff" * 10 + b"\x01", "longer than 10"),
        (b"\x12\x05ab", "truncated field 2"),
        (b"\x12\x02\xff\xfe", "UTF-8"),
        (b"\x0a\x00", "field 1 has wire type 2"),
        (b"\x10\x01", "field 2 has wire type 0"),
        (b"\x18\x01", "field 3 has wire type 0"),
        (b"\x1a\x02\x10\x00", "field 2 has wire type 0"),
        (b"\x1a\x03\x0a\x01\x08", "truncated varint"),  # inside Http1
        (b"\x00\x01", "field number 0"),
        (b"\x0b", "wire type 3"),
        (b"\x21\x00", "truncated field 4"),
        (b"\x25\x00\x00", "truncated field 4"),
    ],
)
def test_malformed(message: bytes, match: str) -> None:
    with pytest.raises(WireError, match=match):
        decode_fields(message)
