"""The transport header codec (``transport.l5d.io/v1``), sans-IO.

Sits at the meshed edge of the transport: an outbound endpoint that negotiated
the ALPN :data:`PROTOCOL` over mTLS writes :meth:`TransportHeader.encode` before
the application's bytes; the inbound direct stack (port 4143) feeds what it has
read to :func:`decode_header` until it answers, within the detect timeout.

On the wire (SPEC section 5): the 23-byte :data:`PREFACE`, a big-endian u32
length, then that many bytes of the protobuf ``transport.l5d.io.Header``
(port = 1, name = 2, session_protocol = 3 with a oneof http1 = 1 / http2 = 2),
written and read by :mod:`~linkerd_proxy.transport.header_proto` without a
protobuf runtime.

This module does no I/O and never imports trio.
"""

from __future__ import annotations

import enum
import re

import attrs

from linkerd_proxy.errors import TransportHeaderError
from linkerd_proxy.transport.header_proto import Kind, WireError, decode_fields, encode_fields

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


_KIND_OF = {SessionProtocol.HTTP1: Kind.HTTP1, SessionProtocol.HTTP2: Kind.HTTP2}
_PROTOCOL_OF = {kind: protocol for protocol, kind in _KIND_OF.items()}


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

    def encode(self) -> bytes:
        """The header as written on the wire: preface, length, message."""
        kind = None if self.protocol is None else _KIND_OF[self.protocol]
        message = encode_fields(self.port, self.name or "", kind)
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
        fields = decode_fields(message)
    except WireError as exc:
        raise TransportHeaderError(f"malformed transport header: {exc}") from None
    if not 1 <= fields.port <= 65535:
        raise TransportHeaderError(f"invalid port in transport header: {fields.port}")
    name = fields.name or None
    if name is not None and not _is_dns_name(name):
        raise TransportHeaderError(f"invalid name in transport header: {name!r}")
    # An unset or unknown oneof means no protocol (opaque), as in the reference.
    protocol = None if fields.kind is None else _PROTOCOL_OF[fields.kind]
    return TransportHeader(port=fields.port, name=name, protocol=protocol)
