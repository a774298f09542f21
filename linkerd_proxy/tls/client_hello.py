"""A sans-IO parser for the TLS ClientHello a client sends first.

Sits under the inbound TLS detection (and the tap/control servers): the driver
buffers the first bytes of an accepted connection (at most 8 KiB, as the
reference does) and calls :func:`parse_client_hello` after each read. The answer
decides whether the proxy terminates TLS (the SNI is its own identity), passes
the connection through (TLS for someone else), or treats it as plaintext.

The parser is stateless: it re-reads the buffer from the start on every call
(ClientHellos are small), and decides as early as the bytes allow. A buffer that
cannot begin a ClientHello is rejected from its first wrong byte; a buffer that
still could is answered with :class:`NeedMore`, naming the length the buffer must
reach before the parser can say more. Handshake messages split over several TLS
records (RFC 8446 section 5.1) are reassembled.

Every length is checked against its enclosing length and against the bytes
present; malformed input yields ``NOT_TLS``, never an exception. This module
does no I/O and never imports trio.
"""

from __future__ import annotations

import enum
import re

import attrs

__all__ = [
    "MAX_CLIENT_HELLO_LEN",
    "NOT_TLS",
    "ClientHello",
    "NeedMore",
    "NotTls",
    "parse_client_hello",
]

#: The most bytes the detector buffers for a ClientHello (the reference's 8 KiB).
#: A ClientHello that needs more than this is not one a Linkerd proxy sends.
MAX_CLIENT_HELLO_LEN = 8192

_CONTENT_HANDSHAKE = 22
_HANDSHAKE_CLIENT_HELLO = 1
_RECORD_HEADER_LEN = 5
_HANDSHAKE_HEADER_LEN = 4
# RFC 8446 section 5.1: a TLSPlaintext fragment is at most 2^14 bytes.
_MAX_RECORD_LEN = 1 << 14
_EXT_SERVER_NAME = 0
_EXT_ALPN = 16
_NAME_TYPE_HOST_NAME = 0

# A host name as RFC 6066 allows in SNI: ASCII LDH labels (underscore tolerated as
# the reference's DNS name type does), no trailing dot, no IP literals.
_LABEL = re.compile(rb"(?!-)[a-z0-9_-]{1,63}(?<!-)\Z")


@attrs.frozen
class ClientHello:
    """A complete, well-formed ClientHello.

    Attributes:
      sni: the ``host_name`` of the server_name extension, lower-cased; ``None``
        when the extension is absent or its name is not a valid DNS name.
      alpn: the protocols offered in the ALPN extension, in the client's order;
        empty when the extension is absent.
    """

    sni: str | None
    alpn: tuple[bytes, ...] = ()


@attrs.frozen
class NeedMore:
    """The buffer is a prefix that may still become a ClientHello.

    Attributes:
      total: the length the buffer must reach before the parser can decide more
        (always greater than the length given). Read at least
        ``total - len(buffer)`` more bytes, then call again.
    """

    total: int


class NotTls(enum.Enum):
    """The buffer is not (the start of) a ClientHello this proxy can read."""

    NOT_TLS = "not-tls"


NOT_TLS = NotTls.NOT_TLS

ParseResult = ClientHello | NeedMore | NotTls


class _Malformed(Exception):
    """A length or value breaks the format: the answer is NOT_TLS."""


class _Incomplete(Exception):
    """The bytes present end before the structure does."""


class _Reader:
    """Reads a bounded region of a buffer whose tail may not have arrived yet.

    ``end`` is where the structure being read ends, as declared by its length
    prefix; ``avail`` is where the bytes present end. Reading past ``end`` is
    malformed input; reading past ``avail`` (but within ``end``) is incomplete.
    """

    __slots__ = ("avail", "buf", "end", "pos")

    def __init__(self, buf: bytes, pos: int, end: int, avail: int) -> None:
        self.buf = buf
        self.pos = pos
        self.end = end
        self.avail = avail

    def take(self, n: int) -> bytes:
        stop = self.pos + n
        if stop > self.end:
            raise _Malformed
        if stop > self.avail:
            raise _Incomplete
        chunk = self.buf[self.pos : stop]
        self.pos = stop
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def sub(self, length: int) -> _Reader:
        """A reader over the next ``length`` bytes; this one skips past them."""
        start = self.pos
        stop = start + length
        if stop > self.end:
            raise _Malformed
        self.pos = stop
        return _Reader(self.buf, start, stop, self.avail)

    def vector8(self) -> _Reader:
        return self.sub(self.u8())

    def vector16(self) -> _Reader:
        return self.sub(self.u16())

    def at_end(self) -> bool:
        return self.pos >= self.end

    def expect_end(self) -> None:
        if self.pos != self.end:
            raise _Malformed


def parse_client_hello(
    data: bytes | bytearray | memoryview, *, max_len: int = MAX_CLIENT_HELLO_LEN
) -> ParseResult:
    """Parse a ClientHello from the first bytes of a connection.

    Bytes after the ClientHello's last record are ignored.

    Args:
      data: everything read from the connection so far.
      max_len: the most bytes the caller will buffer; a ClientHello whose
        records would need more is answered with ``NOT_TLS``.

    Returns:
      :class:`ClientHello` when the whole message is present and well formed;
      :class:`NeedMore` when ``data`` could still be the start of one;
      ``NOT_TLS`` otherwise (not TLS, not a ClientHello, malformed, too big, or
      a version below TLS 1.2).
    """
    buf = bytes(data)
    try:
        payload, need = _reassemble(buf, max_len)
        return _parse_handshake(payload, need)
    except _Malformed:
        return NOT_TLS


def _reassemble(buf: bytes, max_len: int) -> tuple[bytes, int]:
    """Collect handshake bytes from consecutive records.

    Returns the handshake bytes present (possibly ending inside a record) and the
    buffer length needed for the next handshake byte, which the caller reports
    if the message turns out incomplete.
    """
    payload = bytearray()
    pos = 0
    while True:
        if len(payload) >= _HANDSHAKE_HEADER_LEN:
            message_len = _HANDSHAKE_HEADER_LEN + int.from_bytes(payload[1:4], "big")
            if message_len > max_len:
                raise _Malformed
            # Stop at the record that completes the message: what follows is
            # not ours to read.
            if len(payload) >= message_len:
                return bytes(payload), pos
        header = buf[pos : pos + _RECORD_HEADER_LEN]
        _check_record_header(header)
        if len(header) < _RECORD_HEADER_LEN:
            return bytes(payload), pos + _RECORD_HEADER_LEN
        length = int.from_bytes(header[3:5], "big")
        if length == 0 or length > _MAX_RECORD_LEN:
            raise _Malformed
        end = pos + _RECORD_HEADER_LEN + length
        if end > max_len:
            raise _Malformed
        fragment = buf[pos + _RECORD_HEADER_LEN : end]
        payload += fragment
        if len(fragment) < length:
            return bytes(payload), end
        pos = end


def _check_record_header(header: bytes) -> None:
    """Reject a (possibly partial) record header that cannot carry a handshake."""
    if len(header) >= 1 and header[0] != _CONTENT_HANDSHAKE:
        raise _Malformed
    # legacy_record_version: 0x0301 or 0x0303 (RFC 8446 section 5.1).
    if len(header) >= 2 and header[1] != 0x03:
        raise _Malformed
    if len(header) >= 3 and header[2] not in (0x01, 0x03):
        raise _Malformed


def _parse_handshake(payload: bytes, need: int) -> ParseResult:
    outer = _Reader(payload, 0, _HANDSHAKE_HEADER_LEN, len(payload))
    try:
        if outer.u8() != _HANDSHAKE_CLIENT_HELLO:
            return NOT_TLS
        length = int.from_bytes(outer.take(3), "big")
    except _Incomplete:
        return NeedMore(need)
    body = _Reader(payload, _HANDSHAKE_HEADER_LEN, _HANDSHAKE_HEADER_LEN + length, len(payload))
    try:
        return _parse_body(body)
    except _Incomplete:
        return NeedMore(need)


def _parse_body(r: _Reader) -> ClientHello:
    # legacy_version is 0x0303 for TLS 1.2 and 1.3 (RFC 8446 section 4.1.2).
    if r.take(2) != b"\x03\x03":
        raise _Malformed
    r.take(32)  # random
    session_id = r.vector8()
    if session_id.end - session_id.pos > 32:
        raise _Malformed
    cipher_suites = r.vector16()
    count = cipher_suites.end - cipher_suites.pos
    if count < 2 or count % 2:
        raise _Malformed
    if r.vector8().at_end():  # compression methods: at least one
        raise _Malformed
    if r.at_end():
        # TLS 1.2 allows a ClientHello without extensions; wait for the bytes
        # skipped over above before answering.
        _ensure_present(r)
        return ClientHello(sni=None, alpn=())
    extensions = r.vector16()
    r.expect_end()
    return _parse_extensions(extensions)


def _ensure_present(r: _Reader) -> None:
    if r.end > r.avail:
        raise _Incomplete


def _parse_extensions(r: _Reader) -> ClientHello:
    seen: set[int] = set()
    sni: str | None = None
    alpn: tuple[bytes, ...] = ()
    while not r.at_end():
        ext_type = r.u16()
        data = r.vector16()
        if ext_type in seen:
            raise _Malformed  # RFC 8446 section 4.2: at most one of each
        seen.add(ext_type)
        if ext_type == _EXT_SERVER_NAME:
            sni = _parse_server_name(data)
        elif ext_type == _EXT_ALPN:
            alpn = _parse_alpn(data)
        else:
            _ensure_present(data)
    return ClientHello(sni=sni, alpn=alpn)


def _parse_server_name(r: _Reader) -> str | None:
    """RFC 6066 section 3: a non-empty ServerNameList, one name per type."""
    names = r.vector16()
    r.expect_end()
    if names.at_end():
        raise _Malformed
    host: bytes | None = None
    types: set[int] = set()
    while not names.at_end():
        name_type = names.u8()
        name = names.take(names.u16())
        if name_type in types:
            raise _Malformed
        types.add(name_type)
        if name_type == _NAME_TYPE_HOST_NAME:
            host = name
    return None if host is None else _host_name(host)


def _host_name(raw: bytes) -> str | None:
    """The SNI as a lower-case DNS name, or None when it is not one."""
    if not raw or len(raw) > 253 or raw.endswith(b"."):
        return None
    name = raw.lower()
    labels = name.split(b".")
    if not all(_LABEL.match(label) for label in labels):
        return None
    # An IP literal is not a host name (RFC 6066 section 3).
    if labels[-1].isdigit():
        return None
    return name.decode("ascii")


def _parse_alpn(r: _Reader) -> tuple[bytes, ...]:
    """RFC 7301 section 3.1: a non-empty list of non-empty protocol names."""
    names = r.vector16()
    r.expect_end()
    protocols: list[bytes] = []
    while not names.at_end():
        name = names.take(names.u8())
        if not name:
            raise _Malformed
        protocols.append(name)
    if not protocols:
        raise _Malformed
    return tuple(protocols)
