"""Tests for linkerd_proxy.http.detect (pure) and linkerd_proxy.transport.detect_io."""

from __future__ import annotations

import ast
import pathlib

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from linkerd_proxy.http import detect as detect_mod
from linkerd_proxy.http.detect import H2_PREFACE, Detected, detect
from linkerd_proxy.transport.detect_io import detect_protocol, detect_protocol_outcome

HTTP11_LINE = b"GET / HTTP/1.1\r\n"
REQ = b"GET /foo/bar/bar/blah HTTP/1.1\r\nHost: foob.example.com\r\n\r\n"


def test_h2_preface() -> None:
    assert detect(H2_PREFACE) is Detected.H2
    assert detect(H2_PREFACE + b"garbage") is Detected.H2
    # The reference decides on the first 14 bytes.
    assert detect(b"PRI * HTTP/2.0") is Detected.H2
    for i in range(1, 14):
        assert detect(H2_PREFACE[:i]) is Detected.NEED_MORE, i
        assert detect(H2_PREFACE[:i], final=True) is Detected.NOT_HTTP, i


def test_http1_complete_lines() -> None:
    assert detect(HTTP11_LINE) is Detected.HTTP1
    assert detect(b"GET / HTTP/1.0\n") is Detected.HTTP1
    assert detect(b"\r\n\nPOST /x HTTP/1.1\r\n") is Detected.HTTP1
    assert detect(b"CONNECT example.com:443 HTTP/1.1\r\n") is Detected.HTTP1
    assert detect(b"GET http://a.b/c?d=%20 HTTP/1.1\r\nHost: a\r\n") is Detected.HTTP1
    assert detect(b"get /\xff<> HTTP/1.1\r\n") is Detected.HTTP1


def test_reference_single_read_rule() -> None:
    # Shorter than "GET / HTTP/1.1": not HTTP once no more bytes will come.
    for i in range(1, len(b"GET / HTTP/1.1")):
        assert detect(HTTP11_LINE[:i]) is Detected.NEED_MORE
        assert detect(HTTP11_LINE[:i], final=True) is Detected.NOT_HTTP
    # A valid unfinished line of >= 14 bytes is HTTP/1 (POST starts like PRI).
    for line in (REQ, b"POST /foo HTTP/1.1\r\n"):
        for i in range(14, len(line)):
            assert detect(line[:i], final=True) is Detected.HTTP1, line[:i]


@pytest.mark.parametrize(
    "data",
    [
        b"foo.bar.blah\r\nbobo",
        b"garbage garbage garbage garbage garbage",
        b"GET / HTTP/2.0\r\n",
        b"GET / HTTP/1.2\r\n",
        b"GET  / HTTP/1.1\r\n",
        b"GET / HTTP/1.1\r\r\n",
        b"GET / HTTP/1.1 \r\n",
        b"GET /a\x7fb HTTP/1.1\r\n",
        b"G(T / HTTP/1.1\r\n",
        b" GET / HTTP/1.1\r\n",
        b"GET / HTTP/1.1\r\n\rX",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"\r\r",
    ],
)
def test_not_http(data: bytes) -> None:
    assert detect(data) is Detected.NOT_HTTP
    assert detect(data, final=True) is Detected.NOT_HTTP


def test_detect_is_pure() -> None:
    tree = ast.parse(pathlib.Path(detect_mod.__file__).read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not any(name.split(".")[0] == "trio" for name in names)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64), st.booleans())
def test_never_crashes(data: bytes, final: bool) -> None:
    result = detect(data, final=final)
    assert isinstance(result, Detected)
    if final:
        assert result is not Detected.NEED_MORE


TOKEN = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcxyz0123456789!#$%&'*+-.^_`|~", min_size=1)
TARGET = st.binary(min_size=1, max_size=40).map(
    lambda b: bytes(c if 0x21 <= c <= 0x7E and c not in b"<>" else 0x2F for c in b)
)


@st.composite
def request_lines(draw: st.DrawFn) -> bytes:
    method = draw(TOKEN).encode()
    target = draw(TARGET)
    version = draw(st.sampled_from([b"HTTP/1.0", b"HTTP/1.1"]))
    eol = draw(st.sampled_from([b"\r\n", b"\n"]))
    headers = draw(st.sampled_from([b"", b"Host: x\r\n", b"\r\n"]))
    return method + b" " + target + b" " + version + eol + headers


@settings(max_examples=300, deadline=None)
@given(request_lines(), st.data())
def test_every_split_of_a_request_line_is_http1(line: bytes, data: st.DataObject) -> None:
    assert detect(line) is Detected.HTTP1
    cut = data.draw(st.integers(0, len(line)))
    head = line[:cut]
    got = detect(head)
    # A prefix never gives a wrong answer: it asks for more, or says HTTP/1.
    assert got in (Detected.NEED_MORE, Detected.HTTP1)


@settings(max_examples=100, deadline=None)
@given(request_lines(), st.lists(st.integers(1, 8), min_size=1, max_size=10))
async def test_detect_io_every_split(line: bytes, sizes: list[int]) -> None:
    send, recv = trio.testing.memory_stream_pair()
    pos = 0
    for size in sizes:
        await send.send_all(line[pos : pos + size])
        pos += size
    await send.send_all(line[pos:])
    with trio.fail_after(5):
        detected, buffered = await detect_protocol(recv, timeout=5)
    assert detected is Detected.HTTP1
    assert line.startswith(buffered)


async def test_detect_io_over_loopback_split_request() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:

        async def client() -> None:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            stream.setsockopt(trio.socket.IPPROTO_TCP, trio.socket.TCP_NODELAY, 1)
            await stream.send_all(b"GET / HT")
            await trio.sleep(0.05)
            await stream.send_all(b"TP/1.1\r\nHost: a\r\n\r\n")
            await stream.aclose()

        nursery.start_soon(client)
        server = await listeners[0].accept()
        with trio.fail_after(5):
            detected, buffered = await detect_protocol(server, timeout=5)
        assert detected is Detected.HTTP1
        assert buffered.startswith(b"GET / HTTP/1.1\r\n")
        await server.aclose()
    await listeners[0].aclose()


async def test_detect_io_h2_and_replay() -> None:
    send, recv = trio.testing.memory_stream_pair()
    await send.send_all(H2_PREFACE + b"\x00\x00\x00\x04")
    detected, buffered = await detect_protocol(recv, timeout=1)
    assert detected is Detected.H2
    assert buffered.startswith(H2_PREFACE)


async def test_detect_io_timeout_nothing_read(autojump_clock: trio.testing.MockClock) -> None:
    _send, recv = trio.testing.memory_stream_pair()
    start = trio.current_time()
    outcome = await detect_protocol_outcome(recv, timeout=10)
    assert outcome.detected is Detected.NOT_HTTP
    assert outcome.buffered == b""
    assert outcome.timed_out and not outcome.eof
    assert trio.current_time() - start == pytest.approx(10)


async def test_detect_io_timeout_with_partial(autojump_clock: trio.testing.MockClock) -> None:
    send, recv = trio.testing.memory_stream_pair()
    await send.send_all(b"GET / H")
    detected, buffered = await detect_protocol(recv, timeout=10)
    assert (detected, buffered) == (Detected.NOT_HTTP, b"GET / H")
    # >= 14 bytes of a valid, unfinished line: the reference says HTTP/1.
    send, recv = trio.testing.memory_stream_pair()
    await send.send_all(b"GET /foo/bar/baz")
    outcome = await detect_protocol_outcome(recv, timeout=10)
    assert outcome.detected is Detected.HTTP1 and outcome.timed_out


async def test_detect_io_server_speaks_first_client_waits() -> None:
    # A non-HTTP protocol is decided on its first bytes, without waiting.
    send, recv = trio.testing.memory_stream_pair()
    await send.send_all(b"\x16\x03\x01")
    with trio.fail_after(1):
        detected, buffered = await detect_protocol(recv, timeout=100)
    assert (detected, buffered) == (Detected.NOT_HTTP, b"\x16\x03\x01")


async def test_detect_io_eof() -> None:
    send, recv = trio.testing.memory_stream_pair()
    await send.send_all(b"GET")
    await send.aclose()
    outcome = await detect_protocol_outcome(recv, timeout=1)
    assert outcome.detected is Detected.NOT_HTTP and outcome.eof
    assert outcome.buffered == b"GET"
    send, recv = trio.testing.memory_stream_pair()
    await send.aclose()
    assert await detect_protocol(recv, timeout=1) == (Detected.NOT_HTTP, b"")


async def test_detect_io_capacity_bound() -> None:
    send, recv = trio.testing.memory_stream_pair()
    long_line = b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\n"
    await send.send_all(long_line)
    detected, buffered = await detect_protocol(recv, timeout=1, capacity=1024)
    # Capacity reached mid-target: the single-read rule says HTTP/1.
    assert detected is Detected.HTTP1
    assert buffered == long_line[:1024]
    rest = await recv.receive_some(10_000)
    assert buffered + rest == long_line[: len(buffered) + len(rest)]
