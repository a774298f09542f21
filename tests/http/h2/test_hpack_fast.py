"""hpack_fast: our HPACK encoder and decoder against hpack's (RFC 7541), pure."""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import h2.config
import h2.connection
import h2.exceptions
import hpack
import hpack.hpack
import pytest
from hpack import HeaderTuple, NeverIndexedHeaderTuple
from hpack.exceptions import (
    HPACKDecodingError,
    InvalidTableIndexError,
    InvalidTableSizeError,
    OversizedHeaderListError,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from linkerd_proxy.http.h2 import hpack_fast
from linkerd_proxy.http.h2.hpack_fast import (
    FastDecoder,
    FastEncoder,
    decode_int,
    encode_int,
    quiet_hpack_logging,
    restore_hpack_logging,
)
from linkerd_proxy.http.h2.proto import make_proto

Fields = list[tuple[bytes, bytes]]

_names = st.one_of(
    st.sampled_from(
        [
            *(b":method", b":path", b":status", b"content-type", b"cookie", b"authorization"),
            *(b"user-agent", b"x-custom", b"accept-encoding", b"proxy-authorization"),
        ]
    ),
    st.binary(min_size=1, max_size=40),
)
_values = st.one_of(
    st.sampled_from([b"", b"GET", b"/", b"200", b"gzip, deflate", b"http"]),
    st.binary(max_size=300),
)
_fields = st.lists(st.tuples(_names, _values), max_size=12)


def _hpack_decode(block: bytes, decoder: hpack.Decoder | None = None) -> list[HeaderTuple]:
    decoder = decoder or hpack.Decoder()
    return list(decoder.decode(block, raw=True))


# --- integers -----------------------------------------------------------------------------


@given(st.integers(min_value=0, max_value=2**28), st.integers(min_value=1, max_value=8))
def test_integers_round_trip_and_match_hpack(value: int, prefix: int) -> None:
    encoded = encode_int(value, prefix, 0)
    assert encoded == bytes(hpack.hpack.encode_integer(value, prefix))
    assert decode_int(b"\xff" + encoded, 1, prefix) == (value, 1 + len(encoded))


def test_integer_errors() -> None:
    with pytest.raises(HPACKDecodingError):
        decode_int(b"\x1f\x80", 0, 5)  # truncated continuation
    with pytest.raises(HPACKDecodingError):
        decode_int(b"\x1f" + b"\xff" * 10 + b"\x01", 0, 5)  # too long
    assert decode_int(b"\x1f\x9a\x0a", 0, 5) == (1337, 3)  # RFC 7541 C.1.2


# --- encoder ------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.lists(_fields, min_size=1, max_size=4))
def test_encoder_round_trips_through_hpack_without_indexing(blocks: list[Fields]) -> None:
    encoder = FastEncoder()
    decoder = hpack.Decoder()
    for fields in blocks:
        for _ in range(2):  # second time from the caches
            decoded = _hpack_decode(encoder.encode(list(fields)), decoder)
            assert [tuple(h) for h in decoded] == fields
            assert len(decoder.header_table.dynamic_entries) == 0


def test_static_fields_are_indexed_and_others_literal_without_indexing() -> None:
    block = FastEncoder().encode([(b":method", b"GET"), (b":status", b"200")])
    assert block == b"\x82\x88"
    # name from the static table (:path is 4), raw value, no Huffman
    assert FastEncoder().encode([(b":path", b"/ok")]) == b"\x04\x03/ok"
    assert FastEncoder().encode([(b"x-a", b"b")]) == b"\x00\x03x-a\x01b"


@pytest.mark.parametrize(
    ("name", "value", "never"),
    [
        (b"authorization", b"Bearer abc", True),
        (b"proxy-authorization", b"Basic xyz", True),
        (b"cookie", b"short=1", True),
        (b"cookie", b"a-long-cookie=0123456789abcdef", False),
        (b"x-other", b"value", False),
    ],
)
def test_sensitive_fields_are_never_indexed(name: bytes, value: bytes, never: bool) -> None:
    for _ in range(2):
        (decoded,) = _hpack_decode(FastEncoder().encode([(name, value)]))
        assert tuple(decoded) == (name, value)
        assert isinstance(decoded, NeverIndexedHeaderTuple) is never


def test_never_indexed_tuples_win_over_cached_plain_blocks() -> None:
    fields: Fields = [(b":status", b"200"), (b"x-token", b"t0k3n")]
    encoder = FastEncoder()
    plain = encoder.encode(list(fields))
    assert encoder.encode(list(fields)) == plain  # cached
    marked = [fields[0], NeverIndexedHeaderTuple(b"x-token", b"t0k3n")]
    decoded = _hpack_decode(encoder.encode(marked))
    assert isinstance(decoded[1], NeverIndexedHeaderTuple)
    # and hpack's indexable HeaderTuple is an ordinary field
    decoded = _hpack_decode(encoder.encode([HeaderTuple(b"x-token", b"t0k3n")]))
    assert not isinstance(decoded[0], NeverIndexedHeaderTuple)


def test_str_fields_are_utf8_encoded() -> None:
    assert _hpack_decode(FastEncoder().encode([(":path", "/é")])) == [(b":path", "/é".encode())]


def test_table_size_change_starts_the_next_block_with_an_update_to_zero() -> None:
    encoder = FastEncoder()
    encoder.header_table_size = 4096  # unchanged: nothing to signal
    assert encoder.encode([(b":status", b"200")]) == b"\x88"
    encoder.header_table_size = 0
    assert encoder.header_table_size == 0
    block = encoder.encode([(b":status", b"200")])
    assert block == b"\x20\x88"
    decoder = hpack.Decoder()
    decoder.max_allowed_table_size = 0
    assert _hpack_decode(block, decoder) == [(b":status", b"200")]
    assert encoder.encode([(b":status", b"200")]) == b"\x88"  # only once


def test_caches_stay_bounded() -> None:
    encoder = FastEncoder()
    for i in range(hpack_fast.BLOCK_CACHE_ENTRIES + hpack_fast.FIELD_CACHE_ENTRIES + 10):
        encoder.encode([(b"x-n", str(i).encode())])
    assert len(hpack_fast._BLOCKS) <= hpack_fast.BLOCK_CACHE_ENTRIES
    assert len(hpack_fast._FIELDS) <= hpack_fast.FIELD_CACHE_ENTRIES


# --- decoder ------------------------------------------------------------------------------

_block_ops = st.lists(
    st.tuples(
        st.lists(
            st.tuples(_names, _values, st.booleans()),  # (name, value, never indexed)
            max_size=10,
        ),
        st.booleans(),  # Huffman
        st.one_of(st.none(), st.sampled_from([0, 64, 100, 256, 4096])),  # table size change
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=200, deadline=None)
@given(_block_ops)
def test_decoder_matches_hpack_over_a_connection(
    ops: list[tuple[list[tuple[bytes, bytes, bool]], bool, int | None]],
) -> None:
    encoder = hpack.Encoder()
    ours = FastDecoder()
    theirs = hpack.Decoder()
    for fields, huffman, size in ops:
        if size is not None:
            encoder.header_table_size = size
        headers = [
            NeverIndexedHeaderTuple(n, v) if never else HeaderTuple(n, v) for n, v, never in fields
        ]
        block = encoder.encode(headers, huffman=huffman)
        expected = theirs.decode(block, raw=True)
        got = ours.decode(block, raw=True)
        assert [tuple(h) for h in got] == [tuple(h) for h in expected]
        assert [isinstance(h, NeverIndexedHeaderTuple) for h in got] == [
            isinstance(h, NeverIndexedHeaderTuple) for h in expected
        ]
        assert list(ours._dynamic) == list(theirs.header_table.dynamic_entries)
        assert ours.header_table_size == theirs.header_table_size


def test_decoder_evicts_oldest_entries() -> None:
    decoder = FastDecoder()
    decoder.header_table_size = 100  # room for one 32 + 4 + 50 entry
    first = b"\x40\x02x1\x32" + b"a" * 50
    second = b"\x40\x02x2\x32" + b"b" * 50
    assert decoder.decode(first, raw=True) == [(b"x1", b"a" * 50)]
    assert decoder.decode(b"\xbe", raw=True) == [(b"x1", b"a" * 50)]  # index 62
    decoder.decode(second, raw=True)
    assert decoder.decode(b"\xbe", raw=True) == [(b"x2", b"b" * 50)]
    with pytest.raises(InvalidTableIndexError):
        decoder.decode(b"\xbf", raw=True)  # 63: evicted
    # an entry larger than the table empties it
    decoder.decode(b"\x40\x02x3\x7f\x00" + b"c" * 127, raw=True)
    with pytest.raises(InvalidTableIndexError):
        decoder.decode(b"\xbe", raw=True)


def test_decoder_returns_str_unless_raw() -> None:
    assert FastDecoder().decode(b"\x82\x04\x03/ok") == [(":method", "GET"), (":path", "/ok")]
    with pytest.raises(HPACKDecodingError):
        FastDecoder().decode(b"\x04\x01\xff")


@pytest.mark.parametrize(
    ("block", "error"),
    [
        (b"\x80", InvalidTableIndexError),  # index 0
        (b"\xbe", InvalidTableIndexError),  # empty dynamic table
        (b"\x04\x05/o", HPACKDecodingError),  # truncated value
        (b"\x00\x05x", HPACKDecodingError),  # truncated name
        (b"\x04", HPACKDecodingError),  # missing value length
        (b"\x04\x81\xff", HPACKDecodingError),  # invalid Huffman (EOS)
        (b"\x82\x20", HPACKDecodingError),  # size update after a field
        (b"\x3f\xe2\x1f", InvalidTableSizeError),  # size update to 4096 + 31 + 4066
    ],
)
def test_decoder_errors(block: bytes, error: type[Exception]) -> None:
    expected: type[Exception] = error
    with pytest.raises(expected):
        FastDecoder().decode(block, raw=True)
    with pytest.raises(HPACKDecodingError):  # hpack agrees it is an error
        hpack.Decoder().decode(block, raw=True)


def test_decoder_limits_the_header_list_size() -> None:
    decoder = FastDecoder(max_header_list_size=100)
    fine = b"\x00\x01a\x10" + b"v" * 16  # 32 + 1 + 16
    assert len(decoder.decode(fine * 2, raw=True)) == 2
    with pytest.raises(OversizedHeaderListError):
        decoder.decode(fine * 3, raw=True)


def test_decoder_requires_the_table_to_shrink_to_our_setting() -> None:
    decoder = FastDecoder()
    decoder.max_allowed_table_size = 256
    with pytest.raises(InvalidTableSizeError):
        decoder.decode(b"\x82", raw=True)  # the peer never sent the update
    assert FastDecoder().decode(b"\x3f\xe1\x01\x82", raw=True) == [(b":method", b"GET")]
    decoder = FastDecoder()
    decoder.max_allowed_table_size = 256
    assert decoder.decode(b"\x3f\xe1\x01\x82", raw=True) == [(b":method", b"GET")]  # 256


def test_decoder_errors_are_connection_errors_in_h2() -> None:
    server = make_proto(
        client=False, stream_window=65_535, connection_window=65_535, decoder_limit=200
    )
    server.data_to_send()
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    client.send_headers(
        1,
        [
            *((":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "a")),
            ("x-big", "v" * 300),
        ],
    )
    with pytest.raises(h2.exceptions.ProtocolError):
        server.receive_data(client.data_to_send())
    assert b"\x07" in server.data_to_send()[:40]  # a GOAWAY frame went out


# --- logging ------------------------------------------------------------------------------


def test_quiet_hpack_logging_only_when_debug_is_off() -> None:
    restore_hpack_logging()
    logger = logging.getLogger("hpack")
    old = logger.level
    try:
        logger.setLevel(logging.DEBUG)
        assert quiet_hpack_logging() is False
        assert hpack.hpack.log is logging.getLogger("hpack.hpack")
        logger.setLevel(logging.WARNING)
        assert quiet_hpack_logging() is True
        assert hpack.hpack.log is not logging.getLogger("hpack.hpack")
        hpack.hpack.log.debug("x %s", 1)  # a no-op
        assert hpack.hpack.log.debug.__func__ is hpack_fast._QuietLog.debug  # type: ignore[attr-defined]
        assert quiet_hpack_logging() is True  # idempotent
        restore_hpack_logging()
        assert hpack.hpack.log is logging.getLogger("hpack.hpack")
    finally:
        logger.setLevel(old)
        quiet_hpack_logging()


def test_module_is_pure() -> None:
    tree = ast.parse(Path(hpack_fast.__file__).read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (node.names if isinstance(node, ast.Import) else [])
    } | {
        (node.module or "").split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
    }
    assert "trio" not in imported
