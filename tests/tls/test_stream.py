"""TlsStream over real loopback sockets, with the proxy's own TLS 1.3 contexts.

Both ends are certified by one test CA through ``IdentityStore`` (as the proxies
are). Interop runs against ``trio.SSLStream`` and a blocking stdlib ``ssl`` client.
"""

from __future__ import annotations

import datetime
import os
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from linkerd_proxy.identity.store import (
    TRANSPORT_ALPN,
    IdentityStore,
    check_server_identity,
    peer_identity,
)
from linkerd_proxy.testing.control.identity import TestCa
from linkerd_proxy.tls.client import connect_tls, negotiated_alpn
from linkerd_proxy.tls.server import terminate
from linkerd_proxy.tls.stream import TlsStream

A = "a.ns.serviceaccount.identity.linkerd.cluster.local"
B = "b.ns.serviceaccount.identity.linkerd.cluster.local"
MiB = 1024 * 1024

_CA = TestCa()


def _store(name: str, ca: TestCa = _CA) -> IdentityStore:
    key = ec.generate_private_key(ec.SECP256R1())
    store = IdentityStore(name, ca.trust_anchors_pem, key)
    leaf = ca.issue([name], key.public_key(), datetime.timedelta(days=1))
    now = time.time()
    store.set_certificate(
        leaf.public_bytes(serialization.Encoding.DER), ca.intermediates_der, now + 86400, now=now
    )
    return store


SERVER = _store(A)
CLIENT = _store(B)

StreamFactory = Callable[[trio.SocketStream], trio.abc.Stream]


async def _sockets() -> tuple[trio.SocketStream, trio.SocketStream]:
    """A connected loopback TCP pair: (client, server)."""
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    async with listener:
        port = listener.socket.getsockname()[1]
        client = await trio.open_tcp_stream("127.0.0.1", port)
        server = await listener.accept()
    return client, server


def _tls_client(sock: trio.SocketStream, alpn: tuple[str, ...] = ()) -> TlsStream:
    return TlsStream(sock, CLIENT.client_context(alpn=alpn), server_hostname=A)


def _tls_server(sock: trio.SocketStream) -> TlsStream:
    return TlsStream(sock, SERVER.server_context(), server_side=True)


@asynccontextmanager
async def _pair(
    make_client: StreamFactory = _tls_client, make_server: StreamFactory = _tls_server
) -> AsyncIterator[tuple[trio.abc.Stream, trio.abc.Stream]]:
    """Both ends of a loopback TLS connection, handshaken, closed on exit."""
    csock, ssock = await _sockets()
    client, server = make_client(csock), make_server(ssock)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            for end in (client, server):
                assert isinstance(end, (TlsStream, trio.SSLStream))
                nursery.start_soon(end.do_handshake)
    try:
        yield client, server
    finally:
        await trio.aclose_forcefully(client)
        await trio.aclose_forcefully(server)


async def _eof(stream: trio.abc.Stream) -> None:
    assert isinstance(stream, trio.abc.HalfCloseableStream)
    await stream.send_eof()


async def _read_exactly(stream: trio.abc.ReceiveStream, n: int) -> bytes:
    buf = bytearray()
    for _ in range(n):  # at least one byte per call
        if len(buf) >= n:
            break
        data = await stream.receive_some()
        assert data, f"EOF after {len(buf)} of {n} bytes"
        buf += data
    return bytes(buf)


async def _read_to_eof(stream: trio.abc.ReceiveStream, limit: int = 4 * MiB) -> bytes:
    buf = bytearray()
    while len(buf) <= limit:
        data = await stream.receive_some()
        if not data:
            return bytes(buf)
        buf += data
    raise AssertionError("no EOF")


async def test_handshake_alpn_and_peer_certificates() -> None:
    async with _pair(lambda s: _tls_client(s, (TRANSPORT_ALPN,))) as (client, server):
        assert isinstance(client, TlsStream) and isinstance(server, TlsStream)
        assert client.version() == server.version() == "TLSv1.3"
        assert client.selected_alpn_protocol() == server.selected_alpn_protocol()
        assert negotiated_alpn(client) == TRANSPORT_ALPN
        assert client.cipher() is not None
        assert check_server_identity(client, A) == A
        assert peer_identity(server) == B
        der = client.getpeercert(binary_form=True)
        assert der is not None
        x509.load_der_x509_certificate(der)
        await client.do_handshake()  # idempotent
        await client.send_all(b"ping")
        assert await server.receive_some() == b"ping"


async def test_connect_tls_and_terminate_return_tls_streams() -> None:
    csock, ssock = await _sockets()
    results: list[tuple[TlsStream, str | None]] = []

    async def serve() -> None:
        results.append(await terminate(ssock, b"", SERVER.server_context(), timeout=5))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        tls = await connect_tls(
            csock, CLIENT.client_context(), server_name=A, server_id=A, timeout=5
        )
    [(server, client_id)] = results
    assert isinstance(tls, TlsStream) and isinstance(server, TlsStream)
    assert client_id == B
    assert negotiated_alpn(tls) is None
    await tls.aclose()
    assert await server.receive_some() == b""  # aclose sent close_notify
    await server.aclose()


async def test_stalled_handshake_times_out_and_breaks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    csock, ssock = await _sockets()
    tls = _tls_client(csock)
    with pytest.raises(trio.TooSlowError):
        with trio.fail_after(10):
            await tls.do_handshake()  # the server never answers
    with pytest.raises(trio.BrokenResourceError):
        await tls.send_all(b"x")
    await tls.aclose()
    await ssock.aclose()


async def test_untrusted_server_fails_the_handshake() -> None:
    other = _store(A, TestCa())
    csock, ssock = await _sockets()
    client = _tls_client(csock)
    server = TlsStream(ssock, other.server_context(), server_side=True)

    async def serve() -> None:
        with pytest.raises(trio.BrokenResourceError):
            await server.do_handshake()  # the client's alert, not a bare EOF

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            with pytest.raises(trio.BrokenResourceError) as info:
                await client.do_handshake()
    assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)
    with pytest.raises(trio.BrokenResourceError):
        await client.receive_some()
    await client.aclose()
    await server.aclose()


async def test_one_mib_each_way_concurrently() -> None:
    up, down = os.urandom(MiB), os.urandom(MiB)
    async with _pair() as (client, server):
        got: dict[str, bytes] = {}

        async def receive(name: str, stream: trio.abc.Stream) -> None:
            got[name] = await _read_exactly(stream, MiB)

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(receive, "server", server)
                nursery.start_soon(receive, "client", client)
                nursery.start_soon(client.send_all, up)
                nursery.start_soon(server.send_all, down)
        assert got["server"] == up
        assert got["client"] == down


async def test_one_transport_read_returns_every_record_in_it() -> None:
    """trio.SSLStream returns one record (<= 16 KiB) per call; we return them all."""
    async with _pair() as (client, server):
        await client.send_all(b"a" * 60_000)  # 4 records, ~60 KiB on the wire
        with trio.fail_after(5):
            await trio.sleep(0.05)  # let loopback deliver all of it
            first = await server.receive_some(65536)
        assert len(first) > 16 * 1024
        rest = await _read_exactly(server, 60_000 - len(first))
        assert first + rest == b"a" * 60_000


async def test_many_small_writes_arrive_in_order_and_batched() -> None:
    messages = [b"%05d|" % i for i in range(500)]
    async with _pair() as (client, server):
        for m in messages:
            await client.send_all(m)
        await trio.sleep(0.05)  # every record is now in the server's socket
        with trio.fail_after(5):
            first = await server.receive_some()
            data = first + await _read_exactly(server, 3000 - len(first))
        assert data == b"".join(messages)
        assert len(first) > 1000  # many records per call, not one


async def test_receive_some_respects_max_bytes() -> None:
    async with _pair() as (client, server):
        await client.send_all(b"0123456789" * 100)
        with trio.fail_after(5):
            assert await server.receive_some(7) == b"0123456"
            assert await _read_exactly(server, 993) == (b"0123456789" * 100)[7:]


async def test_half_close_client_then_server() -> None:
    async with _pair() as (client, server):
        with trio.fail_after(5):
            await client.send_all(b"request")
            await _eof(client)
            await _eof(client)  # idempotent
            with pytest.raises(trio.ClosedResourceError):
                await client.send_all(b"more")
            assert await _read_to_eof(server) == b"request"
            assert await server.receive_some() == b""  # EOF stays EOF
            reply = os.urandom(300_000)

            async def answer() -> None:
                await server.send_all(reply)  # the server can still send after our EOF
                await _eof(server)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(answer)
                assert await _read_to_eof(client) == reply
            assert await client.receive_some() == b""


async def test_half_close_server_then_client() -> None:
    async with _pair() as (client, server):
        with trio.fail_after(5):
            await server.send_all(b"banner")
            await _eof(server)
            assert await _read_to_eof(client) == b"banner"
            await client.send_all(b"answer")
            await _eof(client)
            assert await _read_to_eof(server) == b"answer"


async def test_send_eof_with_unread_peer_data_inside_openssl() -> None:
    """close_notify while records we have not read yet sit in OpenSSL: they
    must still be delivered (CPython's unwrap would otherwise fail on them)."""
    early = os.urandom(50_000)
    async with _pair() as (client, server):
        with trio.fail_after(5):
            await server.send_all(early)
            await trio.sleep(0.05)
            head = await client.receive_some(100)  # the rest stays decrypted-pending
            await _eof(client)
            assert await _read_to_eof(server) == b""
            await server.send_all(b"late")
            await _eof(server)
            assert head + await _read_to_eof(client) == early + b"late"


async def test_peer_closing_tcp_without_close_notify_is_an_error() -> None:
    async with _pair() as (client, server):
        assert isinstance(server, TlsStream)
        await server.send_all(b"partial")
        await server.transport_stream.aclose()  # no close_notify
        with trio.fail_after(5):
            assert await client.receive_some() == b"partial"
            with pytest.raises(trio.BrokenResourceError):
                await client.receive_some()
        with pytest.raises(trio.BrokenResourceError):
            await client.send_all(b"x")


async def test_aclose_sends_close_notify_and_closes() -> None:
    async with _pair() as (client, server):
        await client.aclose()
        await client.aclose()  # idempotent
        with trio.fail_after(5):
            assert await server.receive_some() == b""
        for op in (client.receive_some(), client.send_all(b"x")):
            with pytest.raises(trio.ClosedResourceError):
                await op


async def test_cancelled_send_leaves_the_stream_broken() -> None:
    async with _pair() as (client, _server):
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                # 8 MiB cannot fit in the socket buffers while the server reads nothing.
                nursery.start_soon(client.send_all, b"x" * (8 * MiB))
                await trio.testing.wait_all_tasks_blocked()
                nursery.cancel_scope.cancel()
        with pytest.raises(trio.BrokenResourceError):
            await client.send_all(b"y")
        with pytest.raises(trio.BrokenResourceError):
            await client.receive_some()


async def test_cancelled_receive_leaves_the_stream_usable() -> None:
    async with _pair() as (client, server):
        with trio.move_on_after(0.05):
            await server.receive_some()
        await client.send_all(b"after")
        with trio.fail_after(5):
            assert await server.receive_some() == b"after"


async def test_concurrent_sends_or_receives_are_busy() -> None:
    async with _pair() as (client, _server):
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.send_all, b"x" * (8 * MiB))
                nursery.start_soon(client.receive_some)
                await trio.testing.wait_all_tasks_blocked()
                with pytest.raises(trio.BusyResourceError):
                    await client.send_all(b"y")
                with pytest.raises(trio.BusyResourceError):
                    await _eof(client)
                with pytest.raises(trio.BusyResourceError):
                    await client.receive_some()
                nursery.cancel_scope.cancel()


async def test_interop_with_trio_sslstream_both_ways() -> None:
    def trio_client(s: trio.SocketStream) -> trio.abc.Stream:
        return trio.SSLStream(s, CLIENT.client_context(), server_hostname=A)

    def trio_server(s: trio.SocketStream) -> trio.abc.Stream:
        return trio.SSLStream(s, SERVER.server_context(), server_side=True)

    payload = os.urandom(200_000)
    for make_client, make_server in ((trio_client, _tls_server), (_tls_client, trio_server)):
        async with _pair(make_client, make_server) as (client, server):
            with trio.fail_after(5):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(client.send_all, payload)
                    assert await _read_exactly(server, len(payload)) == payload
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(server.send_all, payload[::-1])
                    assert await _read_exactly(client, len(payload)) == payload[::-1]
                await client.aclose()  # close_notify from either implementation
                assert await server.receive_some() == b""


def _stdlib_client(port: int, request: bytes) -> tuple[bytes, str]:
    """A blocking stdlib client: send, read the reply, close_notify, then read
    what the server sends after it (the socket stays open for reading)."""
    ctx = CLIENT.client_context()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        tls = ctx.wrap_socket(raw, server_hostname=A)
        version = tls.version() or ""
        tls.sendall(request)
        reply = b""
        while len(reply) < len(request):
            reply += tls.recv(65536)
        tls.unwrap()  # sends close_notify, returns once the server's arrives
        return reply, version


async def test_interop_with_stdlib_ssl_client() -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    request = os.urandom(100_000)
    got: list[bytes] = []

    async def serve() -> None:
        server = _tls_server(await listener.accept())
        async with server:
            data = await _read_exactly(server, len(request))
            await server.send_all(data[::-1])
            got.append(await _read_to_eof(server))  # the client's close_notify
            await server.send_eof()

    with trio.fail_after(10):
        async with listener, trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            reply, version = await trio.to_thread.run_sync(_stdlib_client, port, request)
    assert reply == request[::-1]
    assert version == "TLSv1.3"
    assert got == [b""]
