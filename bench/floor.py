"""The Python floor: the least a trio process can do for the benchmark's traffic.

Run by the benchmark inside pod A (``python bench/floor.py MODE --route
LISTEN=TO ...``), next to nginx and haproxy, as a reference system. It is not part of the
proxy and shares no code with it: it shows, in the same run and over the same veth
path, what one CPython process on trio reaches when it does nothing but the
essential work, so that the proxy's ratios can be read against the cost of the
language and runtime rather than against nginx alone (BENCH.md's "minimal trio"
rows).

Modes:
    relay
        Opaque TCP: one upstream connection per client connection, bytes copied
        both ways (``recv``/``send`` tried first on the non-blocking socket, trio's
        readiness waits only on ``EAGAIN``, BENCH.md lesson 1), half-close passed
        on.
    http1
        A minimal HTTP/1.1 proxy on httptools (llhttp): each request head is
        parsed and written again (method, target, header fields), the body
        forwarded by ``Content-Length``; each response head parsed and written
        again, its body forwarded (``Content-Length`` or chunked, copied as
        received). One upstream keep-alive connection per client connection. No
        metrics, no routing, no limits, no error handling beyond closing: the
        floor, not a product.
"""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Awaitable, Callable

import httptools
import trio

_RECV = 64 * 1024


def _split(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host, int(port)


async def _recv(sock: socket.socket) -> bytes:
    while True:
        try:
            return sock.recv(_RECV)
        except BlockingIOError:
            await trio.lowlevel.wait_readable(sock)


async def _send(sock: socket.socket, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        try:
            sent = sock.send(view, socket.MSG_NOSIGNAL)
        except BlockingIOError:
            await trio.lowlevel.wait_writable(sock)
            continue
        view = view[sent:]


def _raw(stream: trio.SocketStream) -> socket.socket:
    s = stream.socket
    raw = socket.socket(s.family, s.type, s.proto, fileno=s.fileno())
    raw.setblocking(False)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return raw


async def _copy(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := await _recv(src):
            await _send(dst, data)
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


async def _relay(a: socket.socket, b: socket.socket) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_copy, a, b)
        nursery.start_soon(_copy, b, a)


async def _with_upstream(
    client: trio.SocketStream,
    upstream_addr: tuple[str, int],
    run: Callable[[socket.socket, socket.socket], Awaitable[None]],
) -> None:
    # One upstream connection per client connection; ``run`` gets both raw sockets.
    async with client:
        try:
            upstream = await trio.open_tcp_stream(*upstream_addr)
        except OSError:
            return
        async with upstream:
            a, b = _raw(client), _raw(upstream)
            try:
                await run(a, b)
            except (OSError, httptools.HttpParserError):
                pass
            finally:
                a.detach()
                b.detach()


class _Message:
    """httptools callbacks collecting one message at a time."""

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[bytes] = []
        self.head_done = False
        self.body: list[bytes] = []
        self.done = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append(b"%s: %s\r\n" % (name, value))

    def on_headers_complete(self) -> None:
        self.head_done = True

    def on_body(self, data: bytes) -> None:
        self.body.append(data)

    def on_message_complete(self) -> None:
        self.done = True


async def _serve(client: socket.socket, upstream: socket.socket) -> None:
    while True:
        req = _Message()
        parser = httptools.HttpRequestParser(req)
        while not req.done:
            data = await _recv(client)
            if not data:
                return
            parser.feed_data(data)
        method = parser.get_method()
        head = b"%s %s HTTP/1.1\r\n%s\r\n" % (method, req.url, b"".join(req.headers))
        await _send(upstream, head + b"".join(req.body))
        rsp = _Message()
        rparser = httptools.HttpResponseParser(rsp)
        sent_head = False
        while not rsp.done:
            data = await _recv(upstream)
            if not data:
                return
            rparser.feed_data(data)
            out = b""
            if rsp.head_done and not sent_head:
                sent_head = True
                status = rparser.get_status_code()
                out = b"HTTP/1.1 %d OK\r\n%s\r\n" % (status, b"".join(rsp.headers))
            if sent_head and rsp.body:
                out += b"".join(rsp.body)
                rsp.body.clear()
            if out:
                await _send(client, out)
        if not parser.should_keep_alive():
            return


async def _serve_route(mode: str, listen: str, to: str) -> None:
    host, port = _split(listen)
    run = _relay if mode == "relay" else _serve
    upstream = _split(to)

    async def handle(stream: trio.SocketStream) -> None:
        await _with_upstream(stream, upstream, run)

    listeners = await trio.open_tcp_listeners(port, host=host, backlog=4096)
    print(f"floor {mode} listening on {listen} -> {to}", flush=True)
    await trio.serve_listeners(handle, listeners)


async def main(mode: str, routes: list[str]) -> None:
    async with trio.open_nursery() as nursery:
        for route in routes:
            listen, _, to = route.partition("=")
            nursery.start_soon(_serve_route, mode, listen, to)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=["relay", "http1"])
    p.add_argument("--route", action="append", required=True, metavar="LISTEN=TO")
    args = p.parse_args()
    try:
        trio.run(main, args.mode, args.route)
    except KeyboardInterrupt:
        sys.exit(130)
