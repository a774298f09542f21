"""ControlClient: TLS rule, DNS balancing, reconnecting watches, stream limits.

Real grpclib servers on loopback; real time with small values (the bridge's
asyncio side does not follow a trio MockClock), every wait bounded.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any

import pytest
import trio
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.server import Stream

from linkerd_proxy.addrs import IpAddr, NameAddr, SocketAddr
from linkerd_proxy.errors import ControlTlsRequired, GrpcError
from linkerd_proxy.grpc.bridge import RAW, Bridge
from linkerd_proxy.grpc.client import ControlClient, StreamLimits
from linkerd_proxy.grpc.dns import DnsResolver, DnsSettings
from linkerd_proxy.grpc.status import Code
from linkerd_proxy.transport.backoff import ExponentialBackoff

STREAM = "/test.Svc/Stream"
UNARY = "/test.Svc/Unary"
LOCAL = ipaddress.IPv4Address("127.0.0.1")
LOCAL2 = ipaddress.IPv4Address("127.0.0.2")
BACKOFF = ExponentialBackoff(0.02, 0.2)


class FakeDns:
    def __init__(self, *ips: IpAddr, failures: int = 0) -> None:
        self.ips = list(ips)
        self.failures = failures
        self.lookups = 0

    async def __call__(self, name: str) -> list[IpAddr]:
        self.lookups += 1
        if self.lookups <= self.failures:
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return list(self.ips)


def resolver(dns: FakeDns | None = None) -> DnsResolver:
    settings = DnsSettings(assumed_ttl=0.1, floor=0.05)
    return DnsResolver(settings, lookup=dns or FakeDns(LOCAL))


def loopback_client(bridge: Bridge, port: int, **kw: Any) -> ControlClient:
    kw.setdefault("backoff", BACKOFF)
    return ControlClient(bridge, SocketAddr(LOCAL, port), resolver=resolver(), **kw)


def tls_client(bridge: Bridge, tls: Any, port: int, dns: FakeDns, **kw: Any) -> ControlClient:
    kw.setdefault("backoff", BACKOFF)
    return ControlClient(
        bridge,
        NameAddr("ctl.test.", port),
        resolver=resolver(dns),
        ssl_context=tls.client,
        server_name=tls.name,
        **kw,
    )


class Calls:
    """What a server handler saw: call start times and cancellations."""

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.cancelled = 0
        self.changed = trio.Event()

    def start(self) -> int:
        self.starts.append(trio.current_time())
        self._kick()
        return len(self.starts) - 1

    def cancel(self) -> None:
        self.cancelled += 1
        self._kick()

    def _kick(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def wait_cancelled(self, count: int) -> None:
        while self.cancelled < count:
            await self.changed.wait()


# ------------------------------------------------------------------ TLS rule


async def test_plaintext_only_to_loopback(bridge: Bridge, tls: Any) -> None:
    refused = [
        NameAddr("linkerd-dst-headless.linkerd.svc.cluster.local.", 8086),
        SocketAddr(ipaddress.IPv4Address("10.0.0.1"), 8086),
        NameAddr("localhost", 8086),  # only the absolute name counts as loopback
    ]
    for addr in refused:
        with pytest.raises(ControlTlsRequired, match="TLS context is required"):
            ControlClient(bridge, addr, resolver=resolver(), backoff=BACKOFF)
        ControlClient(bridge, addr, resolver=resolver(), backoff=BACKOFF, ssl_context=tls.client)
    for addr in [
        SocketAddr(LOCAL, 8086),
        SocketAddr(ipaddress.IPv6Address("::1"), 8086),
        NameAddr("localhost.", 8086),
    ]:
        client = ControlClient(
            bridge, addr, resolver=resolver(), backoff=BACKOFF, limits=StreamLimits(0.1, 1, 2)
        )
        assert client.is_loopback
        assert client.limits == StreamLimits()  # CONTROL_STREAM_* do not apply to loopback


def test_stream_limits_are_validated() -> None:
    StreamLimits(1.0, 2.0, 3.0)
    StreamLimits(None, 2.0, None)
    with pytest.raises(ValueError, match="initial must not be greater than idle"):
        StreamLimits(3.0, 1.0, None)
    with pytest.raises(ValueError, match="idle must not be greater than lifetime"):
        StreamLimits(None, 3.0, 1.0)
    with pytest.raises(ValueError, match="positive"):
        StreamLimits(0.0, None, None)


# ------------------------------------------------------------------- watches


async def test_watch_reconnects_after_the_stream_ends(servers: Any, bridge: Bridge) -> None:
    calls = Calls()

    async def handler(stream: Stream[Any, Any]) -> None:
        n = calls.start()
        request = await stream.recv_message()
        await stream.send_message(request + b"%d-a" % n)
        await stream.send_message(request + b"%d-b" % n)

    srv = await servers.start(stream=handler)
    client = loopback_client(bridge, srv.port)
    got = []
    with trio.fail_after(5):
        async with client.open_stream(STREAM, b"r", RAW) as updates:
            async for item in updates:
                got.append((item.message, item.new_stream))
                if len(got) == 6:
                    break
    assert got == [
        (b"r0-a", True),
        (b"r0-b", False),
        (b"r1-a", True),
        (b"r1-b", False),
        (b"r2-a", True),
        (b"r2-b", False),
    ]
    # Each stream delivered, so the backoff restarted from its minimum each time.
    gaps = [b - a for a, b in zip(calls.starts, calls.starts[1:], strict=False)]
    assert all(gap >= 0.018 for gap in gaps), gaps


async def test_watch_retries_errors_with_growing_backoff(servers: Any, bridge: Bridge) -> None:
    calls = Calls()

    async def handler(stream: Stream[Any, Any]) -> None:
        n = calls.start()
        await stream.recv_message()
        if n < 4:
            raise GRPCError(Status.UNAVAILABLE, "try later")
        await stream.send_message(b"finally")
        await asyncio.sleep(30)

    srv = await servers.start(stream=handler)
    client = loopback_client(bridge, srv.port)
    with trio.fail_after(5):
        async with client.open_stream(STREAM, b"", RAW) as updates:
            item = await updates.receive()
    assert (item.message, item.new_stream) == (b"finally", True)
    gaps = [b - a for a, b in zip(calls.starts, calls.starts[1:], strict=False)]
    # Jitter-free delays 0.02, 0.04, 0.08, 0.16: each wait at least its base.
    for gap, base in zip(gaps, [0.02, 0.04, 0.08, 0.16], strict=True):
        assert gap >= base * 0.9, gaps


async def test_fatal_status_ends_the_watch(servers: Any, bridge: Bridge) -> None:
    calls = Calls()

    async def handler(stream: Stream[Any, Any]) -> None:
        calls.start()
        await stream.recv_message()
        raise GRPCError(Status.INVALID_ARGUMENT, "bad path")

    srv = await servers.start(stream=handler)
    client = loopback_client(bridge, srv.port)
    with trio.fail_after(5):
        async with client.open_stream(STREAM, b"", RAW) as updates:
            with pytest.raises(GrpcError) as info:
                await updates.receive()
            assert info.value.status == Code.INVALID_ARGUMENT
            assert [item async for item in updates] == []  # and nothing after
    assert len(calls.starts) == 1


async def test_server_going_away_reconnects(servers: Any, bridge: Bridge) -> None:
    async def first(stream: Stream[Any, Any]) -> None:
        await stream.recv_message()
        await stream.send_message(b"from-a")
        await asyncio.sleep(30)

    async def second(stream: Stream[Any, Any]) -> None:
        await stream.recv_message()
        await stream.send_message(b"from-b")
        await asyncio.sleep(30)

    srv_a = await servers.start(stream=first)
    client = loopback_client(bridge, srv_a.port)
    with trio.fail_after(5):
        async with client.open_stream(STREAM, b"", RAW) as updates:
            item = await updates.receive()
            assert (item.message, item.new_stream) == (b"from-a", True)
            await servers.stop(srv_a)
            # Refused attempts back off meanwhile; then a server is back on the port.
            await trio.sleep(0.3)
            await servers.start(stream=second, port=srv_a.port)
            item = await updates.receive()
            assert (item.message, item.new_stream) == (b"from-b", True)


async def test_leaving_the_block_cancels_the_server_stream(servers: Any, bridge: Bridge) -> None:
    calls = Calls()

    async def handler(stream: Stream[Any, Any]) -> None:
        calls.start()
        await stream.recv_message()
        await stream.send_message(b"x")
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            calls.cancel()
            raise

    srv = await servers.start(stream=handler)
    client = loopback_client(bridge, srv.port)
    with trio.fail_after(5):
        async with client.open_stream(STREAM, b"", RAW) as updates:
            assert (await updates.receive()).message == b"x"
        await calls.wait_cancelled(1)
    assert len(calls.starts) == 1


# -------------------------------------------------------------- stream limits


async def test_initial_timeout_fails_a_silent_stream(
    servers: Any, bridge: Bridge, tls: Any
) -> None:
    calls = Calls()

    async def handler(stream: Stream[Any, Any]) -> None:
        n = calls.start()
        await stream.recv_message()
        try:
            if n > 0:
                await stream.send_message(b"second")
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            calls.cancel()
            raise

    srv = await servers.start(stream=handler, ssl_context=tls.server)
    limits = StreamLimits(initial=0.15, idle=1.0, lifetime=5.0)
    client = tls_client(bridge, tls, srv.port, FakeDns(LOCAL), limits=limits)
    with trio.fail_after(5):
        async with client.open_stream(STREAM, b"", RAW) as updates:
            item = await updates.receive()
    assert (item.message, item.new_stream) == (b"second", True)
    assert calls.cancelled >= 1  # the silent stream was reset
    assert calls.starts[1] - calls.starts[0] >= 0.15


async def test_idle_timeout_recycles_the_stream(servers: Any, bridge: Bridge, tls: Any) -> None:
    calls = Calls()

    async def handler(stream: Stream[Any, Any]) -> None:
        n = calls.start()
        await stream.recv_message()
        try:
            await stream.send_message(b"%d" % n)
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            calls.cancel()
            raise

    srv = await servers.start(stream=handler, ssl_context=tls.server)
    limits = StreamLimits(initial=0.1, idle=0.2, lifetime=5.0)
    client = tls_client(bridge, tls, srv.port, FakeDns(LOCAL), limits=limits)
    with trio.fail_after(5):
        async with client.open_stream(STREAM, b"", RAW) as updates:
            first = await updates.receive()
            second = await updates.receive()
    assert [(first.message, first.new_stream), (second.message, second.new_stream)] == [
        (b"0", True),
        (b"1", True),
    ]
    assert calls.cancelled >= 1
    assert calls.starts[1] - calls.starts[0] >= 0.2


async def test_a_slow_consumer_does_not_make_a_stream_idle(
    servers: Any, bridge: Bridge, tls: Any
) -> None:
    calls = Calls()

    async def handler(stream: Stream[Any, Any]) -> None:
        n = calls.start()
        await stream.recv_message()
        for i in range(1000):
            await stream.send_message(b"%d-%d" % (n, i))
            await asyncio.sleep(0.01)

    srv = await servers.start(stream=handler, ssl_context=tls.server)
    limits = StreamLimits(initial=0.1, idle=0.1, lifetime=5.0)
    client = tls_client(bridge, tls, srv.port, FakeDns(LOCAL), limits=limits)
    got = []
    with trio.fail_after(5):
        async with client.open_stream(STREAM, b"", RAW, buffer=0) as updates:
            for _ in range(4):
                item = await updates.receive()
                got.append((item.message, item.new_stream))
                await trio.sleep(0.15)  # longer than the idle timeout
    assert got == [(b"0-0", True), (b"0-1", False), (b"0-2", False), (b"0-3", False)]
    assert len(calls.starts) == 1


async def test_watch_returns_when_the_consumer_goes_away(servers: Any, bridge: Bridge) -> None:
    calls = Calls()

    async def handler(stream: Stream[Any, Any]) -> None:
        calls.start()
        await stream.recv_message()
        try:
            for i in range(1000):
                await stream.send_message(b"%d" % i)
                await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            calls.cancel()
            raise

    srv = await servers.start(stream=handler)
    client = loopback_client(bridge, srv.port)
    send, recv = trio.open_memory_channel[Any](0)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.watch, STREAM, b"", RAW, send)
            async with recv:
                assert (await recv.receive()).message == b"0"
        # The nursery closed on its own: watch returned once its receiver was gone.
        await calls.wait_cancelled(1)
    assert len(calls.starts) == 1


async def test_lifetime_recycles_a_busy_stream(servers: Any, bridge: Bridge, tls: Any) -> None:
    calls = Calls()

    async def handler(stream: Stream[Any, Any]) -> None:
        n = calls.start()
        await stream.recv_message()
        for i in range(1000):
            await stream.send_message(b"%d-%d" % (n, i))
            await asyncio.sleep(0.02)

    srv = await servers.start(stream=handler, ssl_context=tls.server)
    limits = StreamLimits(initial=0.1, idle=0.1, lifetime=0.3)
    client = tls_client(bridge, tls, srv.port, FakeDns(LOCAL), limits=limits)
    got = []
    with trio.fail_after(5):
        async with client.open_stream(STREAM, b"", RAW) as updates:
            async for item in updates:
                got.append(item)
                if item.new_stream and len(got) > 1:
                    break
    assert got[-1].message == b"1-0"
    assert [g.message for g in got[:-1]] == [b"0-%d" % i for i in range(len(got) - 1)]
    assert len(got) - 1 >= 5  # the first stream was busy until its lifetime ended
    assert calls.starts[1] - calls.starts[0] >= 0.3


async def test_loopback_streams_have_no_limits(servers: Any, bridge: Bridge) -> None:
    calls = Calls()

    async def handler(stream: Stream[Any, Any]) -> None:
        calls.start()
        await stream.recv_message()
        await stream.send_message(b"only")
        await asyncio.sleep(30)

    srv = await servers.start(stream=handler)
    limits = StreamLimits(initial=0.05, idle=0.05, lifetime=0.1)
    client = loopback_client(bridge, srv.port, limits=limits)
    with trio.fail_after(5):
        async with client.open_stream(STREAM, b"", RAW) as updates:
            assert (await updates.receive()).message == b"only"
            with trio.move_on_after(0.4) as quiet:
                await updates.receive()
    assert quiet.cancelled_caught
    assert len(calls.starts) == 1


# -------------------------------------------------------------- DNS, balance


async def test_unary_calls_round_robin_over_dns_answers(
    servers: Any, bridge: Bridge, tls: Any
) -> None:
    seen: list[str] = []

    def answer(label: str) -> Any:
        async def handler(stream: Stream[Any, Any]) -> None:
            seen.append(label)
            await stream.send_message(await stream.recv_message())

        return handler

    srv = await servers.start(unary=answer("one"), ssl_context=tls.server)
    await servers.start(
        unary=answer("two"), host=str(LOCAL2), port=srv.port, ssl_context=tls.server
    )
    client = tls_client(bridge, tls, srv.port, FakeDns(LOCAL2, LOCAL))
    with trio.fail_after(5):
        for i in range(4):
            assert await client.unary(UNARY, b"%d" % i, RAW) == b"%d" % i
    assert seen == ["one", "two", "one", "two"]


async def test_dns_failure_waits_the_negative_ttl(servers: Any, bridge: Bridge, tls: Any) -> None:
    async def handler(stream: Stream[Any, Any]) -> None:
        await stream.recv_message()
        await stream.send_message(b"resolved")
        await asyncio.sleep(30)

    srv = await servers.start(stream=handler, ssl_context=tls.server)
    dns = FakeDns(LOCAL, failures=2)
    client = tls_client(bridge, tls, srv.port, dns)
    with trio.fail_after(5):
        with pytest.raises(GrpcError) as info:
            await client.unary(UNARY, b"", RAW)
        assert info.value.status == Code.UNAVAILABLE
        assert "ctl.test." in info.value.message
        start = trio.current_time()
        async with client.open_stream(STREAM, b"", RAW) as updates:
            assert (await updates.receive()).message == b"resolved"
    # The cached failure, then one more failed lookup, each held for the 0.1s TTL.
    assert trio.current_time() - start >= 0.15
    assert dns.lookups == 3
