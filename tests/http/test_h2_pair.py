"""HTTP/2 client connection against the HTTP/2 server driver (pair tests)."""

from __future__ import annotations

import h2.config
import pytest
import trio
import trio.testing
from h2.errors import ErrorCodes

from linkerd_proxy.app.shutdown import Shutdown
from linkerd_proxy.errors import H2Refused
from linkerd_proxy.http.body import BodyAbandoned, BytesBody, PipeBody, StreamReset
from linkerd_proxy.http.h2 import H2ClientSettings, H2Connection, H2ServerSettings
from linkerd_proxy.http.h2.proto import Proto
from linkerd_proxy.http.model import Request, Response

from .test_h2_support import echo, h2_pair


def get(path: str = "/", authority: str | None = "svc.test") -> Request:
    return Request("GET", "http", authority, path, "HTTP/2")


async def test_get() -> None:
    async with h2_pair(echo) as conn:
        rsp = await conn(get("/hello?x=1"))
        assert rsp.status == 200
        assert rsp.header(b"x-method") == b"GET"
        assert rsp.header(b"x-path") == b"/hello?x=1"
        assert rsp.header(b"x-authority") == b"svc.test"
        assert await rsp.body.read_all(1000) == b""
        assert rsp.version == "HTTP/2"


async def test_post_body_and_trailers_both_ways() -> None:
    async with h2_pair(echo, tcp=True) as conn:
        body = BytesBody(b"x" * 200_000, trailers=[(b"x-t", b"1")])
        rsp = await conn(Request("POST", "http", "a", "/up", "HTTP/2", [], body))
        assert rsp.status == 200
        assert await rsp.body.read_all(10**6) == b"x" * 200_000
        assert rsp.body.trailers == [(b"x-t", b"1")]


async def test_trailers_only_response() -> None:
    async def grpc_error(req: Request) -> Response:
        return Response(200, [(b"content-type", b"application/grpc"), (b"grpc-status", b"5")])

    async with h2_pair(grpc_error) as conn:
        rsp = await conn(get())
        assert rsp.header(b"grpc-status") == b"5"
        assert rsp.body.is_end_stream
        assert await rsp.body.read() == b""


async def test_response_trailers_after_streamed_body() -> None:
    async def streaming(req: Request) -> Response:
        body = PipeBody()

        async def produce() -> None:
            for i in range(3):
                await body.send(b"m%d" % i)
            body.finish([(b"grpc-status", b"0")])

        nursery.start_soon(produce)
        return Response(200, [(b"content-type", b"application/grpc")], body)

    async with trio.open_nursery() as nursery, h2_pair(streaming) as conn:
        rsp = await conn(get())
        assert await rsp.body.read_all(100) == b"m0m1m2"
        assert rsp.body.trailers == [(b"grpc-status", b"0")]


async def test_100_concurrent_streams() -> None:
    async with h2_pair(echo, tcp=True) as conn:
        results: dict[int, bytes] = {}

        async def one(i: int) -> None:
            body = BytesBody(b"%d" % i * 1000)
            rsp = await conn(Request("POST", "http", "a", f"/{i}", "HTTP/2", [], body))
            results[i] = await rsp.body.read_all(10**6)

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for i in range(100):
                    nursery.start_soon(one, i)
        assert results == {i: b"%d" % i * 1000 for i in range(100)}


async def test_client_waits_for_a_slot_under_max_concurrent_streams() -> None:
    active = 0
    peak = 0

    async def svc(req: Request) -> Response:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await trio.sleep(0.001)
        active -= 1
        return Response(204)

    async with h2_pair(svc, server=H2ServerSettings(max_concurrent_streams=2)) as conn:
        await conn(get())  # the server's SETTINGS are in
        statuses: list[int] = []

        async def one() -> None:
            statuses.append((await conn(get())).status)

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                for _ in range(20):
                    nursery.start_soon(one)
        assert statuses == [204] * 20
        assert peak == 2


async def test_cancelled_call_resets_stream_and_cancels_upstream_service() -> None:
    entered = trio.Event()
    cancelled = trio.Event()

    async def svc(req: Request) -> Response:
        if req.path == "/again":
            return Response(200)
        entered.set()
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()
        raise AssertionError

    async with h2_pair(svc) as conn:
        with trio.move_on_after(5) as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(conn, get())
                await entered.wait()
                nursery.cancel_scope.cancel()
        assert not scope.cancelled_caught
        with trio.fail_after(5):
            await cancelled.wait()
        assert conn.active_streams == 0 and conn.is_usable
        with trio.fail_after(5):
            assert (await conn(get("/again"))).status == 200


async def test_upstream_reset_mid_body_reaches_the_client() -> None:
    async def svc(req: Request) -> Response:
        body = PipeBody()
        body.push(b"partial")
        body.fail(StreamReset(ErrorCodes.REFUSED_STREAM))
        return Response(200, [], body)

    async with h2_pair(svc) as conn:
        rsp = await conn(get())
        assert await rsp.body.read() == b"partial"
        with pytest.raises(StreamReset) as info:
            await rsp.body.read()
        assert info.value.code == ErrorCodes.REFUSED_STREAM


async def test_service_error_resets_stream_with_internal_error() -> None:
    async def svc(req: Request) -> Response:
        if req.path == "/boom":
            raise RuntimeError("boom")
        return Response(200)

    async with h2_pair(svc) as conn:
        with pytest.raises(StreamReset) as info:
            await conn(get("/boom"))
        assert info.value.code == ErrorCodes.INTERNAL_ERROR
        assert (await conn(get("/ok"))).status == 200


async def test_abandoned_response_body_cancels_the_server_stream() -> None:
    abandoned = trio.Event()

    async def svc(req: Request) -> Response:
        body = PipeBody()

        async def produce() -> None:
            try:
                while True:
                    await body.send(b"x" * 16384)
            except BodyAbandoned:
                abandoned.set()

        nursery.start_soon(produce)
        return Response(200, [], body)

    async with trio.open_nursery() as nursery, h2_pair(svc) as conn:
        rsp = await conn(get())
        assert await rsp.body.read()
        await rsp.body.aclose()
        with trio.fail_after(5):
            await abandoned.wait()
        assert (await conn(get())).status == 200


async def test_drain_in_flight_finish_and_client_stops_taking_requests() -> None:
    release = trio.Event()
    drain = Shutdown()

    async def svc(req: Request) -> Response:
        await release.wait()
        return Response(200, [], BytesBody(b"z" * 100_000))

    async with h2_pair(svc, drain=drain, tcp=True) as conn:
        bodies: list[bytes] = []

        async def one() -> None:
            rsp = await conn(get())
            bodies.append(await rsp.body.read_all(10**6))

        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(one)
            await trio.testing.wait_all_tasks_blocked()
            drain.trigger("test")
            for _ in range(5000):  # the GOAWAY crosses a real socket: poll, bounded
                if not conn.is_usable:
                    break
                await trio.sleep(0.001)
            assert not conn.is_usable
            with pytest.raises(H2Refused):
                await conn(get())
            release.set()
        assert bodies == [b"z" * 100_000] * 5
        with trio.fail_after(5):
            await conn.closed.wait()
        assert conn.is_closed


async def test_request_above_goaway_last_stream_id_fails_retryable() -> None:
    a, b = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        conn = await H2Connection.open(a, H2ClientSettings(), nursery)
        server = Proto(h2.config.H2Configuration(client_side=False))
        server.initiate_connection()
        await b.send_all(server.data_to_send())

        async def call() -> BaseException | None:
            try:
                await conn(get())
            except BaseException as exc:
                return exc
            return None

        results: list[BaseException | None] = []
        both = trio.Event()

        async def run_call() -> None:
            results.append(await call())
            if len(results) == 2:
                both.set()

        nursery.start_soon(run_call)
        nursery.start_soon(run_call)
        await trio.testing.wait_all_tasks_blocked()
        server.receive_data(await b.receive_some(65536))
        server.send_goaway(0, 1)
        server.send_headers(1, [(b":status", b"200")], end_stream=True)
        await b.send_all(server.data_to_send())
        with trio.fail_after(5):
            await both.wait()
        assert any(r is None for r in results)
        assert any(isinstance(r, H2Refused) for r in results)
        assert not conn.is_usable
        with trio.fail_after(5):
            await conn.closed.wait()


async def test_client_keepalive_timeout(autojump_clock: trio.testing.MockClock) -> None:
    a, _peer = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        settings = H2ClientSettings(keepalive_interval=5.0, keepalive_timeout=1.0)
        conn = await H2Connection.open(a, settings, nursery)
        start = trio.current_time()
        with trio.fail_after(30):
            await conn.closed.wait()
        assert 6.0 <= trio.current_time() - start <= 6.5
        with pytest.raises(H2Refused):
            await conn(get())
