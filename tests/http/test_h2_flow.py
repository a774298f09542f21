"""HTTP/2 flow control: a slow reader slows the writer; nothing buffers without bound."""

from __future__ import annotations

import trio
import trio.testing

from linkerd_proxy.http.body import PipeBody
from linkerd_proxy.http.h2 import H2ServerSettings
from linkerd_proxy.http.model import Request, Response

from .test_h2_support import h2_pair

MIB = 1024 * 1024
CHUNK = 16 * 1024


async def test_10mib_upload_to_a_slow_service_stays_within_the_windows() -> None:
    window = 65_535
    gate = trio.Event()
    bodies: list[PipeBody] = []
    received = 0
    peak_buffered = 0

    async def slow(req: Request) -> Response:
        nonlocal received, peak_buffered
        assert isinstance(req.body, PipeBody)
        bodies.append(req.body)
        await gate.wait()
        while True:
            peak_buffered = max(peak_buffered, req.body.buffered)
            chunk = await req.body.read()
            if not chunk:
                break
            received += len(chunk)
        return Response(200)

    produced = 0
    upload = PipeBody(limit=CHUNK)

    async def produce() -> None:
        nonlocal produced
        for _ in range(10 * MIB // CHUNK):
            await upload.send(b"u" * CHUNK)
            produced += CHUNK
        upload.finish()

    settings = H2ServerSettings(initial_stream_window_size=window)
    async with h2_pair(slow, server=settings, tcp=True) as conn, trio.open_nursery() as nursery:
        nursery.start_soon(produce)
        result: list[int] = []
        done = trio.Event()

        async def call() -> None:
            rsp = await conn(Request("POST", "http", "a", "/", "HTTP/2", [], upload))
            result.append(rsp.status)
            done.set()

        nursery.start_soon(call)
        # Stalled: the service reads nothing; everything in flight is bounded by the
        # stream window plus the small pipe in front of the client.
        for _ in range(500):  # real sockets: poll, bounded (5 s)
            if bodies and bodies[0].buffered >= window:
                break
            await trio.sleep(0.01)
        for _ in range(5):
            await trio.sleep(0.01)
        assert bodies[0].buffered == window
        assert produced <= window + 2 * CHUNK + CHUNK
        assert conn.proto.pending_out == 0
        gate.set()
        with trio.fail_after(8):
            await done.wait()
        assert result == [200]
        assert received == 10 * MIB
        assert peak_buffered <= window


async def test_slow_response_reader_bounds_server_side_buffering() -> None:
    """A client that does not read: the server's writes wait for window."""
    sent = 0
    finished = trio.Event()

    async def big(req: Request) -> Response:
        body = PipeBody(limit=CHUNK)

        async def produce() -> None:
            nonlocal sent
            for _ in range(10 * MIB // CHUNK):
                await body.send(b"d" * CHUNK)
                sent += CHUNK
            body.finish()
            finished.set()

        nursery.start_soon(produce)
        return Response(200, [], body)

    async with trio.open_nursery() as nursery, h2_pair(big, tcp=True) as conn:
        rsp = await conn(Request("GET", "http", "a", "/", "HTTP/2"))
        for _ in range(20):
            await trio.sleep(0.01)
        # client stream window (64 KiB) + the server's pipe + one chunk in hand
        assert sent <= 65_535 + 3 * CHUNK
        total = len(await rsp.body.read_all(11 * MIB))
        assert total == 10 * MIB
        assert finished.is_set()
