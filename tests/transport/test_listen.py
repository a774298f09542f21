"""open_listener and serve_listener over loopback."""

from __future__ import annotations

import errno
import logging
import socket
from functools import partial

import pytest
import trio
import trio.testing

from linkerd_proxy.addrs import SocketAddr
from linkerd_proxy.transport.listen import TcpListener, open_listener, serve_listener
from linkerd_proxy.transport.orig_dst import local_addr_as_orig_dst, peer_addr

LOCAL = SocketAddr.parse("127.0.0.1:0")


async def tcp_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    async with listener:
        port = listener.socket.getsockname()[1]
        client = await trio.open_tcp_stream("127.0.0.1", port)
        server = await listener.accept()
    return client, server


async def read_all(stream: trio.abc.ReceiveStream) -> bytes:
    data = bytearray()
    for _ in range(10_000):
        chunk = await stream.receive_some(65536)
        if not chunk:
            return bytes(data)
        data += chunk
    raise AssertionError("read_all: too much data")


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


async def _connect(listener: TcpListener) -> trio.SocketStream:
    return await trio.open_tcp_stream(str(listener.local_addr.ip), listener.local_addr.port)


async def test_accepted_sockets_get_the_options() -> None:
    listener = await open_listener(LOCAL, backlog=16, keepalive=11, user_timeout=2.5)
    assert listener.local_addr.port != 0
    async with listener, await _connect(listener) as client, await listener.accept() as conn:
        sock = conn.socket
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 11
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 2500
        assert peer_addr(conn) == SocketAddr.from_sockaddr(client.socket.getsockname())
        assert local_addr_as_orig_dst(conn) == listener.local_addr


async def test_reuse_port_allows_a_second_listener() -> None:
    first = await open_listener(LOCAL, reuse_port=True)
    async with first:
        again = SocketAddr.parse(f"127.0.0.1:{first.local_addr.port}")
        second = await open_listener(again, reuse_port=True)
        await second.aclose()
        with pytest.raises(OSError) as info:
            await open_listener(again)
        assert info.value.errno == errno.EADDRINUSE


@pytest.mark.skipif(not _has_ipv6(), reason="no IPv6 loopback")
async def test_ipv6_wildcard_dual_stack_unmaps_v4_peers() -> None:
    listener = await open_listener(SocketAddr.parse("[::]:0"), v6only=False)
    async with listener:
        port = listener.local_addr.port
        async with await trio.open_tcp_stream("127.0.0.1", port), await listener.accept() as c:
            assert peer_addr(c).ip.version == 4
            assert str(local_addr_as_orig_dst(c)) == f"127.0.0.1:{port}"
    only6 = await open_listener(SocketAddr.parse("[::]:0"), v6only=True)
    async with only6:
        with pytest.raises(OSError):
            await trio.open_tcp_stream("127.0.0.1", only6.local_addr.port)


async def echo(stream: trio.SocketStream) -> None:
    await stream.send_all(await read_all(stream))


async def test_serve_runs_each_connection_and_isolates_failures(
    caplog: pytest.LogCaptureFixture,
) -> None:
    listener = await open_listener(LOCAL)
    seen: list[str] = []

    async def handler(stream: trio.SocketStream) -> None:
        first = await stream.receive_some(10)
        seen.append(first.decode())
        if first == b"boom":
            raise RuntimeError("handler exploded")
        await stream.send_all(first)
        await stream.send_all(await read_all(stream))

    with trio.fail_after(5), caplog.at_level(logging.ERROR):
        async with trio.open_nursery() as handlers:
            await handlers.start(
                partial(serve_listener, listener, handler, handler_nursery=handlers)
            )
            async with await _connect(listener) as bad:
                await bad.send_all(b"boom")
                # The failing handler's stream is closed, not leaked.
                assert await read_all(bad) == b""
            async with await _connect(listener) as good:
                await good.send_all(b"hello")
                await good.send_eof()
                assert await read_all(good) == b"hello"
            handlers.cancel_scope.cancel()
    assert seen == ["boom", "hello"]
    assert any("handler exploded" in (r.exc_text or "") for r in caplog.records)


async def test_stopping_the_accept_loop_keeps_connections_and_closes_listener() -> None:
    listener = await open_listener(LOCAL)
    addr = listener.local_addr
    in_flight = trio.Event()

    async def handler(stream: trio.SocketStream) -> None:
        in_flight.set()
        await echo(stream)

    with trio.fail_after(5):
        async with trio.open_nursery() as handlers:
            async with trio.open_nursery() as accept:
                await accept.start(
                    partial(serve_listener, listener, handler, handler_nursery=handlers)
                )
                client = await _connect(listener)
                await in_flight.wait()
                accept.cancel_scope.cancel()  # "stop accepting"
            with pytest.raises(OSError):
                await trio.open_tcp_stream(str(addr.ip), addr.port)
            # The connection accepted before the stop still works.
            async with client:
                await client.send_all(b"still here")
                await client.send_eof()
                assert await read_all(client) == b"still here"


class FlakyListener(trio.abc.Listener[trio.SocketStream]):
    """Raises the given errors from accept, then hands out real streams."""

    def __init__(self, errors: list[OSError], streams: list[trio.SocketStream]) -> None:
        self.errors = errors
        self.streams = streams
        self.closed = False

    async def accept(self) -> trio.SocketStream:
        await trio.lowlevel.checkpoint()
        if self.errors:
            raise self.errors.pop(0)
        if self.streams:
            return self.streams.pop(0)
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        self.closed = True
        await trio.lowlevel.checkpoint()


async def test_capacity_errors_back_off_and_continue(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    client, server = await tcp_pair()
    listener = FlakyListener(
        [OSError(errno.EMFILE, "too many"), OSError(errno.ENOBUFS, "no buffers")], [server]
    )
    handled: list[float] = []

    async def handler(stream: trio.SocketStream) -> None:
        handled.append(trio.current_time())

    start = trio.current_time()
    with caplog.at_level(logging.ERROR):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(serve_listener, listener, handler, handler_nursery=nursery))
            await trio.sleep(1)
            nursery.cancel_scope.cancel()
    await client.aclose()
    assert [round(t - start, 3) for t in handled] == [0.2]
    assert (
        sum("EMFILE" in r.getMessage() or "ENOBUFS" in r.getMessage() for r in caplog.records) == 2
    )
    assert listener.closed


async def test_other_accept_errors_propagate() -> None:
    listener = FlakyListener([OSError(errno.EINVAL, "bad")], [])

    async def handler(stream: trio.SocketStream) -> None:
        raise AssertionError("no connection expected")

    async with trio.open_nursery() as nursery:
        with pytest.raises(OSError) as info:
            await serve_listener(listener, handler, handler_nursery=nursery)
    assert info.value.errno == errno.EINVAL
    assert listener.closed


async def test_returns_when_the_listener_is_closed_elsewhere() -> None:
    listener = await open_listener(LOCAL)

    async def handler(stream: trio.SocketStream) -> None:
        pass

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(serve_listener, listener, handler, handler_nursery=nursery))
            await listener.aclose()
