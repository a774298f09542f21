"""HTTP/2 header blocks to and from the proxy's model (pure, no I/O).

Used by the HTTP/2 drivers (``conn.py``, ``server.py``, ``client.py``). The h2
library's own header validation and normalisation are turned off on the hot path
(BENCH.md lesson 7: ~19% of its CPU); this module does the checks that protect
the proxy and the next hop in one pass per header block:

- pseudo-headers first, known, not repeated, required ones present;
- names lower-case tokens, values free of CR/LF/NUL (no header injection when a
  request continues as HTTP/1);
- connection-specific headers (``connection``, ``keep-alive``,
  ``proxy-connection``, ``transfer-encoding``, ``upgrade``, ``te`` other than
  ``trailers``) make the message malformed (RFC 9113 8.2.2; HARDENING item 9);
- multiple ``cookie`` fields are joined with ``"; "`` (RFC 9113 8.2.3), as any
  HTTP/1 next hop needs.

Outbound, :func:`outbound_fields` drops connection-specific headers so that a
response from an HTTP/1 peer can never make us send a malformed h2 message.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import attrs
from hpack import NeverIndexedHeaderTuple

Headers = list[tuple[bytes, bytes]]

CONNECTION_SPECIFIC = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)
_REQUEST_PSEUDO = frozenset({b":method", b":scheme", b":authority", b":path"})
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+")
_BAD_VALUE = re.compile(rb"[\r\n\x00]")
_SENSITIVE = frozenset({b"authorization", b"proxy-authorization"})


class MalformedHeaders(ValueError):
    """A header block that is not a valid HTTP/2 message (a stream error)."""


@attrs.define
class RequestHead:
    """The parts of a request header block the model needs."""

    method: str
    scheme: str | None
    authority: str | None
    path: str
    headers: Headers
    #: RFC 9113 6.5.2 size: sum of name + value + 32 per field.
    size: int


def _check_field(name: bytes, value: bytes) -> None:
    if _TOKEN.fullmatch(name) is None:
        raise MalformedHeaders(f"invalid header name {name!r}")
    if _BAD_VALUE.search(value) is not None:
        raise MalformedHeaders(f"invalid value for header {name.decode('latin-1')}")
    if name in CONNECTION_SPECIFIC or (name == b"te" and value != b"trailers"):
        raise MalformedHeaders(f"connection-specific header {name.decode('latin-1')}")


def parse_request(raw: Iterable[tuple[bytes, bytes]]) -> RequestHead:
    """Split a request header block into pseudo-headers and regular headers.

    Raises:
        MalformedHeaders: the block is not a valid HTTP/2 request.
    """
    pseudo: dict[bytes, bytes] = {}
    headers: Headers = []
    size = 0
    cookies = 0
    host: bytes | None = None
    for name, value in raw:
        size += len(name) + len(value) + 32
        if name[:1] == b":":
            if headers or name not in _REQUEST_PSEUDO or name in pseudo:
                raise MalformedHeaders(f"unexpected pseudo-header {name!r}")
            if _BAD_VALUE.search(value) is not None:
                raise MalformedHeaders(f"invalid value for {name!r}")
            pseudo[name] = value
            continue
        _check_field(name, value)
        if name == b"cookie":
            cookies += 1
        elif name == b"host" and host is None:
            host = value
        headers.append((name, value))
    method = pseudo.get(b":method")
    if method is None:
        raise MalformedHeaders("missing :method")
    authority = pseudo.get(b":authority", host)
    if method == b"CONNECT":
        if authority is None or b":scheme" in pseudo or b":path" in pseudo:
            raise MalformedHeaders("malformed CONNECT request")
        path = b""
    else:
        path = pseudo.get(b":path", b"")
        if not path or b":scheme" not in pseudo:
            raise MalformedHeaders("missing :path or :scheme")
    if cookies > 1:
        headers = _join_cookies(headers)
    scheme = pseudo.get(b":scheme")
    return RequestHead(
        method=method.decode("latin-1"),
        scheme=None if scheme is None else scheme.decode("latin-1"),
        authority=None if authority is None else authority.decode("latin-1"),
        path=path.decode("latin-1"),
        headers=headers,
        size=size,
    )


def parse_response(raw: Iterable[tuple[bytes, bytes]]) -> tuple[int, Headers]:
    """The status and regular headers of a response header block.

    Raises:
        MalformedHeaders: the block is not a valid HTTP/2 response.
    """
    status: int | None = None
    headers: Headers = []
    for name, value in raw:
        if name[:1] == b":":
            if headers or name != b":status" or status is not None:
                raise MalformedHeaders(f"unexpected pseudo-header {name!r}")
            if len(value) != 3 or not value.isdigit():
                raise MalformedHeaders(f"invalid :status {value!r}")
            status = int(value)
            continue
        _check_field(name, value)
        headers.append((name, value))
    if status is None:
        raise MalformedHeaders("missing :status")
    return status, headers


def parse_trailers(raw: Iterable[tuple[bytes, bytes]]) -> Headers:
    """The fields of a trailer block.

    Raises:
        MalformedHeaders: a pseudo-header or an invalid field.
    """
    trailers: Headers = []
    for name, value in raw:
        if name[:1] == b":":
            raise MalformedHeaders("pseudo-header in trailers")
        _check_field(name, value)
        trailers.append((name, value))
    return trailers


def outbound_fields(pseudo: Headers, headers: Iterable[tuple[bytes, bytes]]) -> Headers:
    """``pseudo`` followed by ``headers`` without connection-specific fields.

    ``te`` is kept only as ``te: trailers``; credentials are never indexed by HPACK.
    """
    out = pseudo
    for name, value in headers:
        if name in CONNECTION_SPECIFIC or name == b"host":
            continue
        if name == b"te" and value != b"trailers":
            continue
        if name in _SENSITIVE:
            out.append(NeverIndexedHeaderTuple(name, value))
        else:
            out.append((name, value))
    return out


def request_pseudo(method: str, scheme: str | None, authority: str | None, path: str) -> Headers:
    """The pseudo-headers of an outgoing request (``:scheme`` defaults to http)."""
    if method == "CONNECT":
        return [(b":method", b"CONNECT"), (b":authority", (authority or "").encode("latin-1"))]
    pseudo = [
        (b":method", method.encode("latin-1")),
        (b":scheme", (scheme or "http").encode("latin-1")),
    ]
    if authority is not None:
        pseudo.append((b":authority", authority.encode("latin-1")))
    pseudo.append((b":path", (path or "/").encode("latin-1")))
    return pseudo


def _join_cookies(headers: Headers) -> Headers:
    values = [v for k, v in headers if k == b"cookie"]
    out = [(k, v) for k, v in headers if k != b"cookie"]
    out.append((b"cookie", b"; ".join(values)))
    return out
