"""proxy_streams over real loopback sockets, on each of its three copy paths."""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import trio

from linkerd_proxy.transport import duplex, sockopt, splice
from linkerd_proxy.transport.duplex import DuplexResult, error_errno, proxy_streams
from linkerd_proxy.transport.splice import HAS_SPLICE

MIB = 1024 * 1024
MODES = ["splice", "raw", "stream"]


async def tcp_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    """A connected (client, server) pair of TCP streams on 127.0.0.1."""
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    async with listener:
        port = listener.socket.getsockname()[1]
        client = await trio.open_tcp_stream("127.0.0.1", port)
        server = await listener.accept()
    return client, server


async def read_all(stream: trio.abc.ReceiveStream, limit: int = 64 << 20) -> bytes:
    """Read until EOF (bounded by ``limit`` bytes)."""
    chunks = bytearray()
    while len(chunks) <= limit:
        data = await stream.receive_some(65536)
        if not data:
            return bytes(chunks)
        chunks += data
    raise AssertionError("read_all: more data than expected")


class Passthrough(trio.abc.HalfCloseableStream):
    """A stream wrapper that hides the socket: forces the generic copy path."""

    def __init__(self, inner: trio.SocketStream) -> None:
        self.inner = inner

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return await self.inner.receive_some(max_bytes)

    async def send_eof(self) -> None:
        await self.inner.send_eof()

    async def aclose(self) -> None:
        await self.inner.aclose()


class NoHalfClose(trio.abc.Stream):
    """Like ``Passthrough`` but cannot half-close (as ``trio.SSLStream``)."""

    def __init__(self, inner: trio.SocketStream) -> None:
        self.inner = inner

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


class Rig:
    """app_client <-> [proxy_client | proxy_server] <-> app_server, all loopback."""

    def __init__(
        self,
        app_client: trio.SocketStream,
        proxy_client: trio.SocketStream,
        proxy_server: trio.SocketStream,
        app_server: trio.SocketStream,
    ) -> None:
        self.app_client = app_client
        self.proxy_client = proxy_client
        self.proxy_server = proxy_server
        self.app_server = app_server

    async def aclose(self) -> None:
        for s in (self.app_client, self.proxy_client, self.proxy_server, self.app_server):
            await trio.aclose_forcefully(s)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    app_client, proxy_client = await tcp_pair()
    proxy_server, app_server = await tcp_pair()
    r = Rig(app_client, proxy_client, proxy_server, app_server)
    try:
        yield r
    finally:
        await r.aclose()


class Counter:
    def __init__(self) -> None:
        self.total = 0
        self.calls = 0

    def __call__(self, n: int) -> None:
        assert n > 0
        self.total += n
        self.calls += 1


async def run_proxy(
    rig: Rig,
    mode: str,
    *,
    prefix: bytes = b"",
    counters: tuple[Callable[[int], None], Callable[[int], None]] | None = None,
) -> DuplexResult:
    if mode == "splice" and not HAS_SPLICE:
        pytest.skip("no os.splice here")
    on_c, on_s = counters or (Counter(), Counter())
    client: trio.abc.Stream = rig.proxy_client
    server: trio.abc.Stream = rig.proxy_server
    if mode == "stream":
        client, server = Passthrough(rig.proxy_client), Passthrough(rig.proxy_server)
    result = await proxy_streams(
        client,
        server,
        on_client_read=on_c,
        on_server_read=on_s,
        prefix=prefix,
        use_splice=mode == "splice",
    )
    assert result.spliced == (mode == "splice")
    return result


async def send_then_eof(stream: trio.SocketStream, data: bytes) -> None:
    await stream.send_all(data)
    await stream.send_eof()


@pytest.mark.parametrize("mode", MODES)
async def test_one_mib_each_way_concurrently(rig: Rig, mode: str) -> None:
    up, down = os.urandom(MIB), os.urandom(MIB)
    got: dict[str, bytes] = {}
    counters = (Counter(), Counter())
    results: list[DuplexResult] = []

    async def client() -> None:
        async with trio.open_nursery() as n:
            n.start_soon(send_then_eof, rig.app_client, up)
            got["client"] = await read_all(rig.app_client)

    async def server() -> None:
        async with trio.open_nursery() as n:
            n.start_soon(send_then_eof, rig.app_server, down)
            got["server"] = await read_all(rig.app_server)

    async def proxy() -> None:
        results.append(await run_proxy(rig, mode, counters=counters))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(proxy)
            nursery.start_soon(client)
            nursery.start_soon(server)

    assert got["server"] == up
    assert got["client"] == down
    (result,) = results
    assert (result.client_bytes, result.server_bytes) == (MIB, MIB)
    assert (counters[0].total, counters[1].total) == (MIB, MIB)
    assert result.error is None
    assert result.errno is None
    # Both proxy-side sockets are closed at the end.
    assert rig.proxy_client.socket.fileno() == -1
    assert rig.proxy_server.socket.fileno() == -1


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("first", ["client", "server"])
async def test_half_close_passes_through(rig: Rig, mode: str, first: str) -> None:
    # One side speaks and shuts its write side; the other answers only after
    # seeing EOF. A copy that drops half-close hangs here.
    speaker, answerer = (
        (rig.app_client, rig.app_server) if first == "client" else (rig.app_server, rig.app_client)
    )
    heard: list[bytes] = []

    async def speak() -> None:
        await send_then_eof(speaker, b"question")
        heard.append(await read_all(speaker))

    async def answer() -> None:
        heard.append(await read_all(answerer))
        await send_then_eof(answerer, b"answer after eof")

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_proxy, rig, mode)
            nursery.start_soon(speak)
            nursery.start_soon(answer)
    assert heard == [b"question", b"answer after eof"]


@pytest.mark.parametrize("mode", MODES)
async def test_server_speaks_first(rig: Rig, mode: str) -> None:
    async def server() -> None:
        await rig.app_server.send_all(b"220 ready\r\n")
        assert await read_all(rig.app_server) == b"QUIT\r\n"
        await rig.app_server.send_eof()

    async def client() -> None:
        assert await rig.app_client.receive_some(100) == b"220 ready\r\n"
        await send_then_eof(rig.app_client, b"QUIT\r\n")
        assert await read_all(rig.app_client) == b""

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_proxy, rig, mode)
            nursery.start_soon(server)
            nursery.start_soon(client)


@pytest.mark.parametrize("mode", MODES)
async def test_prefix_is_replayed_first_and_not_counted(rig: Rig, mode: str) -> None:
    prefix = b"GET / HTTP/1.1\r\n"
    rest = b"Host: example\r\n\r\n" * 100
    counters = (Counter(), Counter())
    results: list[DuplexResult] = []
    got: list[bytes] = []

    async def proxy() -> None:
        results.append(await run_proxy(rig, mode, prefix=prefix, counters=counters))

    async def server() -> None:
        got.append(await read_all(rig.app_server))
        await rig.app_server.send_eof()

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(proxy)
            nursery.start_soon(server)
            await send_then_eof(rig.app_client, rest)
            assert await read_all(rig.app_client) == b""
    assert got == [prefix + rest]
    assert results[0].client_bytes == counters[0].total == len(rest)


@pytest.mark.parametrize("mode", MODES)
async def test_server_reset_is_reported_and_client_closed(rig: Rig, mode: str) -> None:
    results: list[DuplexResult] = []

    async def proxy() -> None:
        results.append(await run_proxy(rig, mode))

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(proxy)
            await rig.app_client.send_all(b"hello")
            assert await rig.app_server.receive_some(5) == b"hello"
            # SO_LINGER 0: close sends RST instead of FIN.
            rig.app_server.socket.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            rig.app_server.socket.close()
            # The client sees its connection end (not hang).
            assert await read_all(rig.app_client) == b""
    (result,) = results
    assert result.errno == errno.ECONNRESET
    assert result.error is not None
    assert rig.proxy_client.socket.fileno() == -1


async def test_no_half_close_destination_is_closed_at_eof(rig: Rig) -> None:
    # Like trio.SSLStream: it cannot send EOF alone, so the pair ends and the
    # client sees the end rather than waiting forever.
    results: list[DuplexResult] = []

    async def proxy() -> None:
        results.append(
            await proxy_streams(NoHalfClose(rig.proxy_client), Passthrough(rig.proxy_server))
        )

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(proxy)
            await send_then_eof(rig.app_server, b"bye")
            assert await read_all(rig.app_client) == b"bye"
    assert results[0].error is None
    assert results[0].server_bytes == 3


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("mode", MODES)
async def test_cancellation_mid_copy_leaves_no_fds(mode: str) -> None:
    before = _fd_count()
    app_client, proxy_client = await tcp_pair()
    proxy_server, app_server = await tcp_pair()
    rig = Rig(app_client, proxy_client, proxy_server, app_server)
    flowing = trio.Event()
    counter = Counter()

    def on_client_read(n: int) -> None:
        counter(n)
        flowing.set()

    async def proxy(task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        with trio.CancelScope() as scope:
            task_status.started(scope)
            await run_proxy(rig, mode, counters=(on_client_read, Counter()))

    async def flood() -> None:
        chunk = b"x" * 65536
        for _ in range(10_000):  # bounded; the server never reads, so this blocks
            await app_client.send_all(chunk)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            scope = await nursery.start(proxy)
            nursery.start_soon(flood)
            await flowing.wait()
            await trio.sleep(0.05)  # let buffers fill so the copy is mid-write
            scope.cancel()
            nursery.cancel_scope.cancel()
    assert proxy_client.socket.fileno() == -1
    assert proxy_server.socket.fileno() == -1
    assert counter.total > 0
    await rig.aclose()
    assert _fd_count() == before


async def test_splice_partial_writes_complete_and_push(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A small send buffer on the client side forces partial splice(pipe ->
    # socket) writes; every byte must still arrive, and each partial write
    # re-sets TCP_NODELAY to push the held-back tail (BENCH.md lesson 2).
    if not HAS_SPLICE:
        pytest.skip("no os.splice here")
    pushes: list[object] = []
    real = sockopt.set_nodelay

    def counting(sock: Any) -> None:
        pushes.append(sock)
        real(sock)

    monkeypatch.setattr(splice, "set_nodelay", counting)
    rig.proxy_client.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    body = os.urandom(MIB)
    got: list[bytes] = []

    async def client() -> None:
        await rig.app_client.send_eof()
        got.append(await read_all(rig.app_client))

    with trio.fail_after(8):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_proxy, rig, "splice")
            nursery.start_soon(client)
            await send_then_eof(rig.app_server, body)
    assert got == [body]
    assert pushes
    assert all(sock is rig.proxy_client.socket for sock in pushes)


def test_error_errno_walks_the_cause_chain() -> None:
    reset = ConnectionResetError(errno.ECONNRESET, "reset")
    broken = trio.BrokenResourceError("broken")
    broken.__cause__ = reset
    assert error_errno(broken) == errno.ECONNRESET
    assert error_errno(ValueError("x")) is None
    assert error_errno(None) is None
    loop: Any = RuntimeError("a")
    loop.__context__ = loop
    assert error_errno(loop) is None


@pytest.mark.parametrize("mode", ["splice", "raw"])
async def test_copy_checkpoints_when_data_is_always_ready(rig: Rig, mode: str) -> None:
    # With data always ready no readiness wait ever happens, so only the
    # checkpoint per batch lets a cancellation in: exactly one batch is moved.
    if mode == "splice" and not HAS_SPLICE:
        pytest.skip("no os.splice here")
    buffered = 0
    with trio.move_on_after(0.2):  # fill the kernel buffers until send blocks
        for _ in range(1000):
            await rig.app_client.send_all(b"x" * 4096)
            buffered += 4096
    counter = Counter()
    chunk = 4096 if mode == "splice" else 1024  # a pipe has at least one page
    batch = splice._BATCH if mode == "splice" else duplex._BATCH
    assert buffered > 2 * batch * chunk
    with trio.CancelScope() as scope:
        scope.cancel()
        if mode == "splice":
            await splice.splice_one_way(
                rig.proxy_client, rig.proxy_server, counter, pipe_size=chunk
            )
        else:
            await duplex.copy_socket_one_way(
                rig.proxy_client, rig.proxy_server, counter, size=chunk
            )
    assert scope.cancelled_caught
    assert 0 < counter.total <= batch * chunk


def test_grow_pipe_sets_the_capacity_or_keeps_it() -> None:
    r, w = os.pipe()
    try:
        assert splice.grow_pipe(w, 1 << 20, 65536) == 1 << 20
    finally:
        os.close(r)
        os.close(w)
    # When the kernel refuses (here: the descriptor is gone), the capacity it had stays.
    assert splice.grow_pipe(w, 1 << 20, 262144) == 262144


@pytest.mark.skipif(not HAS_SPLICE, reason="no os.splice")
async def test_a_bulk_direction_grows_its_pipe_and_stays_exact(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # After BULK_AFTER bytes one way the pipe grows (an explicit pipe_size does not).
    grown: list[int] = []
    real = splice.grow_pipe

    def spy(w: int, size: int, capacity: int) -> int:
        new = real(w, size, capacity)
        grown.append(new)
        return new

    monkeypatch.setattr(splice, "BULK_AFTER", 256 * 1024)
    monkeypatch.setattr(splice, "grow_pipe", spy)
    data = os.urandom(4 * MIB)
    a_app, a_proxy = await tcp_pair()
    b_proxy, b_app = await tcp_pair()
    got: list[bytes] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_then_eof, a_app, data)
            nursery.start_soon(splice.splice_one_way, a_proxy, b_proxy, lambda n: None)

            async def sink() -> None:
                got.append(await read_all(b_app))

            nursery.start_soon(sink)
    assert got == [data]
    assert grown == [splice.BULK_PIPE_SIZE]
    for s in (a_app, a_proxy, b_proxy, b_app):
        await s.aclose()
