"""A cheaper HPACK (RFC 7541) for h2's connection: our encoder, decoder and logging.

Sits under ``proto.py``, which installs :class:`FastEncoder` and
:class:`FastDecoder` in place of hpack's on every connection (h2 only needs
``encode``/``decode`` and a few size attributes). Pure: no I/O, no trio.

Why (docs/performance.md, BENCH.md lesson 7): hpack spent ~20% of the HTTP/2
path's CPU, much of it on ~49 ``log.debug`` calls per request and on dynamic
table searches for fields we send.

- **Encoder.** No dynamic-table insertions, so what a field encodes to never
  depends on the connection: fields and whole header blocks are encoded once per
  process (bounded caches). A field in the static table is sent indexed; any
  other as a literal without indexing, with the static table's name index when
  there is one; no Huffman coding. After the peer changes
  SETTINGS_HEADER_TABLE_SIZE, the next block starts with a dynamic table size
  update to 0 (always legal: our table is empty). Sensitive fields
  (``authorization``, ``proxy-authorization``, ``cookie`` values shorter than 20
  bytes, and hpack's ``NeverIndexedHeaderTuple``) are sent "never indexed" and
  never cached.
- **Decoder.** The full RFC 7541 decoder (dynamic table, evictions, size
  updates), raising hpack's exceptions exactly where hpack does (h2 maps them to
  connection errors), with a bounded memo of Huffman-decoded strings.
- **Logging.** :func:`quiet_hpack_logging` makes hpack's module-level debug
  calls free while its logger is not enabled for DEBUG.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable
from typing import Any

from hpack import HeaderTuple, NeverIndexedHeaderTuple
from hpack import hpack as _hpack_module
from hpack.exceptions import (
    HPACKDecodingError,
    InvalidTableIndexError,
    InvalidTableSizeError,
    OversizedHeaderListError,
)
from hpack.huffman_table import decode_huffman
from hpack.table import HeaderTable

Field = tuple[bytes, bytes]

STATIC_TABLE: tuple[Field, ...] = HeaderTable.STATIC_TABLE
_STATIC_LEN = len(STATIC_TABLE)
#: (name, value) -> static index, and name -> its first static index.
_STATIC_FULL: dict[Field, int] = {}
_STATIC_NAME: dict[bytes, int] = {}
for _i, (_n, _v) in enumerate(STATIC_TABLE, start=1):
    _STATIC_FULL.setdefault((_n, _v), _i)
    _STATIC_NAME.setdefault(_n, _i)

DEFAULT_TABLE_SIZE = 4096
DEFAULT_MAX_HEADER_LIST_SIZE = 64 * 1024
#: Bounds of the per-process caches (entries, and bytes per cached item).
FIELD_CACHE_ENTRIES = 4096
FIELD_CACHE_MAX_LEN = 512
BLOCK_CACHE_ENTRIES = 1024
BLOCK_CACHE_MAX_LEN = 2048
HUFFMAN_MEMO_ENTRIES = 4096
HUFFMAN_MEMO_MAX_LEN = 256
#: Octets an HPACK integer may take (prefix octet + continuations), as hpack.
_MAX_INT_OCTETS = 6


# --- integers (RFC 7541 5.1) ------------------------------------------------------------


def encode_int(value: int, prefix_bits: int, flags: int) -> bytes:
    """``value`` as an HPACK integer with an N-bit prefix, ``flags`` in the first octet."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((flags | value,))
    out = bytearray((flags | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 127) | 128)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_int(data: bytes, pos: int, prefix_bits: int) -> tuple[int, int]:
    """The integer at ``data[pos]`` with an N-bit prefix, and the position after it.

    Raises:
        HPACKDecodingError: truncated, or longer than hpack allows.
    """
    limit = (1 << prefix_bits) - 1
    try:
        value = data[pos] & limit
        pos += 1
        if value < limit:
            return value, pos
        shift = 0
        end = pos + _MAX_INT_OCTETS - 1
        while True:
            octet = data[pos]
            pos += 1
            value += (octet & 127) << shift
            if not octet & 128:
                return value, pos
            shift += 7
            if pos >= end:
                raise HPACKDecodingError("HPACK integer representation is too long")
    except IndexError:
        raise HPACKDecodingError("truncated HPACK integer") from None


# --- encoder ------------------------------------------------------------------------------


def _is_sensitive(name: bytes, value: bytes) -> bool:
    return (
        name == b"authorization"
        or name == b"proxy-authorization"
        or (name == b"cookie" and len(value) < 20)
    )


def encode_field(name: bytes, value: bytes, sensitive: bool) -> bytes:
    """One field: indexed if in the static table, else a literal never entering any table."""
    if not sensitive:
        index = _STATIC_FULL.get((name, value))
        if index is not None:
            return bytes((0x80 | index,))
    flags = 0x10 if sensitive else 0x00
    index = _STATIC_NAME.get(name, 0)
    if index:
        head = encode_int(index, 4, flags)
    else:
        head = bytes((flags,)) + encode_int(len(name), 7, 0) + name
    return head + encode_int(len(value), 7, 0) + value


_FIELDS: dict[Field, bytes] = {}
_BLOCKS: dict[tuple[Field, ...], bytes] = {}


def _cache_put(cache: dict[Any, bytes], key: Any, value: bytes, entries: int) -> None:
    if len(cache) >= entries:
        del cache[next(iter(cache))]  # oldest first
    cache[key] = value


def _to_bytes(value: bytes | str) -> bytes:
    return value if type(value) is bytes else str(value).encode("utf-8")


class FastEncoder:
    """An HPACK encoder that never indexes (h2's ``H2Connection.encoder``)."""

    def __init__(self) -> None:
        self._table_size = DEFAULT_TABLE_SIZE
        self._size_changed = False

    @property
    def header_table_size(self) -> int:
        """The peer's SETTINGS_HEADER_TABLE_SIZE; a change is signalled in the next block."""
        return self._table_size

    @header_table_size.setter
    def header_table_size(self, value: int) -> None:
        if value != self._table_size:
            self._size_changed = True
        self._table_size = value

    def encode(self, headers: Iterable[Any], huffman: bool = True) -> bytes:
        """Encode a header block (``huffman`` is ignored: literals are sent raw).

        Args:
            headers: (name, value) pairs as bytes or str, pseudo-headers first;
                ``HeaderTuple``s with ``indexable`` false are sent never indexed.
        """
        if not isinstance(headers, list | tuple):
            headers = list(headers)
        key = tuple(headers)
        block = _BLOCKS.get(key)
        if block is None or any(type(h) is not tuple for h in key):
            block = self._encode_block(key)
        if self._size_changed:
            self._size_changed = False
            return b"\x20" + block  # dynamic table size update to 0
        return block

    def _encode_block(self, key: tuple[Any, ...]) -> bytes:
        parts = []
        cacheable = True
        for field in key:
            name = field[0]
            value = field[1]
            if type(name) is not bytes or type(value) is not bytes:
                name = _to_bytes(name)
                value = _to_bytes(value)
                cacheable = False
            sensitive = _is_sensitive(name, value)
            if isinstance(field, HeaderTuple):
                sensitive = sensitive or not field.indexable
                cacheable = False
            if sensitive:
                parts.append(encode_field(name, value, True))
                cacheable = False
                continue
            pair = (name, value)
            encoded = _FIELDS.get(pair)
            if encoded is None:
                encoded = encode_field(name, value, False)
                if len(encoded) <= FIELD_CACHE_MAX_LEN:
                    _cache_put(_FIELDS, pair, encoded, FIELD_CACHE_ENTRIES)
            parts.append(encoded)
        block = b"".join(parts)
        if cacheable and len(block) <= BLOCK_CACHE_MAX_LEN:
            _cache_put(_BLOCKS, key, block, BLOCK_CACHE_ENTRIES)
        return block


# --- decoder ------------------------------------------------------------------------------

_HUFFMAN: dict[bytes, bytes] = {}


def _huffman(raw: bytes) -> bytes:
    out = _HUFFMAN.get(raw)
    if out is None:
        out = decode_huffman(raw)
        if len(raw) <= HUFFMAN_MEMO_MAX_LEN:
            _cache_put(_HUFFMAN, raw, out, HUFFMAN_MEMO_ENTRIES)
    return out


class FastDecoder:
    """An HPACK decoder (h2's ``H2Connection.decoder``), hpack's errors included.

    Attributes:
        max_header_list_size: largest decoded header list (RFC 9113 6.5.2 sizes);
            more raises ``OversizedHeaderListError``.
        max_allowed_table_size: our acknowledged SETTINGS_HEADER_TABLE_SIZE; a
            larger size update, or a table left larger after a block, raises
            ``InvalidTableSizeError``.
    """

    def __init__(self, max_header_list_size: int = DEFAULT_MAX_HEADER_LIST_SIZE) -> None:
        self.max_header_list_size = max_header_list_size
        self.max_allowed_table_size = DEFAULT_TABLE_SIZE
        self._max_size = DEFAULT_TABLE_SIZE
        self._size = 0
        #: Newest first: dynamic index 62 is ``_dynamic[0]``.
        self._dynamic: deque[Field] = deque()

    @property
    def header_table_size(self) -> int:
        """The dynamic table's current maximum size (set by the peer's size updates)."""
        return self._max_size

    @header_table_size.setter
    def header_table_size(self, value: int) -> None:
        self._max_size = value
        self._evict()

    def _evict(self) -> None:
        dynamic = self._dynamic
        while self._size > self._max_size:
            name, value = dynamic.pop()
            self._size -= 32 + len(name) + len(value)

    def _entry(self, index: int) -> Field:
        if 0 < index <= _STATIC_LEN:
            return STATIC_TABLE[index - 1]
        index -= _STATIC_LEN + 1
        if 0 <= index < len(self._dynamic):
            return self._dynamic[index]
        raise InvalidTableIndexError(f"invalid HPACK table index {index + _STATIC_LEN + 1}")

    def _string(self, data: bytes, pos: int) -> tuple[bytes, int]:
        huffman = data[pos] & 0x80 if pos < len(data) else 0
        length, pos = decode_int(data, pos, 7)
        end = pos + length
        if end > len(data):
            raise HPACKDecodingError("truncated header block")
        raw = data[pos:end]
        return (_huffman(raw) if huffman else raw), end

    def decode(self, data: bytes, raw: bool = False) -> list[Any]:
        """Decode one complete header block.

        Args:
            data: the block (HEADERS plus CONTINUATION payloads).
            raw: return bytes (h2 always asks for this); else UTF-8 strings.

        Returns:
            ``(name, value)`` tuples in order; never-indexed fields as
            ``NeverIndexedHeaderTuple``.

        Raises:
            HPACKDecodingError: malformed block (or a subclass: bad index,
                oversized header list, table size over the allowed maximum).
        """
        data = bytes(data)
        headers: list[Any] = []
        total = 0
        pos = 0
        end = len(data)
        limit = self.max_header_list_size
        while pos < end:
            octet = data[pos]
            if octet & 0x80:  # indexed field
                if 0 < octet - 0x80 <= _STATIC_LEN:
                    field = STATIC_TABLE[octet - 0x81]
                    pos += 1
                else:
                    index, pos = decode_int(data, pos, 7)
                    field = self._entry(index)
            elif octet & 0x40:  # literal with incremental indexing
                field, pos = self._literal(data, pos, 6)
                self._insert(field)
            elif octet & 0x20:  # dynamic table size update
                if headers:
                    raise HPACKDecodingError("table size update not at the start of the block")
                size, pos = decode_int(data, pos, 5)
                if size > self.max_allowed_table_size:
                    raise InvalidTableSizeError("encoder exceeded the allowed table size")
                self.header_table_size = size
                continue
            else:  # literal without indexing (0x00) or never indexed (0x10)
                field, pos = self._literal(data, pos, 4)
                if octet & 0x10:
                    field = NeverIndexedHeaderTuple(*field)
            headers.append(field)
            total += 32 + len(field[0]) + len(field[1])
            if total > limit:
                raise OversizedHeaderListError(f"a header list larger than {limit} was received")
        if self._max_size > self.max_allowed_table_size:
            raise InvalidTableSizeError("encoder did not shrink the table to the allowed size")
        if raw:
            return headers
        try:
            return [(n.decode("utf-8"), v.decode("utf-8")) for n, v in headers]
        except UnicodeDecodeError as exc:
            raise HPACKDecodingError("unable to decode headers as UTF-8") from exc

    def _literal(self, data: bytes, pos: int, prefix_bits: int) -> tuple[Field, int]:
        index, pos = decode_int(data, pos, prefix_bits)
        if index:
            name = self._entry(index)[0]
        else:
            name, pos = self._string(data, pos)
        value, pos = self._string(data, pos)
        return (name, value), pos

    def _insert(self, field: Field) -> None:
        size = 32 + len(field[0]) + len(field[1])
        if size > self._max_size:
            self._dynamic.clear()
            self._size = 0
            return
        self._dynamic.appendleft(field)
        self._size += size
        self._evict()


# --- hpack's logging ------------------------------------------------------------------------


class _QuietLog:
    """Stands in for hpack's module logger: ``debug`` costs a no-op call."""

    def __init__(self, real: logging.Logger) -> None:
        self.real = real

    def debug(self, *args: object, **kwargs: object) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def quiet_hpack_logging() -> bool:
    """Make hpack's per-field ``log.debug`` calls free, unless hpack logs at DEBUG.

    Idempotent. To get hpack's debug logs back, enable DEBUG on the ``hpack``
    logger before the first HTTP/2 connection, or call
    :func:`restore_hpack_logging`.

    Returns:
        True if hpack's logger is (now) quiet.
    """
    current = _hpack_module.log
    if isinstance(current, _QuietLog):
        return True
    if current.isEnabledFor(logging.DEBUG):
        return False
    _hpack_module.log = _QuietLog(current)  # type: ignore[assignment]
    return True


def restore_hpack_logging() -> None:
    """Undo :func:`quiet_hpack_logging`."""
    current = _hpack_module.log
    if isinstance(current, _QuietLog):
        _hpack_module.log = current.real
