"""The ClientHello parser: real hellos from ``ssl``, every split, malformed lengths, fuzz."""

from __future__ import annotations

import ast
import pathlib
import ssl
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import linkerd_proxy.tls.client_hello as client_hello_mod
from linkerd_proxy.tls.client_hello import (
    MAX_CLIENT_HELLO_LEN,
    NOT_TLS,
    ClientHello,
    NeedMore,
    parse_client_hello,
)

DATA = pathlib.Path(__file__).parent / "data"
LOCAL_ID = "web.default.serviceaccount.identity.linkerd.cluster.local"
TRANSPORT_ALPN = b"transport.l5d.io/v1"


def real_hello(server_hostname: str | None, alpn: list[str] | None = None) -> bytes:
    """The first flight of Python's TLS client, taken from a memory BIO."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    conn = ctx.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    with pytest.raises(ssl.SSLWantReadError):
        conn.do_handshake()
    return outgoing.read()


def handshake_of(hello: bytes) -> bytes:
    """The handshake message inside a single-record hello."""
    (length,) = struct.unpack(">H", hello[3:5])
    assert len(hello) == 5 + length
    return hello[5:]


def records(message: bytes, size: int, version: bytes = b"\x03\x03") -> bytes:
    """Frame a handshake message into records of at most ``size`` bytes."""
    out = b""
    for start in range(0, len(message), size):
        chunk = message[start : start + size]
        out += b"\x16" + version + struct.pack(">H", len(chunk)) + chunk
    return out


# A ClientHello built field by field, so each length can be broken on purpose.


def vec8(data: bytes) -> bytes:
    return bytes([len(data)]) + data


def vec16(data: bytes) -> bytes:
    return struct.pack(">H", len(data)) + data


def ext(ext_type: int, data: bytes) -> bytes:
    return struct.pack(">H", ext_type) + vec16(data)


def sni_ext(name: bytes) -> bytes:
    return ext(0, vec16(b"\x00" + vec16(name)))


def alpn_ext(*names: bytes) -> bytes:
    return ext(16, vec16(b"".join(vec8(n) for n in names)))


def built_body(
    extensions: bytes | None,
    *,
    version: bytes = b"\x03\x03",
    session_id: bytes = b"\x11" * 32,
    suites: bytes = b"\x13\x01\x13\x02",
    compression: bytes = b"\x00",
) -> bytes:
    body = version + b"\x22" * 32 + vec8(session_id) + vec16(suites) + vec8(compression)
    if extensions is not None:
        body += vec16(extensions)
    return body


def built(extensions: bytes | None = b"", **kwargs: bytes) -> bytes:
    body = built_body(extensions, **kwargs)
    message = b"\x01" + len(body).to_bytes(3, "big") + body
    return records(message, 1 << 14, b"\x03\x01")


def test_is_pure() -> None:
    tree = ast.parse(pathlib.Path(client_hello_mod.__file__).read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not any(name.split(".")[0] == "trio" for name in names)


def test_real_hello_with_sni_and_alpn() -> None:
    hello = real_hello(LOCAL_ID, ["transport.l5d.io/v1", "h2"])
    assert parse_client_hello(hello) == ClientHello(LOCAL_ID, (TRANSPORT_ALPN, b"h2"))


def test_real_hello_without_sni_or_alpn() -> None:
    assert parse_client_hello(real_hello(None)) == ClientHello(None, ())
    # ssl sends no SNI for an IP literal.
    assert parse_client_hello(real_hello("10.1.2.3")) == ClientHello(None, ())


def test_sni_is_lower_cased() -> None:
    assert parse_client_hello(real_hello("Web.Example.COM")) == ClientHello("web.example.com")


@pytest.mark.parametrize(
    ("name", "sni", "alpn"),
    [
        ("example-com-client-hello.bin", "example.com", ()),
        ("curl-example-com-client-hello.bin", "example.com", (b"h2", b"http/1.1")),
    ],
)
def test_reference_vectors(name: str, sni: str, alpn: tuple[bytes, ...]) -> None:
    hello = (DATA / name).read_bytes()
    assert parse_client_hello(hello) == ClientHello(sni, alpn)


@pytest.mark.parametrize("alpn", [None, ["transport.l5d.io/v1"]])
def test_every_prefix_needs_more_and_every_extension_agrees(alpn: list[str] | None) -> None:
    hello = real_hello(LOCAL_ID, alpn)
    expected = parse_client_hello(hello)
    assert isinstance(expected, ClientHello) and expected.sni == LOCAL_ID
    for i in range(len(hello)):
        result = parse_client_hello(hello[:i])
        assert isinstance(result, NeedMore), i
        assert i < result.total <= len(hello), (i, result)
    # Whatever follows the hello (the client's next flight) changes nothing.
    for tail in (b"\x17", b"GET / HTTP/1.1\r\n", bytes(300)):
        assert parse_client_hello(hello + tail) == expected


def test_reading_as_asked_reaches_the_hello_in_few_steps() -> None:
    # A driver reads until the buffer holds NeedMore.total bytes; over records of
    # 50 bytes that takes about two steps a record, and never overshoots the hello.
    hello = records(handshake_of(real_hello(LOCAL_ID, ["h2"])), 50)
    have = 0
    for _step in range(100):
        result = parse_client_hello(hello[:have])
        if not isinstance(result, NeedMore):
            break
        assert result.total > have
        have = result.total
    assert result == ClientHello(LOCAL_ID, (b"h2",))
    assert have == len(hello)


@pytest.mark.parametrize("size", [1, 2, 3, 4, 7, 100, 511])
def test_hello_split_over_records(size: int) -> None:
    hello = real_hello(LOCAL_ID, ["transport.l5d.io/v1"])
    split = records(handshake_of(hello), size)
    assert parse_client_hello(split) == ClientHello(LOCAL_ID, (TRANSPORT_ALPN,))
    step = 1 if size > 50 else 13  # every byte where records are big, a sample else
    for i in range(0, len(split), step):
        assert isinstance(parse_client_hello(split[:i]), NeedMore), i


def test_a_record_of_another_type_between_fragments_is_not_tls() -> None:
    split = records(handshake_of(real_hello(LOCAL_ID)), 100)
    broken = split[:105] + b"\x17" + split[106:]
    assert parse_client_hello(broken) is NOT_TLS


def test_hello_larger_than_the_buffer_is_not_tls() -> None:
    padding = ext(21, bytes(MAX_CLIENT_HELLO_LEN))
    hello = built(sni_ext(b"a.example") + padding)
    assert parse_client_hello(hello) is NOT_TLS
    # Decided from the handshake header alone, before the body is read.
    assert parse_client_hello(hello[:9]) is NOT_TLS
    assert parse_client_hello(hello, max_len=len(hello)) == ClientHello("a.example")


def test_built_hello_matches_the_parser() -> None:
    hello = built(sni_ext(b"a.example") + ext(5, b"\x01\x00") + alpn_ext(b"h2", b"x"))
    assert parse_client_hello(hello) == ClientHello("a.example", (b"h2", b"x"))
    # TLS 1.2 permits a hello with no extensions block at all.
    assert parse_client_hello(built(None)) == ClientHello(None, ())
    assert parse_client_hello(built(b"")) == ClientHello(None, ())


@pytest.mark.parametrize(
    "data",
    [
        b"G",
        b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"\x16\x02",
        b"\x16\x03\x00",
        b"\x16\x03\x02",
        b"\x16\x03\x01\x00\x00",  # an empty record
        b"\x16\x03\x01\x40\x01",  # longer than 2^14
        b"\x15\x03\x03\x00\x02\x02\x28",  # an alert
        b"\x16\x03\x03\x00\x04\x02\x00\x00\x00",  # a ServerHello
    ],
)
def test_not_tls(data: bytes) -> None:
    assert parse_client_hello(data) is NOT_TLS


@pytest.mark.parametrize(
    ("hello", "why"),
    [
        (built(b"", version=b"\x03\x01"), "TLS 1.0 hello"),
        (built(b"", session_id=bytes(33)), "session id over 32 bytes"),
        (built(b"", suites=b"\x13"), "odd cipher suite length"),
        (built(b"", suites=b""), "no cipher suites"),
        (built(b"", compression=b""), "no compression methods"),
        (built(sni_ext(b"a.example") + sni_ext(b"b.example")), "duplicate extension"),
        (built(ext(0, vec16(b""))), "empty server name list"),
        (built(ext(0, vec16(b"\x00" + vec16(b"a")) + b"x")), "trailing bytes in SNI"),
        (built(ext(16, vec16(b""))), "empty ALPN list"),
        (built(alpn_ext(b"h2", b"")), "empty ALPN name"),
        (built(ext(16, b"\x00\x05\x02h2")), "ALPN list longer than the extension"),
        (built(ext(16, vec16(b"\x05h2"))), "ALPN name longer than the list"),
    ],
)
def test_malformed_hello_is_not_tls(hello: bytes, why: str) -> None:
    assert parse_client_hello(hello) is NOT_TLS, why


def test_lengths_overrunning_their_parent_are_rejected_early() -> None:
    body = built_body(sni_ext(b"a.example"))
    # Extensions claiming more than the handshake message holds: rejected as soon
    # as the extensions length is read, without waiting for bytes that cannot come.
    head = body[: len(body) - len(sni_ext(b"a.example")) - 2]
    lying = head + b"\xff\xff" + sni_ext(b"a.example")
    message = b"\x01" + len(lying).to_bytes(3, "big") + lying
    assert parse_client_hello(records(message, 1 << 14)[: 5 + 4 + len(head) + 2]) is NOT_TLS


@pytest.mark.parametrize(
    "name",
    [b"", b"a..b", b"-a.example", b"a-.example", b"a.example.", b"10.0.0.1", b"\xff.example"],
)
def test_unusable_host_name_gives_no_sni(name: bytes) -> None:
    assert parse_client_hello(built(sni_ext(name))) == ClientHello(None)


def test_other_name_types_are_skipped() -> None:
    names = b"\x07" + vec16(b"whatever") + b"\x00" + vec16(b"a.example")
    assert parse_client_hello(built(ext(0, vec16(names)))) == ClientHello("a.example")


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_fuzz_random_bytes_never_raise(data: bytes) -> None:
    result = parse_client_hello(data)
    if isinstance(result, NeedMore):
        assert result.total > len(data)
    else:
        assert result is NOT_TLS or isinstance(result, ClientHello)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=400))
def test_fuzz_tls_framed_bytes_never_raise(body: bytes) -> None:
    # Past the record header, so the handshake parser itself is exercised.
    message = b"\x01" + len(body).to_bytes(3, "big") + body
    for data in (records(message, 1 << 14), records(message, 37)):
        result = parse_client_hello(data)
        assert isinstance(result, NeedMore | ClientHello) or result is NOT_TLS


_HELLO = real_hello(LOCAL_ID, ["transport.l5d.io/v1", "h2"])


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(_HELLO) - 1), st.integers(0, 255)), max_size=4))
def test_fuzz_mutated_hellos_never_raise(edits: list[tuple[int, int]]) -> None:
    data = bytearray(_HELLO)
    for pos, value in edits:
        data[pos] = value
    result = parse_client_hello(bytes(data))
    assert isinstance(result, NeedMore | ClientHello) or result is NOT_TLS
    if isinstance(result, ClientHello):
        # Once decided, more bytes never change the answer.
        assert parse_client_hello(bytes(data) + b"\x00" * 64) == result


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.none(), st.from_regex(r"[a-z][a-z0-9]{0,10}(\.[a-z][a-z0-9]{0,10}){0,3}", fullmatch=True)
    ),
    st.lists(st.binary(min_size=1, max_size=20), max_size=4),
)
def test_fuzz_built_hellos_round_trip(host: str | None, alpn: list[bytes]) -> None:
    extensions = b""
    if host is not None:
        extensions += sni_ext(host.encode())
    if alpn:
        extensions += alpn_ext(*alpn)
    assert parse_client_hello(built(extensions)) == ClientHello(host, tuple(alpn))
