"""The HTTP/2 server driver against a raw h2 client: protections and edge cases."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import trio
import trio.testing
from h2.errors import ErrorCodes

from linkerd_proxy.app.shutdown import Shutdown
from linkerd_proxy.http.body import BytesBody
from linkerd_proxy.http.h2 import H2ServerSettings, serve_h2
from linkerd_proxy.http.h2.proto import Proto
from linkerd_proxy.http.model import Request, Response
from linkerd_proxy.stack import Service

from .test_h2_support import echo

REQ = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"/")]


class RawClient:
    """An h2 client over a memory stream, driven by hand."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        # Our Proto: h2, but it keeps working after a GOAWAY (drain tests).
        cfg = h2.config.H2Configuration(
            client_side=True, validate_outbound_headers=False, normalize_outbound_headers=False
        )
        self.h2 = Proto(cfg)
        self.h2.initiate_connection()
        self.events: list[h2.events.Event] = []
        self.eof = False

    async def flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            await self.stream.send_all(data)

    async def pump(self, flush: bool = True) -> None:
        """Read once (waiting) and record the events."""
        data = await self.stream.receive_some(65536)
        if not data:
            self.eof = True
            return
        self.events.extend(self.h2.receive_data(data))
        if flush:
            await self.flush()

    async def until(self, pred: object, limit: int = 200) -> None:
        assert callable(pred)
        with trio.move_on_after(5):
            for _ in range(limit):
                if pred() or self.eof:
                    return
                await self.pump()
        raise AssertionError(f"condition not reached: {self.events}")

    def of(self, kind: type, stream_id: int | None = None) -> list[h2.events.Event]:
        return [
            e
            for e in self.events
            if isinstance(e, kind)
            and (stream_id is None or getattr(e, "stream_id", None) == stream_id)
        ]


async def run_server(
    nursery: trio.Nursery,
    service: Service[Request, Response],
    settings: H2ServerSettings | None = None,
    drain: Shutdown | None = None,
) -> RawClient:
    a, b = trio.testing.memory_stream_pair()
    nursery.start_soon(
        lambda: serve_h2(b, service, settings=settings or H2ServerSettings(), drain=drain)
    )
    client = RawClient(a)
    await client.flush()
    return client


async def test_no_authority_uses_host() -> None:
    async with trio.open_nursery() as nursery:
        c = await run_server(nursery, echo)
        c.h2.send_headers(
            1,
            [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/x"), (b"host", b"h.test")],
            end_stream=True,
        )
        c.h2.send_headers(3, [*REQ[:2], (b":path", b"/y")], end_stream=True)
        await c.flush()
        await c.until(lambda: len(c.of(h2.events.StreamEnded)) == 2)
        r1 = dict(c.of(h2.events.ResponseReceived, 1)[0].headers)  # type: ignore[attr-defined]
        r3 = dict(c.of(h2.events.ResponseReceived, 3)[0].headers)  # type: ignore[attr-defined]
        assert r1[b"x-authority"] == b"h.test"
        assert r3[b"x-authority"] == b"-" and r3[b":status"] == b"200"
        nursery.cancel_scope.cancel()


async def test_connection_specific_headers_are_stream_errors() -> None:
    seen: list[Request] = []

    async def svc(req: Request) -> Response:
        seen.append(req)
        return Response(200)

    async with trio.open_nursery() as nursery:
        c = await run_server(nursery, svc)
        c.h2.config.validate_outbound_headers = False
        c.h2.send_headers(1, [*REQ, (b"connection", b"close")], end_stream=True)
        c.h2.send_headers(3, [*REQ, (b"transfer-encoding", b"chunked")], end_stream=True)
        c.h2.send_headers(5, [*REQ, (b"te", b"gzip")], end_stream=True)
        c.h2.send_headers(7, [*REQ, (b"te", b"trailers")], end_stream=True)
        await c.flush()
        await c.until(
            lambda: c.of(h2.events.StreamEnded, 7) and len(c.of(h2.events.StreamReset)) == 3
        )
        codes = {e.stream_id: e.error_code for e in c.of(h2.events.StreamReset)}  # type: ignore[attr-defined]
        assert codes == {
            1: ErrorCodes.PROTOCOL_ERROR,
            3: ErrorCodes.PROTOCOL_ERROR,
            5: ErrorCodes.PROTOCOL_ERROR,
        }
        assert len(seen) == 1 and seen[0].headers == [(b"te", b"trailers")]
        assert not c.of(h2.events.ConnectionTerminated)
        nursery.cancel_scope.cancel()


async def test_oversized_header_list_gets_431_on_that_stream_only() -> None:
    async with trio.open_nursery() as nursery:
        c = await run_server(nursery, echo, H2ServerSettings(max_header_list_size=16 * 1024))
        await c.until(lambda: c.of(h2.events.RemoteSettingsChanged))
        assert c.h2.remote_settings.max_header_list_size == 16 * 1024
        assert c.h2.remote_settings.max_concurrent_streams == 100
        c.h2.send_headers(1, [*REQ, (b"x-big", b"v" * 17 * 1024)], end_stream=True)
        c.h2.send_headers(3, REQ, end_stream=True)
        await c.flush()
        await c.until(lambda: len(c.of(h2.events.StreamEnded)) == 2)
        r1 = dict(c.of(h2.events.ResponseReceived, 1)[0].headers)  # type: ignore[attr-defined]
        r3 = dict(c.of(h2.events.ResponseReceived, 3)[0].headers)  # type: ignore[attr-defined]
        assert r1[b":status"] == b"431" and r3[b":status"] == b"200"
        assert not c.of(h2.events.ConnectionTerminated)
        nursery.cancel_scope.cancel()


async def test_max_concurrent_streams_refuses_excess() -> None:
    release = trio.Event()
    started = 0

    async def stalled(req: Request) -> Response:
        nonlocal started
        started += 1
        await release.wait()
        return Response(200)

    async with trio.open_nursery() as nursery:
        c = await run_server(nursery, stalled, H2ServerSettings(max_concurrent_streams=3))
        await c.until(lambda: c.of(h2.events.RemoteSettingsChanged))
        c.h2.remote_settings.max_concurrent_streams = 1000  # misbehave on purpose
        c.h2.remote_settings.acknowledge()
        ids = [1 + 2 * i for i in range(5)]
        for sid in ids:
            c.h2.send_headers(sid, REQ, end_stream=True)
        await c.flush()
        await c.until(lambda: len(c.of(h2.events.StreamReset)) == 2)
        assert {e.stream_id for e in c.of(h2.events.StreamReset)} == {7, 9}  # type: ignore[attr-defined]
        assert all(e.error_code == ErrorCodes.REFUSED_STREAM for e in c.of(h2.events.StreamReset))  # type: ignore[attr-defined]
        assert started == 3
        release.set()
        await c.until(lambda: len(c.of(h2.events.StreamEnded)) == 3)
        nursery.cancel_scope.cancel()


async def test_client_reset_cancels_service_and_fails_body() -> None:
    cancelled = trio.Event()
    body_error: list[BaseException] = []

    async def svc(req: Request) -> Response:
        try:
            await req.body.read()
            await req.body.read()
        except Exception as exc:
            body_error.append(exc)
            await trio.sleep_forever()
        finally:
            cancelled.set()
        raise AssertionError

    async with trio.open_nursery() as nursery:
        c = await run_server(nursery, svc)
        c.h2.send_headers(1, [(b":method", b"POST"), *REQ[1:]])
        c.h2.send_data(1, b"abc")
        await c.flush()
        await trio.testing.wait_all_tasks_blocked()
        c.h2.reset_stream(1, ErrorCodes.CANCEL)
        await c.flush()
        with trio.fail_after(5):
            await cancelled.wait()
        from linkerd_proxy.http.body import StreamReset

        assert isinstance(body_error[0], StreamReset) and body_error[0].code == ErrorCodes.CANCEL
        nursery.cancel_scope.cancel()


async def test_rapid_reset_gets_goaway_enhance_your_calm() -> None:
    started = 0

    async def slow(req: Request) -> Response:
        nonlocal started
        started += 1
        await trio.sleep_forever()
        raise AssertionError

    async with trio.open_nursery() as nursery:
        c = await run_server(nursery, slow, H2ServerSettings(max_client_resets=50))
        for i in range(1000):
            sid = 1 + 2 * i
            c.h2.send_headers(sid, REQ, end_stream=True)
            c.h2.reset_stream(sid, ErrorCodes.CANCEL)
        await c.flush()
        await c.until(lambda: c.of(h2.events.ConnectionTerminated), limit=2000)
        goaway = c.of(h2.events.ConnectionTerminated)[0]
        assert goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM  # type: ignore[attr-defined]
        assert started <= 51
        nursery.cancel_scope.cancel()


async def test_ping_flood_is_answered_without_unbounded_buffering() -> None:
    async with trio.open_nursery() as nursery:
        c = await run_server(nursery, echo, H2ServerSettings(max_send_buffer=16 * 1024))
        for i in range(5000):
            c.h2.ping(i.to_bytes(8, "big"))
        # Send the flood without reading: the server stops reading when its output
        # backs up, so our send_all below only finishes once we read too.
        data = c.h2.data_to_send()
        acks = 0
        async with trio.open_nursery() as inner:
            inner.start_soon(c.stream.send_all, data)
            with trio.fail_after(5):
                while acks < 5000:
                    await c.pump(flush=False)
                    acks = len(c.of(h2.events.PingAckReceived))
        assert acks == 5000
        nursery.cancel_scope.cancel()


async def test_keepalive_ping_timeout_closes_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    a, b = trio.testing.memory_stream_pair()
    settings = H2ServerSettings(keepalive_interval=10.0, keepalive_timeout=3.0)
    # A peer that completes the handshake and then never reads or acks.
    peer = Proto(h2.config.H2Configuration(client_side=True))
    peer.initiate_connection()
    await a.send_all(peer.data_to_send())
    start = trio.current_time()
    with trio.fail_after(60):
        await serve_h2(b, echo, settings=settings)
    assert 13.0 <= trio.current_time() - start <= 13.5


async def test_keepalive_acked_pings_keep_the_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        c = await run_server(
            nursery, echo, H2ServerSettings(keepalive_interval=10.0, keepalive_timeout=3.0)
        )
        with trio.move_on_after(100):
            while True:
                await c.pump()  # h2 acks the PINGs
        assert not c.eof
        assert len(c.of(h2.events.PingReceived)) >= 9
        nursery.cancel_scope.cancel()


async def test_drain_sends_goaway_lets_streams_finish_and_refuses_new() -> None:
    release = trio.Event()
    drain = Shutdown()

    async def svc(req: Request) -> Response:
        await release.wait()
        return Response(200, [], BytesBody(b"done"))

    async with trio.open_nursery() as nursery:
        c = await run_server(nursery, svc, drain=drain)
        c.h2.send_headers(1, REQ, end_stream=True)
        await c.flush()
        await trio.testing.wait_all_tasks_blocked()
        drain.trigger("test")
        await c.until(lambda: c.of(h2.events.ConnectionTerminated))
        goaway = c.of(h2.events.ConnectionTerminated)[0]
        assert goaway.error_code == ErrorCodes.NO_ERROR and goaway.last_stream_id == 1  # type: ignore[attr-defined]
        c.h2.send_headers(3, REQ, end_stream=True)  # sent before it saw the GOAWAY
        await c.flush()
        await c.until(lambda: c.of(h2.events.StreamReset, 3))
        assert c.of(h2.events.StreamReset, 3)[0].error_code == ErrorCodes.REFUSED_STREAM  # type: ignore[attr-defined]
        assert not c.eof
        release.set()
        await c.until(lambda: c.eof)
        body = b"".join(e.data for e in c.of(h2.events.DataReceived, 1))  # type: ignore[attr-defined]
        assert body == b"done"
        assert c.eof
