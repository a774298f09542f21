"""Fixtures for the gRPC bridge tests: real grpclib servers on loopback.

The servers run on their own trio-asyncio loop (``server_loop``), apart from the
bridge's loop, as a control plane would run apart from the proxy. Handlers are
plain asyncio coroutines given per test, taking a grpclib ``Stream`` of bytes.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import attrs
import pytest
import trio
import trio_asyncio
import trustme
from grpclib.const import Cardinality, Handler
from grpclib.encoding.base import CodecBase
from grpclib.server import Server, Stream

from linkerd_proxy.grpc.bridge import Bridge, open_bridge

AioHandler = Callable[[Stream[Any, Any]], Awaitable[None]]

STREAM = "/test.Svc/Stream"
UNARY = "/test.Svc/Unary"


class RawCodec(CodecBase):
    __content_subtype__ = "proto"

    def encode(self, message: Any, message_type: Any) -> bytes:
        return bytes(message)

    def decode(self, data: bytes, message_type: Any) -> Any:
        return data


class _Service:
    def __init__(self, handlers: dict[str, tuple[Cardinality, AioHandler]]) -> None:
        self._handlers = handlers

    def __mapping__(self) -> dict[str, Handler]:
        return {
            path: Handler(fn, card, bytes, bytes) for path, (card, fn) in self._handlers.items()
        }


@attrs.define
class RunningServer:
    server: Server
    host: str
    port: int
    protocols: list[Any]


class Servers:
    """Starts and stops grpclib servers on the server loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._running: list[Server] = []

    async def start(
        self,
        *,
        stream: AioHandler | None = None,
        unary: AioHandler | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> RunningServer:
        handlers: dict[str, tuple[Cardinality, AioHandler]] = {}
        if stream is not None:
            handlers[STREAM] = (Cardinality.UNARY_STREAM, stream)
        if unary is not None:
            handlers[UNARY] = (Cardinality.UNARY_UNARY, unary)
        server = Server([_Service(handlers)], codec=RawCodec())
        protocols: list[Any] = []
        make_protocol = server._protocol_factory

        def recording_factory() -> Any:
            protocol = make_protocol()
            protocols.append(protocol)
            return protocol

        # Recorded so that stop() can drop connections, as a dying process would.
        server._protocol_factory = recording_factory  # type: ignore[method-assign]
        start = trio_asyncio.aio_as_trio(server.start, loop=self.loop)
        await start(host, port, ssl=ssl_context, reuse_address=True)
        assert server._server is not None
        bound = server._server.sockets[0].getsockname()[1]
        self._running.append(server)
        return RunningServer(server, host, bound, protocols)

    async def stop(self, running: RunningServer) -> None:
        """Stop listening, cancel the handlers and drop every connection."""
        server = running.server
        if server in self._running:
            self._running.remove(server)
            server.close()
            for protocol in running.protocols:
                protocol.connection._transport.abort()
            await trio_asyncio.aio_as_trio(server.wait_closed, loop=self.loop)()

    async def stop_all(self) -> None:
        for server in list(self._running):
            self._running.remove(server)
            server.close()
            await trio_asyncio.aio_as_trio(server.wait_closed, loop=self.loop)()


@pytest.fixture
async def servers() -> AsyncIterator[Servers]:
    async with trio_asyncio.open_loop() as loop:
        s = Servers(loop)
        try:
            yield s
        finally:
            with trio.move_on_after(5):
                await s.stop_all()


@pytest.fixture
async def bridge() -> AsyncIterator[Bridge]:
    async with open_bridge() as b:
        yield b


@attrs.frozen
class Tls:
    server: ssl.SSLContext
    client: ssl.SSLContext
    name: str


@pytest.fixture(scope="session")
def tls() -> Tls:
    """A CA, a server certificate for ``ctl.test``, and matching contexts (ALPN h2)."""
    ca = trustme.CA()
    cert = ca.issue_cert("ctl.test")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server)
    server.set_alpn_protocols(["h2"])
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(client)
    client.set_alpn_protocols(["h2"])
    return Tls(server, client, "ctl.test")
