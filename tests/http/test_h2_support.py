"""Shared helpers for the HTTP/2 tests: a client/server pair and small services."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import trio
import trio.testing

from linkerd_proxy.app.shutdown import Shutdown
from linkerd_proxy.http.body import BytesBody
from linkerd_proxy.http.h2 import (
    H2ClientSettings,
    H2Connection,
    H2ServerSettings,
    serve_h2,
)
from linkerd_proxy.http.model import Request, Response
from linkerd_proxy.stack import Service


async def echo(req: Request) -> Response:
    """Answers with the request body, its method/path in headers, trailers echoed."""
    data = await req.body.read_all(64 * 1024 * 1024)
    trailers = req.body.trailers
    headers = [
        (b"x-method", req.method.encode()),
        (b"x-path", req.path.encode()),
        (b"x-authority", (req.authority or "-").encode()),
    ]
    return Response(200, headers, BytesBody(data, trailers=trailers), version="HTTP/2")


@contextlib.asynccontextmanager
async def h2_pair(
    service: Service[Request, Response],
    *,
    server: H2ServerSettings | None = None,
    client: H2ClientSettings | None = None,
    drain: Shutdown | None = None,
    tcp: bool = False,
) -> AsyncIterator[H2Connection]:
    """An :class:`H2Connection` talking to ``serve_h2(service)``."""
    async with trio.open_nursery() as nursery:
        if tcp:
            listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            port = listeners[0].socket.getsockname()[1]
            accepted: list[trio.SocketStream] = []
            c_stream = await trio.open_tcp_stream("127.0.0.1", port)
            s_stream = await listeners[0].accept()
            accepted.append(s_stream)
            await listeners[0].aclose()
            a: trio.abc.Stream = c_stream
            b: trio.abc.Stream = s_stream
        else:
            a, b = trio.testing.memory_stream_pair()
        nursery.start_soon(
            lambda: serve_h2(b, service, settings=server or H2ServerSettings(), drain=drain)
        )
        conn = await H2Connection.open(a, client or H2ClientSettings(), nursery)
        try:
            yield conn
        finally:
            await conn.aclose()
            nursery.cancel_scope.cancel()


@contextlib.asynccontextmanager
async def tiny_proxy(upstream_port: int) -> AsyncIterator[int]:
    """``serve_h2(client, H2Connection(upstream))`` per accepted connection.

    Yields the proxy's port.
    """

    async def handle(client: trio.SocketStream) -> None:
        upstream = await trio.open_tcp_stream("127.0.0.1", upstream_port)
        async with trio.open_nursery() as nursery:
            conn = await H2Connection.open(upstream, H2ClientSettings(), nursery)
            await serve_h2(client, conn, settings=H2ServerSettings())
            await conn.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        nursery.start_soon(trio.serve_listeners, handle, listeners)
        try:
            yield port
        finally:
            nursery.cancel_scope.cancel()


@contextlib.asynccontextmanager
async def serve_in_process(service: Service[Request, Response]) -> AsyncIterator[int]:
    """``serve_h2(service)`` on a loopback port; yields the port."""

    async def handle(client: trio.SocketStream) -> None:
        await serve_h2(client, service, settings=H2ServerSettings())

    async with trio.open_nursery() as nursery:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        nursery.start_soon(trio.serve_listeners, handle, listeners)
        try:
            yield port
        finally:
            nursery.cancel_scope.cancel()
