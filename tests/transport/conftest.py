"""Loopback helpers shared by the transport tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio


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
