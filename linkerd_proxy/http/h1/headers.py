"""Header-field helpers for HTTP/1 heads (pure: no I/O, no trio).

Hop-by-hop headers (RFC 9110 7.6.1) and the ``Connection`` options that name more
of them; indexing a head's fields by name. ``lower_*`` variants are for fields whose
names are already lower case (the codecs' heads and the request/response model).
Re-exported by ``http.h1.codec``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

Headers = list[tuple[bytes, bytes]]

#: Headers that describe one hop and are never forwarded (RFC 9110 7.6.1), in lower case.
HOP_BY_HOP_HEADERS: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)


def index_fields(headers: Iterable[tuple[bytes, bytes]]) -> dict[bytes, list[bytes]]:
    """Header fields with lower-case names (as the codecs produce them) grouped by
    name in one pass: name -> values, in order."""
    index: dict[bytes, list[bytes]] = {}
    for name, value in headers:
        values = index.get(name)
        if values is None:
            index[name] = [value]
        else:
            values.append(value)
    return index


def header_values(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    """Every value of the field ``name`` (compared case-insensitively), in order."""
    wanted = name.lower()
    return [value for key, value in headers if key.lower() == wanted]


def connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """The lower-cased options listed in all ``Connection`` fields."""
    tokens: set[bytes] = set()
    for value in header_values(headers, b"connection"):
        tokens.update(t.strip().lower() for t in value.split(b",") if t.strip())
    return frozenset(tokens)


def strip_hop_by_hop(headers: Iterable[tuple[bytes, bytes]]) -> Headers:
    """A copy of ``headers`` without hop-by-hop fields: those in
    :data:`HOP_BY_HOP_HEADERS` and any named in a ``Connection`` field."""
    fields = list(headers)
    drop = HOP_BY_HOP_HEADERS | connection_tokens(fields)
    return [(name, value) for name, value in fields if name.lower() not in drop]


_NO_TOKENS: Final[frozenset[bytes]] = frozenset()


def lower_connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """:func:`connection_tokens` for fields whose names are already lower case (the
    codecs' heads and the request/response model): no per-field case folding."""
    values = [value for key, value in headers if key == b"connection"]
    if not values:
        return _NO_TOKENS
    return frozenset(t.strip().lower() for v in values for t in v.split(b",") if t.strip())


def lower_strip_hop_by_hop(headers: Iterable[tuple[bytes, bytes]]) -> Headers:
    """:func:`strip_hop_by_hop` for fields whose names are already lower case."""
    fields = headers if isinstance(headers, list) else list(headers)
    tokens = lower_connection_tokens(fields)
    drop = HOP_BY_HOP_HEADERS | tokens if tokens else HOP_BY_HOP_HEADERS
    return [(name, value) for name, value in fields if name not in drop]
