"""The HTTP/1 server driver over in-memory streams: deadlines (MockClock), errors,
cancellation when the client leaves."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from linkerd_proxy.http.body import BytesBody
from linkerd_proxy.http.h1 import codec as h1
from linkerd_proxy.http.h1.server import H1ServerSettings, serve_h1
from linkerd_proxy.http.h1.server_request import BadRequest, build_request
from linkerd_proxy.http.model import Request, Response

OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi"


async def ok_service(request: Request) -> Response:
    await request.body.read_all(1 << 20)
    return Response(200, [], BytesBody(b"hi"))


async def read_n(stream: trio.abc.ReceiveStream, n: int) -> bytes:
    out = b""
    for _ in range(1000):
        if len(out) >= n:
            break
        data = await stream.receive_some(65536)
        if not data:
            break
        out += data
    return out


async def test_header_read_deadline_closes_slow_head(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client, server = trio.testing.memory_stream_pair()
    settings = H1ServerSettings(header_read_timeout=10.0, close_linger=0)
    with trio.fail_after(100):
        await _slow_head(client, server, settings)


async def _slow_head(
    client: trio.abc.Stream, server: trio.abc.Stream, settings: H1ServerSettings
) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: serve_h1(server, ok_service, settings=settings))
        start = trio.current_time()
        await client.send_all(b"GET / HTTP/1.1\r\nHo")
        assert await client.receive_some(100) == b""
        assert 10.0 <= trio.current_time() - start < 10.5


async def test_idle_keep_alive_is_never_cut(autojump_clock: trio.testing.MockClock) -> None:
    client, server = trio.testing.memory_stream_pair()
    settings = H1ServerSettings(header_read_timeout=10.0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: serve_h1(server, ok_service, settings=settings))
        for _ in range(3):
            await client.send_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            assert await read_n(client, len(OK)) == OK
            await trio.sleep(3600)  # an hour idle between requests
        nursery.cancel_scope.cancel()


async def test_service_error_is_502_and_connection_goes_on() -> None:
    calls = 0

    async def flaky(request: Request) -> Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        return await ok_service(request)

    client, server = trio.testing.memory_stream_pair()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_h1, server, flaky)
            await client.send_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            got = await read_n(client, 38)
            assert got == b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n"
            await client.send_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            assert await read_n(client, len(OK)) == OK
            nursery.cancel_scope.cancel()


async def test_client_leaving_cancels_the_service_call() -> None:
    started = trio.Event()
    cancelled = trio.Event()

    async def slow(request: Request) -> Response:
        started.set()
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()

    client, server = trio.testing.memory_stream_pair()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_h1, server, slow)
            await client.send_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            await started.wait()
            await client.aclose()
            await cancelled.wait()


async def test_request_model_from_the_wire() -> None:
    seen: list[Request] = []

    async def record(request: Request) -> Response:
        seen.append(request)
        return await ok_service(request)

    client, server = trio.testing.memory_stream_pair()
    marker = object()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                lambda: serve_h1(server, record, prefix=b"POST /a?b ", extensions={object: marker})
            )
            await client.send_all(b"HTTP/1.1\r\nHost: ex:8\r\nContent-Length: 3\r\n\r\nabc")
            assert await read_n(client, len(OK)) == OK
            await client.send_all(b"GET http://o.example/x HTTP/1.1\r\nHost: ignored\r\n\r\n")
            assert await read_n(client, len(OK)) == OK
            nursery.cancel_scope.cancel()
    first, second = seen
    assert (first.method, first.authority, first.path, first.version) == (
        "POST",
        "ex:8",
        "/a?b",
        "HTTP/1.1",
    )
    # Host is kept as received (the client driver sends it on untouched).
    assert first.body.content_length == 3 and first.headers == [(b"host", b"ex:8")]
    assert first.extensions[object] is marker
    assert (second.scheme, second.authority, second.path, second.absolute_form) == (
        "http",
        "o.example",
        "/x",
        True,
    )
    assert second.headers == [(b"host", b"ignored")]


def _head(raw: bytes) -> h1.RequestHead:
    event = h1.H1ServerCodec().feed(raw)[0]
    assert isinstance(event, h1.RequestHead)
    return event


def test_build_request_connect_targets_and_zero_length() -> None:
    # authority-form with or without a port (the reference accepts both)
    for target in (b"svc.example", b"svc.example:443", b"[::1]:8080"):
        req, _ = build_request(_head(b"CONNECT %s HTTP/1.1\r\n\r\n" % target), {})
        assert req.authority == target.decode()
    for bad in (b"*", b"/x", b"http://t/", b"a/b"):
        with pytest.raises(BadRequest):
            build_request(_head(b"CONNECT %s HTTP/1.1\r\n\r\n" % bad), {})
    # an explicit content-length: 0 is kept; other lengths are dropped
    req, _ = build_request(_head(b"GET / HTTP/1.1\r\nHost: h\r\ncontent-length: 0\r\n\r\n"), {})
    assert req.headers == [(b"host", b"h"), (b"content-length", b"0")]
    req, _ = build_request(_head(b"POST / HTTP/1.1\r\nHost: h\r\ncontent-length: 2\r\n\r\n"), {})
    assert req.headers == [(b"host", b"h")]
