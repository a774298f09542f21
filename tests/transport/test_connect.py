"""connect and connect_with_backoff against loopback listeners."""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterator

import pytest
import trio
import trio.testing

from linkerd_proxy.addrs import SocketAddr
from linkerd_proxy.errors import ConnectError, ConnectTimeout
from linkerd_proxy.transport.backoff import ExponentialBackoff
from linkerd_proxy.transport.connect import connect, connect_with_backoff


@pytest.fixture
def refusing() -> Iterator[tuple[socket.socket, SocketAddr]]:
    """A bound but not listening port: connects get ECONNREFUSED."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s, SocketAddr.parse(f"127.0.0.1:{s.getsockname()[1]}")


@pytest.fixture
def blackhole() -> Iterator[SocketAddr]:
    """A listener whose accept queue is full: the kernel drops further SYNs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(3):
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(("127.0.0.1", port))
        fillers.append(c)
    try:
        yield SocketAddr.parse(f"127.0.0.1:{port}")
    finally:
        for c in fillers:
            c.close()
        listener.close()


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_connects_with_options_and_carries_bytes() -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    async with listener:
        addr = SocketAddr.from_sockaddr(listener.socket.getsockname())
        stream = await connect(addr, timeout=5, keepalive=7, user_timeout=3)
        async with stream, await listener.accept() as server:
            sock = stream.socket
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 7
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 3000
            await stream.send_all(b"ping")
            assert await server.receive_some(4) == b"ping"


async def test_refused_maps_to_connect_error_with_errno(
    refusing: tuple[socket.socket, SocketAddr],
) -> None:
    _, addr = refusing
    before = _fds()
    with pytest.raises(ConnectError) as info:
        await connect(addr, timeout=5)
    assert not isinstance(info.value, ConnectTimeout)
    assert info.value.errno == errno.ECONNREFUSED
    assert info.value.addr == addr
    assert str(addr) in str(info.value)
    assert "ECONNREFUSED" in str(info.value)
    assert _fds() == before


async def test_timeout_maps_to_connect_timeout(
    blackhole: SocketAddr, autojump_clock: trio.testing.MockClock
) -> None:
    before = _fds()
    start = trio.current_time()
    with pytest.raises(ConnectTimeout) as info:
        await connect(blackhole, timeout=1.5)
    assert trio.current_time() - start == pytest.approx(1.5)
    assert info.value.errno is None
    assert info.value.addr == blackhole
    assert _fds() == before


async def test_cancellation_closes_the_half_open_socket(
    blackhole: SocketAddr, autojump_clock: trio.testing.MockClock
) -> None:
    before = _fds()
    with trio.move_on_after(0.5) as scope:
        await connect(blackhole, timeout=10)
    assert scope.cancelled_caught
    assert _fds() == before


async def test_backoff_gives_up_after_the_attempt_budget(
    refusing: tuple[socket.socket, SocketAddr], autojump_clock: trio.testing.MockClock
) -> None:
    _, addr = refusing
    start = trio.current_time()
    with pytest.raises(ConnectError) as info:
        await connect_with_backoff(
            addr, timeout=1, backoff=ExponentialBackoff(1, 10, 0), attempts=3
        )
    assert info.value.errno == errno.ECONNREFUSED
    # Two sleeps between three attempts: 1 s then 2 s.
    assert trio.current_time() - start == pytest.approx(3.0)


async def test_backoff_succeeds_once_the_endpoint_listens_and_resets(
    refusing: tuple[socket.socket, SocketAddr], autojump_clock: trio.testing.MockClock
) -> None:
    sock, addr = refusing
    series = ExponentialBackoff(1, 10, 0).series()

    async def listen_later() -> None:
        await trio.sleep(2.5)
        sock.listen(8)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(listen_later)
        start = trio.current_time()
        stream = await connect_with_backoff(addr, timeout=1, backoff=series, attempts=None)
        await stream.aclose()
    # Attempts at 0 s, 1 s, 3 s; the third finds the listener.
    assert trio.current_time() - start == pytest.approx(3.0)
    assert series.attempts == 0


async def test_backoff_rejects_a_zero_budget(refusing: tuple[socket.socket, SocketAddr]) -> None:
    with pytest.raises(ValueError):
        await connect_with_backoff(
            refusing[1], timeout=1, backoff=ExponentialBackoff(1, 2), attempts=0
        )
