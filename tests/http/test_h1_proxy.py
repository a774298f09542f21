"""End-to-end HTTP/1 proxying over loopback: raw client -> serve_h1(H1Pool) -> raw backend.

Checks what each side sees, byte for byte where framing is deterministic.
"""

from __future__ import annotations

import shutil
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import attrs
import pytest
import trio

from linkerd_proxy.app.shutdown import Shutdown
from linkerd_proxy.http.h1.pool import H1Pool
from linkerd_proxy.http.h1.server import H1ServerSettings, serve_h1

Script = Callable[[trio.SocketStream, "Backend"], Awaitable[None]]


async def read_head(stream: trio.abc.ReceiveStream, buf: bytearray) -> bytes:
    """Read up to the end of a head (CRLF CRLF); extra bytes stay in ``buf``."""
    for _ in range(1000):
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            head = bytes(buf[: end + 4])
            del buf[: end + 4]
            return head
        data = await stream.receive_some(65536)
        if not data:
            raise EOFError(bytes(buf))
        buf += data
    raise AssertionError("head too long")


async def read_exactly(stream: trio.abc.ReceiveStream, buf: bytearray, n: int) -> bytes:
    for _ in range(100000):
        if len(buf) >= n:
            out = bytes(buf[:n])
            del buf[:n]
            return out
        data = await stream.receive_some(65536)
        if not data:
            raise EOFError(bytes(buf))
        buf += data
    raise AssertionError("too many reads")


async def read_until(stream: trio.abc.ReceiveStream, buf: bytearray, marker: bytes) -> bytes:
    for _ in range(100000):
        end = buf.find(marker)
        if end >= 0:
            out = bytes(buf[: end + len(marker)])
            del buf[: end + len(marker)]
            return out
        data = await stream.receive_some(65536)
        if not data:
            raise EOFError(bytes(buf))
        buf += data
    raise AssertionError("too many reads")


async def read_to_eof(stream: trio.abc.ReceiveStream, buf: bytearray) -> bytes:
    for _ in range(100000):
        data = await stream.receive_some(65536)
        if not data:
            out = bytes(buf)
            buf.clear()
            return out
        buf += data
    raise AssertionError("too many reads")


async def read_chunked(stream: trio.abc.ReceiveStream, buf: bytearray) -> bytes:
    """A whole chunked body (with trailers), left encoded."""
    out = b""
    for _ in range(100000):
        line = await read_until(stream, buf, b"\r\n")
        out += line
        size = int(line.split(b";")[0], 16)
        if size == 0:
            for _ in range(100):
                trailer = await read_until(stream, buf, b"\r\n")
                out += trailer
                if trailer == b"\r\n":
                    return out
        out += await read_exactly(stream, buf, size + 2)
    raise AssertionError("too many chunks")


@attrs.define
class Backend:
    """A raw-socket backend: ``script`` runs per accepted connection."""

    script: Script
    port: int = 0
    connections: int = 0
    received: list[bytes] = attrs.Factory(list)
    closed: trio.Event = attrs.Factory(trio.Event)


async def request_response(
    stream: trio.SocketStream, backend: Backend, responses: list[bytes], *, close: bool = False
) -> None:
    """Answer one request per entry of ``responses`` (heads with CL or chunked bodies)."""
    buf = bytearray()
    for response in responses:
        try:
            head = await read_head(stream, buf)
        except EOFError:
            return
        body = b""
        lower = head.lower()
        if b"content-length:" in lower:
            n = int(lower.split(b"content-length:")[1].split(b"\r\n")[0])
            body = await read_exactly(stream, buf, n)
        elif b"transfer-encoding: chunked" in lower:
            body = await read_chunked(stream, buf)
        backend.received.append(head + body)
        await stream.send_all(response)
    if close:
        await stream.aclose()
        backend.closed.set()
        return
    await read_to_eof(stream, buf)


@asynccontextmanager
async def proxy_to(
    script: Script,
    settings: H1ServerSettings | None = None,
    drain: Shutdown | None = None,
) -> AsyncIterator[tuple[int, Backend, H1Pool]]:
    backend = Backend(script)

    async def backend_handler(stream: trio.SocketStream) -> None:
        backend.connections += 1
        async with stream:
            await script(stream, backend)

    async with trio.open_nursery() as nursery:
        (blistener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
        backend.port = blistener.socket.getsockname()[1]
        nursery.start_soon(trio.serve_listeners, backend_handler, [blistener])

        async def connect() -> trio.abc.Stream:
            return await trio.open_tcp_stream("127.0.0.1", backend.port)

        pool = H1Pool(connect, max_idle=10, idle_timeout=60.0, background=nursery)

        async def proxy_handler(stream: trio.SocketStream) -> None:
            await serve_h1(stream, pool, settings=settings, drain=drain)

        (plistener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = plistener.socket.getsockname()[1]
        nursery.start_soon(trio.serve_listeners, proxy_handler, [plistener])
        try:
            with trio.fail_after(5):
                yield port, backend, pool
        finally:
            await pool.aclose()
            nursery.cancel_scope.cancel()


def answer(*responses: bytes, close: bool = False) -> Script:
    async def script(stream: trio.SocketStream, backend: Backend) -> None:
        await request_response(stream, backend, list(responses), close=close)

    return script


OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi"


async def test_get_keep_alive_reuses_both_connections() -> None:
    async with proxy_to(answer(OK, OK)) as (port, backend, _pool):
        client = await trio.open_tcp_stream("127.0.0.1", port)
        buf = bytearray()
        for path in (b"/a", b"/b"):
            await client.send_all(b"GET %s HTTP/1.1\r\nHost: example.com\r\nX-A: 1\r\n\r\n" % path)
            assert await read_exactly(client, buf, len(OK)) == OK
        assert backend.received == [
            b"GET /a HTTP/1.1\r\nhost: example.com\r\nx-a: 1\r\n\r\n",
            b"GET /b HTTP/1.1\r\nhost: example.com\r\nx-a: 1\r\n\r\n",
        ]
        assert backend.connections == 1


async def test_empty_and_buffered_bodies_keep_the_upstream_connection() -> None:
    # A body that arrives whole with its head (empty, or small) is handed over in
    # memory and the upstream connection goes back to the pool: Content-Length: 0
    # must not cost a reconnect per request.
    empty = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
    big = b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n" + b"x" * 100_000
    async with proxy_to(answer(empty, OK, empty, big, OK)) as (port, backend, _pool):
        client = await trio.open_tcp_stream("127.0.0.1", port)
        buf = bytearray()
        for expected in (empty, OK, empty, big, OK):
            await client.send_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            assert await read_exactly(client, buf, len(expected)) == expected
        assert backend.connections == 1


async def test_post_chunked_request_and_trailers() -> None:
    response = (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\ngrpc-status: 0\r\n\r\n"
    )
    async with proxy_to(answer(response, response)) as (port, backend, _pool):
        client = await trio.open_tcp_stream("127.0.0.1", port)
        buf = bytearray()
        await client.send_all(
            b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTE: trailers\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\nx-sum: 1\r\n\r\n"
        )
        got = await read_head(client, buf)
        got += await read_chunked(client, buf)
        assert got == (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\ngrpc-status: 0\r\n\r\n"
        )
        head, _, body = backend.received[0].partition(b"\r\n\r\n")
        assert head == b"POST /up HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked"
        assert body.endswith(b"0\r\nx-sum: 1\r\n\r\n")
        assert b"hello" in body and b"world" in body
        # Without TE: trailers, the response's trailers are dropped.
        await client.send_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        got = await read_head(client, buf)
        got += await read_chunked(client, buf)
        assert got.endswith(b"3\r\nabc\r\n0\r\n\r\n")
        assert b"grpc-status" not in got


async def test_large_download_streams_with_bounded_memory() -> None:
    size = 10 * 1024 * 1024
    block = b"x" * 65536

    async def script(stream: trio.SocketStream, backend: Backend) -> None:
        buf = bytearray()
        await read_head(stream, buf)
        await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % size)
        for _ in range(size // len(block)):
            await stream.send_all(block)
        await read_to_eof(stream, buf)

    async with proxy_to(script) as (port, _backend, _pool):
        client = await trio.open_tcp_stream("127.0.0.1", port)
        tracemalloc.start()
        try:
            await client.send_all(b"GET /big HTTP/1.1\r\nHost: h\r\n\r\n")
            buf = bytearray()
            head = await read_head(client, buf)
            assert b"content-length: %d" % size in head
            total = len(buf)
            buf.clear()
            while total < size:
                data = await client.receive_some(65536)
                assert data
                total += len(data)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert total == size
        assert peak < 2 * 1024 * 1024, peak


async def test_http10_with_and_without_host() -> None:
    r10 = b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nhi"
    async with proxy_to(answer(r10)) as (port, backend, _pool):
        for req, seen in [
            (b"GET /x HTTP/1.0\r\nHost: h\r\n\r\n", b"GET /x HTTP/1.0\r\nhost: h\r\n\r\n"),
            (b"GET /y HTTP/1.0\r\n\r\n", b"GET /y HTTP/1.0\r\n\r\n"),
        ]:
            client = await trio.open_tcp_stream("127.0.0.1", port)
            await client.send_all(req)
            got = await read_to_eof(client, bytearray())
            assert got == b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nhi"
            assert backend.received[-1] == seen


async def test_http10_client_gets_close_delimited_body() -> None:
    eof_rsp = b"HTTP/1.1 200 OK\r\n\r\nuntil the end"
    async with proxy_to(answer(eof_rsp, close=True)) as (port, _backend, _pool):
        client = await trio.open_tcp_stream("127.0.0.1", port)
        await client.send_all(b"GET / HTTP/1.0\r\nHost: h\r\n\r\n")
        assert await read_to_eof(client, bytearray()) == b"HTTP/1.0 200 OK\r\n\r\nuntil the end"


async def test_close_delimited_response_is_chunked_for_http11() -> None:
    eof_rsp = b"HTTP/1.1 200 OK\r\n\r\nuntil the end"
    async with proxy_to(answer(eof_rsp, close=True)) as (port, _backend, _pool):
        client = await trio.open_tcp_stream("127.0.0.1", port)
        await client.send_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        got = await read_until(client, bytearray(), b"0\r\n\r\n")
        assert got == (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nd\r\nuntil the end\r\n0\r\n\r\n"
        )


async def test_absolute_form_is_forwarded_as_absolute_form() -> None:
    async with proxy_to(answer(OK)) as (port, backend, _pool):
        client = await trio.open_tcp_stream("127.0.0.1", port)
        await client.send_all(b"GET http://example.com/p?q=1 HTTP/1.1\r\nHost: example.com\r\n\r\n")
        assert await read_exactly(client, bytearray(), len(OK)) == OK
        assert backend.received == [
            b"GET http://example.com/p?q=1 HTTP/1.1\r\nhost: example.com\r\n\r\n"
        ]


async def test_head_204_304_have_no_body_and_keep_the_connection() -> None:
    responses = [
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\ncontent-length: 7\r\n\r\n",
        OK,
    ]
    async with proxy_to(answer(*responses)) as (port, backend, _pool):
        client = await trio.open_tcp_stream("127.0.0.1", port)
        buf = bytearray()
        await client.send_all(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n")
        assert await read_head(client, buf) == responses[0]
        await client.send_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        assert await read_head(client, buf) == b"HTTP/1.1 204 No Content\r\n\r\n"
        await client.send_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        assert await read_head(client, buf) == responses[2]
        await client.send_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        assert await read_exactly(client, buf, len(OK)) == OK
        assert backend.connections == 1
        assert len(backend.received) == 4


async def test_hop_by_hop_headers_are_stripped_both_ways() -> None:
    response = (
        b"HTTP/1.1 200 OK\r\nConnection: x-bar\r\nX-Bar: 1\r\nKeep-Alive: timeout=5\r\n"
        b"Proxy-Connection: keep-alive\r\nX-Kept: yes\r\ncontent-length: 0\r\n\r\n"
    )
    async with proxy_to(answer(response)) as (port, backend, _pool):
        client = await trio.open_tcp_stream("127.0.0.1", port)
        await client.send_all(
            b"GET / HTTP/1.1\r\nHost: h\r\nConnection: x-foo, keep-alive\r\nX-Foo: 1\r\n"
            b"Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\n"
            b"Trailer: x-t\r\nUpgrade: foo\r\nX-Kept: yes\r\n\r\n"
        )
        got = await read_head(client, bytearray())
        assert got == b"HTTP/1.1 200 OK\r\nx-kept: yes\r\ncontent-length: 0\r\n\r\n"
        assert backend.received == [b"GET / HTTP/1.1\r\nhost: h\r\nx-kept: yes\r\n\r\n"]


async def test_pipelined_requests_are_answered_in_order() -> None:
    r1 = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\none"
    r2 = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\ntwo"
    async with proxy_to(answer(r1, r2)) as (port, backend, _pool):
        client = await trio.open_tcp_stream("127.0.0.1", port)
        await client.send_all(
            b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nPOST /2 HTTP/1.1\r\nHost: h\r\n"
            b"Content-Length: 3\r\n\r\nabc"
        )
        assert await read_exactly(client, bytearray(), len(r1) + len(r2)) == r1 + r2
        assert backend.received == [
            b"GET /1 HTTP/1.1\r\nhost: h\r\n\r\n",
            b"POST /2 HTTP/1.1\r\nhost: h\r\ncontent-length: 3\r\n\r\nabc",
        ]


async def test_pooled_connection_closed_while_idle_is_not_an_error() -> None:
    async def script(stream: trio.SocketStream, backend: Backend) -> None:
        # Every connection answers one request and closes (without saying so).
        await request_response(stream, backend, [OK], close=True)

    async with proxy_to(script) as (port, backend, pool):
        client = await trio.open_tcp_stream("127.0.0.1", port)
        buf = bytearray()
        for _ in range(3):
            await client.send_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            assert await read_exactly(client, buf, len(OK)) == OK
            await backend.closed.wait()
            backend.closed = trio.Event()
            await trio.sleep(0.01)  # let the FIN reach the proxy's socket
        assert backend.connections == 3
        assert pool.connects == 3


async def test_reused_connection_closed_after_request_is_retried() -> None:
    async def script(stream: trio.SocketStream, backend: Backend) -> None:
        if backend.connections == 1:
            # Answer once, then read the next request and close without answering:
            # the race where the server closes an idle connection as it is reused.
            buf = bytearray()
            await read_head(stream, buf)
            await stream.send_all(OK)
            await read_head(stream, buf)
            return
        await request_response(stream, backend, [OK])

    async with proxy_to(script) as (port, backend, _pool):
        client = await trio.open_tcp_stream("127.0.0.1", port)
        buf = bytearray()
        for _ in range(2):
            await client.send_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            assert await read_exactly(client, buf, len(OK)) == OK
        assert backend.connections == 2


async def test_oversized_head_gets_431_and_close() -> None:
    settings = H1ServerSettings(max_head_bytes=1024)
    async with proxy_to(answer(OK), settings) as (port, backend, _pool):
        client = await trio.open_tcp_stream("127.0.0.1", port)
        await client.send_all(b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"a" * 2000 + b"\r\n\r\n")
        got = await read_to_eof(client, bytearray())
        assert got.startswith(b"HTTP/1.1 431 ")
        assert b"connection: close" in got
        assert backend.received == []


SMUGGLING = [
    b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"0\r\n\r\nGET /evil HTTP/1.1\r\nHost: h\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 3\r\n\r\n"
    b"abc",
    b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n  folded\r\n\r\n",
    b"GET / HTTP/1.1\nHost: h\n\n",
    b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"fffffffffffffffff1\r\nabc\r\n0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nHost: other\r\n\r\n",
    b"GET example.com HTTP/1.1\r\nHost: h\r\n\r\n",
    b"CONNECT /path HTTP/1.1\r\nHost: h\r\n\r\n",
    b"CONNECT h:80 HTTP/1.0\r\nHost: h\r\n\r\n",
]


@pytest.mark.parametrize("raw", SMUGGLING)
async def test_smuggling_and_bad_requests_get_400(raw: bytes) -> None:
    async with proxy_to(answer(OK, OK)) as (port, backend, _pool):
        client = await trio.open_tcp_stream("127.0.0.1", port)
        await client.send_all(raw)
        got = await read_to_eof(client, bytearray())
        assert got.startswith(b"HTTP/1.") and b" 400 " in got.split(b"\r\n")[0]
        assert backend.received == []


async def test_http10_transfer_encoding_is_safe() -> None:
    raw = b"POST / HTTP/1.0\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    async with proxy_to(answer(OK)) as (port, backend, _pool):
        client = await trio.open_tcp_stream("127.0.0.1", port)
        await client.send_all(raw)
        got = await read_to_eof(client, bytearray())
        # Either refused, or forwarded as exactly one request with a length.
        if b" 400 " not in got.split(b"\r\n")[0]:
            assert backend.received == [
                b"POST / HTTP/1.0\r\nhost: h\r\ncontent-length: 3\r\n\r\nabc"
            ]


async def test_websocket_upgrade_carries_bytes_both_ways() -> None:
    async def script(stream: trio.SocketStream, backend: Backend) -> None:
        buf = bytearray()
        head = await read_head(stream, buf)
        backend.received.append(head)
        await stream.send_all(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"\r\nserver-first"
        )
        for _ in range(10):
            data = bytes(buf) or await stream.receive_some(1024)
            buf.clear()
            if not data:
                return
            await stream.send_all(b"echo:" + data)

    async with proxy_to(script) as (port, backend, _pool):
        client = await trio.open_tcp_stream("127.0.0.1", port)
        await client.send_all(
            b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Key: k\r\n\r\nearly"
        )
        buf = bytearray()
        head = await read_head(client, buf)
        assert head == (
            b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n"
        )
        assert await read_exactly(client, buf, 12) == b"server-first"
        assert await read_exactly(client, buf, 10) == b"echo:early"
        await client.send_all(b"ping")
        assert await read_exactly(client, buf, 9) == b"echo:ping"
        assert backend.received == [
            b"GET /ws HTTP/1.1\r\nhost: h\r\nsec-websocket-key: k\r\nconnection: upgrade\r\n"
            b"upgrade: websocket\r\n\r\n"
        ]
        await client.aclose()


async def test_connect_tunnel() -> None:
    async def script(stream: trio.SocketStream, backend: Backend) -> None:
        buf = bytearray()
        backend.received.append(await read_head(stream, buf))
        await stream.send_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        for _ in range(10):
            data = bytes(buf) or await stream.receive_some(1024)
            buf.clear()
            if not data:
                return
            await stream.send_all(data.upper())

    async with proxy_to(script) as (port, backend, _pool):
        client = await trio.open_tcp_stream("127.0.0.1", port)
        await client.send_all(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
        buf = bytearray()
        head = await read_head(client, buf)
        assert head == b"HTTP/1.1 200 Connection Established\r\n\r\n"
        await client.send_all(b"tunnel")
        assert await read_exactly(client, buf, 6) == b"TUNNEL"
        assert backend.received == [
            b"CONNECT example.com:443 HTTP/1.1\r\nhost: example.com:443\r\n\r\n"
        ]
        await client.aclose()


async def test_h2c_upgrade_is_stripped() -> None:
    async with proxy_to(answer(OK, OK)) as (port, backend, _pool):
        client = await trio.open_tcp_stream("127.0.0.1", port)
        buf = bytearray()
        await client.send_all(
            b"POST / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\nContent-Length: 2\r\n\r\nab"
            b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n"
        )
        assert await read_exactly(client, buf, 2 * len(OK)) == OK + OK
        assert backend.received == [
            b"POST / HTTP/1.1\r\nhost: h\r\ncontent-length: 2\r\n\r\nab",
            b"GET /next HTTP/1.1\r\nhost: h\r\n\r\n",
        ]


async def test_expect_continue() -> None:
    async with proxy_to(answer(OK)) as (port, backend, _pool):
        client = await trio.open_tcp_stream("127.0.0.1", port)
        buf = bytearray()
        await client.send_all(
            b"PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n"
        )
        assert await read_head(client, buf) == b"HTTP/1.1 100 Continue\r\n\r\n"
        await client.send_all(b"data")
        assert await read_exactly(client, buf, len(OK)) == OK
        assert backend.received == [
            b"PUT / HTTP/1.1\r\nhost: h\r\nexpect: 100-continue\r\ncontent-length: 4\r\n\r\ndata"
        ]


async def test_drain_closes_after_in_flight_response() -> None:
    drain = Shutdown()
    gate = trio.Event()
    seen = trio.Event()

    async def script(stream: trio.SocketStream, backend: Backend) -> None:
        buf = bytearray()
        backend.received.append(await read_head(stream, buf))
        seen.set()
        await gate.wait()
        await stream.send_all(OK)
        await read_to_eof(stream, buf)

    async with proxy_to(script, drain=drain) as (port, _backend, _pool):
        idle = await trio.open_tcp_stream("127.0.0.1", port)
        busy = await trio.open_tcp_stream("127.0.0.1", port)
        await busy.send_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        await seen.wait()
        drain.trigger("test")
        assert await read_to_eof(idle, bytearray()) == b""
        gate.set()
        got = await read_to_eof(busy, bytearray())
        assert got == b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nhi"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
async def test_curl_get_chunked_post_and_http10() -> None:
    async def script(stream: trio.SocketStream, backend: Backend) -> None:
        await request_response(stream, backend, [OK] * 3)

    async with proxy_to(script) as (port, backend, _pool):
        url = f"http://127.0.0.1:{port}/c"
        for args in (
            [url],
            [url, "-H", "Transfer-Encoding: chunked", "--data-binary", "payload"],
            ["--http1.0", url],
        ):
            result = await trio.run_process(
                ["curl", "-sS", "--max-time", "5", *args], capture_stdout=True, capture_stderr=True
            )
            assert result.stdout == b"hi", result.stderr
        heads = [r.split(b"\r\n")[0] for r in backend.received]
        assert heads == [b"GET /c HTTP/1.1", b"POST /c HTTP/1.1", b"GET /c HTTP/1.0"]
        assert b"transfer-encoding: chunked" in backend.received[1]
        assert backend.received[1].endswith(b"7\r\npayload\r\n0\r\n\r\n")
