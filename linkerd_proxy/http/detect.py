"""HTTP protocol detection over a connection's first bytes (pure, sans-IO).

Sits under the inbound and outbound connection stacks, after TLS: the driver in
``linkerd_proxy.transport.detect_io`` reads the first bytes of a connection and
asks :func:`detect` what they are. The decision picks the HTTP/2 server, the
HTTP/1 server, or the opaque TCP forwarder; the bytes read are replayed to it.

What counts as HTTP follows the reference (``linkerd/http/detect``):

- HTTP/2: the connection preface ``PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n``. As in
  the reference, its first 14 bytes (``PRI * HTTP/2.0``) are decisive; if what
  follows differs from the preface, the HTTP/2 server rejects it.
- HTTP/1: what the reference's parser (httparse, with no header slots) accepts:
  optional empty lines, a method of token characters, one SP, a request target of
  visible bytes (``!``..``~`` and 0x80..0xFF), one SP, ``HTTP/1.0`` or
  ``HTTP/1.1``, then CRLF or a bare LF. A header line after it does not matter;
  a CR not followed by LF does.

The reference performs one read and decides on it; an unfinished but so far
valid request line of at least 14 bytes (the shortest request, ``GET /
HTTP/1.1``) is HTTP/1, anything shorter is not HTTP. We keep reading while the
answer could still change (:attr:`Detected.NEED_MORE`), so a request line split
across TCP segments is still detected; once no more bytes will come
(``final=True``: end of stream, timeout, capacity) the reference's rule decides.
"""

from __future__ import annotations

import enum

__all__ = ["H2_PREFACE", "SMALLEST_HTTP1_REQUEST", "Detected", "detect"]

#: The HTTP/2 client connection preface.
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# The part of the preface the reference treats as decisive.
_H2_DECISIVE = H2_PREFACE[:14]
#: The length of the shortest HTTP/1 request line (``GET / HTTP/1.1``), without CRLF.
SMALLEST_HTTP1_REQUEST = len(b"GET / HTTP/1.1")

_TCHAR = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_URI_CHAR = frozenset(range(0x21, 0x7F)) | frozenset(range(0x80, 0x100))
_VERSIONS = (b"HTTP/1.0", b"HTTP/1.1")


class Detected(enum.Enum):
    """The outcome of detection."""

    H2 = "h2"
    HTTP1 = "http/1"
    NOT_HTTP = "not http"
    NEED_MORE = "need more"


class _Line(enum.Enum):
    COMPLETE = enum.auto()
    PARTIAL = enum.auto()
    INVALID = enum.auto()


def detect(buf: bytes, *, final: bool = False) -> Detected:
    """Decide which protocol ``buf`` (a connection's first bytes) starts.

    Args:
      buf: every byte read so far.
      final: no more bytes will be read (end of stream, timeout or the capacity
        is reached); the answer is then never ``NEED_MORE``.

    Returns:
      ``H2``, ``HTTP1``, ``NOT_HTTP``, or ``NEED_MORE`` when ``buf`` is a valid
      prefix of either protocol and ``final`` is false.
    """
    if buf.startswith(_H2_DECISIVE):
        return Detected.H2
    if buf and _H2_DECISIVE.startswith(buf) and not final:
        # "PRI * HTTP/2" is not a valid HTTP/1 prefix, but may become the preface.
        return Detected.NEED_MORE
    line = _request_line(buf)
    if line is _Line.COMPLETE:
        return Detected.HTTP1
    if line is _Line.INVALID:
        return Detected.NOT_HTTP
    if not final:
        return Detected.NEED_MORE
    # No more bytes: the reference's single-read rule.
    if len(buf) >= SMALLEST_HTTP1_REQUEST:
        return Detected.HTTP1
    return Detected.NOT_HTTP


def _request_line(buf: bytes) -> _Line:
    """Classify ``buf`` against the request-line grammar httparse accepts."""
    n = len(buf)
    i = 0
    # httparse skips empty lines (CRLF or LF) before the request line.
    while i < n:
        if buf[i] == 0x0A:
            i += 1
        elif buf[i] == 0x0D:
            if i + 1 >= n:
                return _Line.PARTIAL
            if buf[i + 1] != 0x0A:
                return _Line.INVALID
            i += 2
        else:
            break

    # method: 1*tchar, then one SP
    start = i
    while i < n and buf[i] in _TCHAR:
        i += 1
    if i >= n:
        return _Line.PARTIAL
    if i == start or buf[i] != 0x20:
        return _Line.INVALID
    i += 1

    # request target: 1*uri-char, then one SP
    start = i
    while i < n and buf[i] in _URI_CHAR:
        i += 1
    if i >= n:
        return _Line.PARTIAL
    if i == start or buf[i] != 0x20:
        return _Line.INVALID
    i += 1

    # version
    got = buf[i : i + 8]
    if not any(v.startswith(got) for v in _VERSIONS):
        return _Line.INVALID
    if len(got) < 8:
        return _Line.PARTIAL
    i += 8

    # end of line: CRLF or LF
    if i >= n:
        return _Line.PARTIAL
    if buf[i] == 0x0D:
        if i + 1 >= n:
            return _Line.PARTIAL
        if buf[i + 1] != 0x0A:
            return _Line.INVALID
        i += 2
    elif buf[i] == 0x0A:
        i += 1
    else:
        return _Line.INVALID

    # With no header slots, httparse still rejects a CR that does not start CRLF.
    if i < n and buf[i] == 0x0D and i + 1 < n and buf[i + 1] != 0x0A:
        return _Line.INVALID
    return _Line.COMPLETE
