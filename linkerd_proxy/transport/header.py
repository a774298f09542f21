"""The transport header codec (``transport.l5d.io/v1``), sans-IO.

Sits at the meshed edge of the transport: an outbound endpoint that negotiated
the ALPN :data:`PROTOCOL` over mTLS writes :meth:`TransportHeader.encode` before
the application's bytes; the inbound direct stack (port 4143) feeds what it has
read to :func:`decode_header` until it answers, within the detect timeout.

On the wire (SPEC section 5): the 23-byte :data:`PREFACE`, a big-endian u32
length, then that many bytes of the protobuf ``transport.l5d.io.Header``
(port = 1, name = 2, session_protocol = 3 with a oneof http1 = 1 / http2 = 2).
Messages are built and read with the generated classes in
``linkerd_proxy.api.transport_header``; the wire is walked first by a strict
checker, since that runtime accepts truncated fields and mismatched wire types.

This module does no I/O and never imports trio.
"""

from __future__ import annotations

import enum
import re

import attrs

from linkerd_proxy.api import transport_header as pb
from linkerd_proxy.errors import TransportHeaderError

__all__ = [
    "MAX_HEADER_LEN",
    "NO_HEADER",
    "PREFACE",
    "PROTOCOL",
    "Decoded",
    "NeedMore",
    "NoHeader",
    "SessionProtocol",
    "TransportHeader",
    "decode_header",
]

#: The ALPN protocol name that announces a transport header.
PROTOCOL = b"transport.l5d.io/v1"
#: What a header starts with: the protocol name and a blank line (23 bytes).
PREFACE = PROTOCOL + b"\r\n\r\n"
_LEN_SIZE = 4
#: The most bytes a whole header (preface, length and message) may take: the
#: reference reads it into a 64 KiB buffer.
MAX_HEADER_LEN = 64 * 1024
_MAX_MESSAGE_LEN = MAX_HEADER_LEN - len(PREFACE) - _LEN_SIZE

# A DNS name as the reference's name type accepts: LDH labels (underscore
# tolerated), an optional trailing dot, at most 253 characters.
_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)\Z")


class SessionProtocol(enum.Enum):
    """The protocol the connection carries when it is not opaque."""

    HTTP1 = "http1"
    HTTP2 = "http2"


def _is_dns_name(name: str) -> bool:
    bare = name[:-1] if name.endswith(".") else name
    if not bare or len(bare) > 253 or not bare.isascii():
        return False
    return all(_LABEL.match(label) for label in bare.lower().split("."))


def _check_port(_inst: object, _attr: object, port: int) -> None:
    if not 1 <= port <= 65535:
        raise ValueError(f"transport header port out of range: {port}")


def _check_name(_inst: object, _attr: object, name: str | None) -> None:
    if name is not None and not _is_dns_name(name):
        raise ValueError(f"transport header name is not a DNS name: {name!r}")


@attrs.frozen
class TransportHeader:
    """What a peer proxy tells the inbound side about a connection.

    Attributes:
      port: the application port to forward to (1..65535).
      name: the gateway target's DNS name, or None for a direct connection.
      protocol: the session protocol, or None for an opaque connection.

    Raises:
      ValueError: on construction, for a port out of range or a name that is
        not a DNS name.
    """

    port: int = attrs.field(validator=_check_port)
    name: str | None = attrs.field(default=None, validator=_check_name)
    protocol: SessionProtocol | None = None

    def to_proto(self) -> pb.Header:
        session: pb.SessionProtocol | None = None
        if self.protocol is SessionProtocol.HTTP1:
            session = pb.SessionProtocol(http1=pb.SessionProtocolHttp1())
        elif self.protocol is SessionProtocol.HTTP2:
            session = pb.SessionProtocol(http2=pb.SessionProtocolHttp2())
        return pb.Header(port=self.port, name=self.name or "", session_protocol=session)

    def encode(self) -> bytes:
        """The header as written on the wire: preface, length, message."""
        message = bytes(self.to_proto())
        return PREFACE + len(message).to_bytes(_LEN_SIZE, "big") + message


@attrs.frozen
class Decoded:
    """A complete header and how many bytes of the buffer it took.

    The application's bytes start at ``buffer[consumed:]``.
    """

    header: TransportHeader
    consumed: int


@attrs.frozen
class NeedMore:
    """The buffer is a prefix of a header: read until it holds ``total`` bytes."""

    total: int


class NoHeader(enum.Enum):
    """The buffer does not start with the preface: there is no header."""

    NO_HEADER = "no-header"


NO_HEADER = NoHeader.NO_HEADER


def decode_header(data: bytes | bytearray | memoryview) -> Decoded | NeedMore | NoHeader:
    """Decode a transport header from the start of ``data``.

    Args:
      data: everything read from the connection so far.

    Returns:
      :class:`Decoded` once the whole header is present; :class:`NeedMore` while
      ``data`` is a prefix of one (a reader at EOF then has a truncated header);
      ``NO_HEADER`` as soon as ``data`` departs from the preface.

    Raises:
      TransportHeaderError: the length exceeds :data:`MAX_HEADER_LEN`, or the
        message is malformed protobuf, has a port outside 1..65535, or names
        something that is not a DNS name.
    """
    buf = bytes(data)
    head = buf[: len(PREFACE)]
    if head != PREFACE[: len(head)]:
        return NO_HEADER
    start = len(PREFACE) + _LEN_SIZE
    if len(buf) < start:
        return NeedMore(start)
    length = int.from_bytes(buf[len(PREFACE) : start], "big")
    if length > _MAX_MESSAGE_LEN:
        raise TransportHeaderError(
            f"transport header of {start + length} bytes exceeds the {MAX_HEADER_LEN}-byte limit"
        )
    end = start + length
    if len(buf) < end:
        return NeedMore(end)
    return Decoded(_decode_message(buf[start:end]), end)


def _decode_message(message: bytes) -> TransportHeader:
    try:
        _check_wire(message, _HEADER_SCHEMA)
        proto = pb.Header.parse(message)
    except (_WireError, ValueError) as exc:
        raise TransportHeaderError(f"malformed transport header: {exc}") from None
    if not 1 <= proto.port <= 65535:
        raise TransportHeaderError(f"invalid port in transport header: {proto.port}")
    name = proto.name or None
    if name is not None and not _is_dns_name(name):
        raise TransportHeaderError(f"invalid name in transport header: {name!r}")
    protocol: SessionProtocol | None = None
    session = proto.session_protocol
    # An unset or unknown oneof means no protocol (opaque), as in the reference.
    if session is not None and session.http1 is not None:
        protocol = SessionProtocol.HTTP1
    elif session is not None and session.http2 is not None:
        protocol = SessionProtocol.HTTP2
    return TransportHeader(port=proto.port, name=name, protocol=protocol)


# ---------------------------------------------------------------- wire checking


class _WireError(Exception):
    pass


_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5

# field number -> (wire type, schema of the nested message or "utf8" or None).
_Schema = dict[int, tuple[int, "_Schema | str | None"]]
_EMPTY: _Schema = {}
_SESSION_SCHEMA: _Schema = {1: (_LEN, _EMPTY), 2: (_LEN, _EMPTY)}
_HEADER_SCHEMA: _Schema = {1: (_VARINT, None), 2: (_LEN, "utf8"), 3: (_LEN, _SESSION_SCHEMA)}


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = 0
    for i in range(10):
        if pos >= len(buf):
            raise _WireError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, pos
    raise _WireError("varint longer than 10 bytes")


def _check_wire(buf: bytes, schema: _Schema) -> None:
    """Walk a message: every tag, length and known field's wire type must hold."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if field == 0 or field > 0x1FFFFFFF:
            raise _WireError(f"invalid field number {field}")
        expected, nested = schema.get(field, (wire, None))
        if wire != expected:
            raise _WireError(f"field {field} has wire type {wire}, expected {expected}")
        if wire == _VARINT:
            _, pos = _varint(buf, pos)
        elif wire in (_FIXED64, _FIXED32):
            pos += 8 if wire == _FIXED64 else 4
            if pos > len(buf):
                raise _WireError(f"truncated field {field}")
        elif wire == _LEN:
            size, pos = _varint(buf, pos)
            if size > len(buf) - pos:
                raise _WireError(f"truncated field {field}")
            value = buf[pos : pos + size]
            pos += size
            if nested == "utf8":
                try:
                    value.decode("utf-8")
                except UnicodeDecodeError:
                    raise _WireError(f"field {field} is not UTF-8") from None
            elif isinstance(nested, dict):
                _check_wire(value, nested)
        else:
            raise _WireError(f"unsupported wire type {wire}")
