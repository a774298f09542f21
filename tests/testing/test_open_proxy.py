"""The in-process proxy (``linkerd_proxy.testing.open_proxy``) over real loopback sockets.

These exercise the whole accept path of both directions: original destination,
INBOUND_IPS, the direct-port refusal, the outbound loop check, forwarding with
byte-exact copies and half-close, TCP metrics, error metrics, and graceful
shutdown.
"""

from __future__ import annotations

import functools
import ipaddress
import random
from collections.abc import AsyncIterator, Awaitable, Callable

import attrs
import pytest
import trio

from linkerd_proxy.addrs import SocketAddr
from linkerd_proxy.app.config import Config
from linkerd_proxy.testing import open_proxy

MIB = 1024 * 1024
Handler = Callable[[trio.SocketStream], Awaitable[None]]
LOCALHOST = ipaddress.IPv4Address("127.0.0.1")


async def _echo(stream: trio.SocketStream) -> None:
    async with stream:
        while data := await stream.receive_some(65536):
            await stream.send_all(data)
        await stream.send_eof()


async def _serve(nursery: trio.Nursery, handler: Handler) -> SocketAddr:
    listeners = await nursery.start(functools.partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    return SocketAddr(LOCALHOST, listeners[0].socket.getsockname()[1])


@pytest.fixture
async def echo_server(nursery: trio.Nursery) -> AsyncIterator[SocketAddr]:
    yield await _serve(nursery, _echo)


async def _exchange(addr: SocketAddr, payload: bytes) -> bytes:
    stream = await trio.open_tcp_stream(*addr.to_sockaddr())
    received = bytearray()
    async with stream:

        async def send() -> None:
            for off in range(0, len(payload), 65536):
                await stream.send_all(payload[off : off + 65536])
            await stream.send_eof()

        async with trio.open_nursery() as n:
            n.start_soon(send)
            while chunk := await stream.receive_some(65536):
                received.extend(chunk)
    return bytes(received)


async def _closed_without_data(addr: SocketAddr) -> bool:
    stream = await trio.open_tcp_stream(*addr.to_sockaddr())
    async with stream:
        with trio.fail_after(5):
            try:
                # Not HTTP, so that protocol detection decides at once.
                await stream.send_all(b"\x00\x01binary")
                return await stream.receive_some(1) == b""
            except trio.BrokenResourceError:
                return True


async def test_outbound_forwards_to_orig_dst_byte_exact(echo_server: SocketAddr) -> None:
    payload = random.Random(1).randbytes(MIB)
    async with open_proxy(orig_dst=echo_server) as proxy:
        assert await _exchange(proxy.addrs.outbound[0], payload) == payload
        scrape = await proxy.scrape()
    target = {"target_addr": str(echo_server)}
    assert scrape.duplicates() == []
    assert scrape.value("tcp_open_total", direction="outbound", peer="src", **target) == 1
    assert scrape.value("tcp_read_bytes_total", direction="outbound", peer="src", **target) == MIB
    assert scrape.value("tcp_write_bytes_total", direction="outbound", peer="dst", **target) == MIB
    assert scrape.value("tcp_read_bytes_total", direction="outbound", peer="dst", **target) == MIB
    assert scrape.value("tcp_close_total", direction="outbound", peer="dst", errno="") == 1
    assert scrape.value("tcp_open_connections", direction="outbound") == 0


async def test_inbound_forwards_and_labels_default_policy(echo_server: SocketAddr) -> None:
    config = Config()
    config = attrs.evolve(config, inbound=attrs.evolve(config.inbound, ips=frozenset([LOCALHOST])))
    async with open_proxy(config, orig_dst=echo_server) as proxy:
        # Not HTTP (a method token would be read as a partial HTTP/1 request line,
        # as the reference's httparse-based detection does).
        payload = b"\x00\x01binary" * 500
        assert await _exchange(proxy.addrs.inbound, payload) == payload
        scrape = await proxy.scrape()
    (sample,) = scrape.find("tcp_open_total", direction="inbound", peer="src")
    assert sample.labels == {
        "direction": "inbound",
        "peer": "src",
        "target_addr": str(echo_server),
        "target_ip": "127.0.0.1",
        "target_port": str(echo_server.port),
        "tls": "no_identity",
        "no_tls_reason": "no_tls_from_remote",
        "srv_group": "",
        "srv_kind": "default",
        "srv_name": "all-unauthenticated",
        "srv_port": str(echo_server.port),
    }
    assert scrape.value("tcp_open_total", direction="inbound", peer="dst", tls="no_identity") == 1


async def test_inbound_refuses_orig_dst_outside_inbound_ips(echo_server: SocketAddr) -> None:
    config = Config()
    other = ipaddress.IPv4Address("192.0.2.10")
    config = attrs.evolve(config, inbound=attrs.evolve(config.inbound, ips=frozenset([other])))
    async with open_proxy(config, orig_dst=echo_server) as proxy:
        assert await _closed_without_data(proxy.addrs.inbound)
        scrape = await proxy.scrape()
    assert scrape.value("inbound_tcp_errors_total", error="unexpected") == 1
    assert scrape.value("tcp_open_total", direction="inbound") == 0


async def test_inbound_direct_connection_without_identity_is_refused() -> None:
    # The original destination's port is the inbound port itself: a direct
    # (proxy-to-proxy) connection, which must be mTLS; standalone has no identity.
    def direct(stream: trio.SocketStream) -> SocketAddr:
        return SocketAddr.from_sockaddr(stream.socket.getsockname())

    async with open_proxy(orig_dst=direct) as proxy:
        assert await _closed_without_data(proxy.addrs.inbound)
        scrape = await proxy.scrape()
    assert scrape.value("inbound_tcp_errors_total", error="unexpected") == 1


async def test_outbound_refuses_a_loop_to_itself() -> None:
    def no_redirect(stream: trio.SocketStream) -> SocketAddr:
        return SocketAddr.from_sockaddr(stream.socket.getsockname())

    async with open_proxy(orig_dst=no_redirect) as proxy:
        assert await _closed_without_data(proxy.addrs.outbound[0])
        scrape = await proxy.scrape()
    assert scrape.value("outbound_tcp_errors_total", error="unexpected") == 1
    assert scrape.value("tcp_open_total") == 0


async def test_connect_refused_closes_client_and_counts_io_error() -> None:
    sock = trio.socket.socket()
    await sock.bind(("127.0.0.1", 0))
    dead = SocketAddr(LOCALHOST, sock.getsockname()[1])
    sock.close()  # nothing listens there now
    async with open_proxy(orig_dst=dead) as proxy:
        assert await _closed_without_data(proxy.addrs.outbound[0])
        scrape = await proxy.scrape()
    assert scrape.value("outbound_tcp_errors_total", error="i/o", target_addr=str(dead)) == 1
    assert scrape.value("tcp_close_total", direction="outbound", peer="src") == 1


async def test_half_close_passes_through(nursery: trio.Nursery) -> None:
    # The server answers only after the client's EOF.
    async def answer_after_eof(stream: trio.SocketStream) -> None:
        async with stream:
            got = b""
            while data := await stream.receive_some(1024):
                got += data
            await stream.send_all(b"got " + got)

    server = await _serve(nursery, answer_after_eof)
    async with open_proxy(orig_dst=server) as proxy:
        with trio.fail_after(5):
            assert await _exchange(proxy.addrs.outbound[0], b"abc") == b"got abc"


async def test_admin_endpoints_and_ready_at_once() -> None:
    async with open_proxy() as proxy:
        ready = await proxy.admin_request("GET", "/ready")
        assert (ready.status, ready.text) == (200, "ready\n")
        live = await proxy.admin_request("GET", "/live")
        assert (live.status, live.text) == (200, "live\n")
        assert (await proxy.admin_request("POST", "/shutdown")).status == 404
        scrape = await proxy.scrape()
        assert scrape.value("process_start_time_seconds") > 0
        assert list(scrape.find("proxy_build_info"))


async def test_shutdown_endpoint_drains_in_flight_stream(nursery: trio.Nursery) -> None:
    release = trio.Event()

    async def slow(stream: trio.SocketStream) -> None:
        async with stream:
            await release.wait()
            await stream.send_all(b"late but whole")

    server = await _serve(nursery, slow)
    config = attrs.evolve(Config(), shutdown_endpoint_enabled=True)
    async with open_proxy(config, orig_dst=server) as proxy:
        client = await trio.open_tcp_stream(*proxy.addrs.outbound[0].to_sockaddr())
        await client.send_all(b"\x00not http")  # decides detection: opaque TCP
        rsp = await proxy.admin_request("POST", "/shutdown")
        assert (rsp.status, rsp.text) == (200, "shutdown\n")
        assert proxy.shutdown.is_triggered
        # New connections are refused once the listeners have closed.
        with trio.fail_after(5):
            while True:
                try:
                    probe = await trio.open_tcp_stream(*proxy.addrs.outbound[0].to_sockaddr())
                except OSError:
                    break
                await probe.aclose()
                await trio.sleep(0.01)
        release.set()
        with trio.fail_after(5):
            got = b""
            while chunk := await client.receive_some(1024):
                got += chunk
        assert got == b"late but whole"
        await client.aclose()


async def test_grace_period_cancels_stuck_connections(nursery: trio.Nursery) -> None:
    async def never(stream: trio.SocketStream) -> None:
        async with stream:
            await trio.sleep_forever()

    server = await _serve(nursery, never)
    config = attrs.evolve(Config(), shutdown_grace_period=0.2)
    with trio.fail_after(5):
        async with open_proxy(config, orig_dst=server) as proxy:
            client = await trio.open_tcp_stream(*proxy.addrs.outbound[0].to_sockaddr())
            await trio.sleep(0.05)
        # The proxy has exited: the stuck connection was closed on us.
        assert await client.receive_some(10) == b""
        await client.aclose()
