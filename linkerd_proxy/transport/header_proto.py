"""The transport header's protobuf message, written and read by hand, sans-IO.

Where it sits: under ``transport.header``, which frames this message (preface,
length) and validates its values. The message is ``transport.l5d.io.Header``
from ``proto/header.proto``::

    message Header { int32 port = 1; string name = 2; SessionProtocol session_protocol = 3; }
    message SessionProtocol { oneof kind { Http1 http1 = 1; Http2 http2 = 2; } }  // both empty

Three fields do not need a protobuf runtime, and the data path should not load
one (the generated classes pull in betterproto2 and pydantic: megabytes of
resident memory in every proxy, meshed or not). ``tests/transport`` checks these
bytes against the generated ``linkerd_proxy.api.transport_header`` classes.

Decoding is strict about the wire (every tag, length, wire type and UTF-8 string
must hold; groups are refused) and otherwise follows protobuf's rules, as the
reference's decoder (prost) does: unknown fields are skipped, the last value of
a scalar wins, repeated ``session_protocol`` messages merge, and the last
``kind`` set wins. ``port`` is an int32: a wider varint is truncated to its low
32 bits, read as signed.

This module does no I/O and never imports trio.
"""

from __future__ import annotations

import enum

import attrs

__all__ = ["HeaderFields", "Kind", "WireError", "decode_fields", "encode_fields"]

_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5
_PORT, _NAME, _SESSION = 1, 2, 3


class Kind(enum.IntEnum):
    """The ``SessionProtocol.kind`` oneof, by field number."""

    HTTP1 = 1
    HTTP2 = 2


class WireError(ValueError):
    """The bytes are not a well-formed ``Header`` message."""


@attrs.frozen
class HeaderFields:
    """The message's fields as protobuf decodes them, before any validation.

    Attributes:
      port: the int32 port (0 when absent; may be negative or out of range).
      name: the name (``""`` when absent).
      kind: the session protocol, or None when ``session_protocol`` is absent
        or sets no kind this version knows.
    """

    port: int = 0
    name: str = ""
    kind: Kind | None = None


def _put_varint(out: bytearray, value: int) -> None:
    value &= (1 << 64) - 1  # negative int32 values take ten bytes, as protobuf writes them
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def encode_fields(port: int, name: str = "", kind: Kind | None = None) -> bytes:
    """The ``Header`` message, in field order, with proto3 defaults left out.

    Args:
      port: the int32 port (0 is the default and is not written).
      name: the name (``""`` is not written).
      kind: the session protocol; None writes no ``session_protocol``.

    Returns:
      The message bytes, exactly as a protobuf encoder writes them.
    """
    out = bytearray()
    if port:
        out.append(_PORT << 3 | _VARINT)
        _put_varint(out, port)
    if name:
        raw = name.encode("utf-8")
        out.append(_NAME << 3 | _LEN)
        _put_varint(out, len(raw))
        out += raw
    if kind is not None:
        # SessionProtocol{kind: <empty message>}: tag, length 0, inside a length of 2.
        out += bytes((_SESSION << 3 | _LEN, 2, kind << 3 | _LEN, 0))
    return bytes(out)


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = 0
    for i in range(10):
        if pos >= len(buf):
            raise WireError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if i == 9 and byte > 1:
                raise WireError("varint overflows 64 bits")
            return value, pos
    raise WireError("varint longer than 10 bytes")


def _fields(buf: bytes) -> list[tuple[int, int, int | bytes]]:
    """Walk one message: ``(field, wire type, value)`` per field, in order.

    A varint's value is an int; a length-delimited one's is its bytes; fixed
    fields are checked for length and given as their bytes.

    Raises:
      WireError: a truncated or invalid tag, varint or length, or a group.
    """
    fields: list[tuple[int, int, int | bytes]] = []
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if field == 0 or field > 0x1FFFFFFF:
            raise WireError(f"invalid field number {field}")
        value: int | bytes
        if wire == _VARINT:
            value, pos = _varint(buf, pos)
        elif wire in (_FIXED64, _FIXED32):
            size = 8 if wire == _FIXED64 else 4
            if pos + size > len(buf):
                raise WireError(f"truncated field {field}")
            value, pos = buf[pos : pos + size], pos + size
        elif wire == _LEN:
            size, pos = _varint(buf, pos)
            if size > len(buf) - pos:
                raise WireError(f"truncated field {field}")
            value, pos = buf[pos : pos + size], pos + size
        else:
            raise WireError(f"unsupported wire type {wire}")
        fields.append((field, wire, value))
    return fields


def _expect(field: int, wire: int, expected: int) -> None:
    if wire != expected:
        raise WireError(f"field {field} has wire type {wire}, expected {expected}")


def _session_kind(buf: bytes, kind: Kind | None) -> Kind | None:
    """Merge one ``SessionProtocol`` message into the kind decoded so far."""
    for field, wire, value in _fields(buf):
        if field in (Kind.HTTP1, Kind.HTTP2):
            _expect(field, wire, _LEN)
            assert isinstance(value, bytes)
            _fields(value)  # Http1 and Http2 are empty, but must still be well formed
            kind = Kind(field)
    return kind


def decode_fields(message: bytes) -> HeaderFields:
    """Decode a ``Header`` message.

    Args:
      message: the message bytes (without the preface and length).

    Returns:
      The decoded fields; values are not validated here.

    Raises:
      WireError: the bytes are not a well-formed message, a known field has
        the wrong wire type, or ``name`` is not UTF-8.
    """
    port, name, kind = 0, "", None
    for field, wire, value in _fields(message):
        if field == _PORT:
            _expect(field, wire, _VARINT)
            assert isinstance(value, int)
            port = (value & 0xFFFFFFFF) - ((value & 0x80000000) << 1)
        elif field == _NAME:
            _expect(field, wire, _LEN)
            assert isinstance(value, bytes)
            try:
                name = value.decode("utf-8")
            except UnicodeDecodeError:
                raise WireError(f"field {field} is not UTF-8") from None
        elif field == _SESSION:
            _expect(field, wire, _LEN)
            assert isinstance(value, bytes)
            kind = _session_kind(value, kind)
    return HeaderFields(port, name, kind)
