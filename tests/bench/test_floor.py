"""The benchmark's Python floor (``bench/floor.py``) really proxies what it claims to.

Its rows are only a floor if it does the work: a relay that copies every byte both
ways with half-close, an HTTP/1 proxy that parses and rewrites heads and forwards
bodies over keep-alive. Real sockets on 127.0.0.1, a trio backend, in-process.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import trio

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from bench import floor  # noqa: E402

BODY = bytes(range(256)) * 256  # 64 KiB


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _http_backend(stream: trio.SocketStream) -> None:
    # Answers each request head with its path; /big with 64 KiB.
    buf = b""
    async with stream:
        while True:
            while b"\r\n\r\n" not in buf:
                data = await stream.receive_some(65536)
                if not data:
                    return
                buf += data
            head, _, buf = buf.partition(b"\r\n\r\n")
            path = head.split(b" ")[1]
            body = BODY if path == b"/big" else path
            head = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body)
            await stream.send_all(head + body)


async def _echo_backend(stream: trio.SocketStream) -> None:
    # Reads to EOF, then answers with how many bytes it got (needs half-close).
    total = 0
    async with stream:
        while data := await stream.receive_some(65536):
            total += len(data)
        await stream.send_all(b"got %d" % total)


async def _read_response(stream: trio.SocketStream, buf: bytes) -> tuple[bytes, bytes]:
    while b"\r\n\r\n" not in buf:
        buf += await stream.receive_some(65536)
    head, _, rest = buf.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(rest) < length:
        rest += await stream.receive_some(65536)
    return rest[:length], rest[length:]


@asynccontextmanager
async def _floor(
    mode: str, backend: Callable[[trio.SocketStream], Awaitable[None]]
) -> AsyncIterator[trio.SocketStream]:
    """A backend, the floor in ``mode`` in front of it, and a client connection."""
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            back = _free_port()
            front = _free_port()
            listeners = await trio.open_tcp_listeners(back, host="127.0.0.1")
            nursery.start_soon(trio.serve_listeners, backend, listeners)
            nursery.start_soon(floor.main, mode, [f"127.0.0.1:{front}=127.0.0.1:{back}"])
            await trio.sleep(0.2)
            stream = await trio.open_tcp_stream("127.0.0.1", front)
            async with stream:
                yield stream
            nursery.cancel_scope.cancel()


async def test_http1_floor_keeps_alive_and_forwards_bodies() -> None:
    async with _floor("http1", _http_backend) as stream:
        rest = b""
        for path in (b"/one", b"/big", b"/two"):
            await stream.send_all(b"GET %s HTTP/1.1\r\nhost: x\r\n\r\n" % path)
            body, rest = await _read_response(stream, rest)
            assert body == (BODY if path == b"/big" else path)


async def test_relay_floor_copies_both_ways_with_half_close() -> None:
    async with _floor("relay", _echo_backend) as stream:
        await stream.send_all(BODY * 16)
        await stream.send_eof()
        reply = b""
        while data := await stream.receive_some(65536):
            reply += data
    assert reply == b"got %d" % (len(BODY) * 16)
