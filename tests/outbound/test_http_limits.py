"""HTTP/1 head limits are configurable from the environment, end to end."""

from __future__ import annotations

import functools
import ipaddress

import trio

from linkerd_proxy.addrs import SocketAddr
from linkerd_proxy.app.config import Config
from linkerd_proxy.testing import open_proxy

LOCALHOST = ipaddress.IPv4Address("127.0.0.1")


async def _ok(stream: trio.SocketStream) -> None:
    async with stream:
        await stream.receive_some(65536)
        await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")


async def _status(proxy_addr: SocketAddr, header_bytes: int) -> bytes:
    stream = await trio.open_tcp_stream(*proxy_addr.to_sockaddr())
    async with stream:
        head = f"GET / HTTP/1.1\r\nHost: x\r\nx-big: {'a' * header_bytes}\r\n\r\n"
        await stream.send_all(head.encode())
        with trio.fail_after(5):
            return (await stream.receive_some(65536)).split(b"\r\n", 1)[0]


async def test_max_header_bytes_from_env(nursery: trio.Nursery) -> None:
    listeners = await nursery.start(functools.partial(trio.serve_tcp, _ok, 0, host="127.0.0.1"))
    backend = SocketAddr(LOCALHOST, listeners[0].socket.getsockname()[1])
    config = Config.from_env({"LINKERD2_PROXY_OUTBOUND_HTTP1_MAX_HEADER_BYTES": "2048"})
    async with open_proxy(config, orig_dst=backend) as proxy:
        out = proxy.addrs.outbound[0]
        assert await _status(out, 500) == b"HTTP/1.1 200 OK"
        assert (await _status(out, 4000)).startswith(b"HTTP/1.1 431")
