"""Identity and mTLS end to end, in-process: two proxies certified by the fake Identity service.

Also the reference's identity.rs and direct.rs cases (SPEC.md section 9), which are
clearest here: idle TLS detection, TLS before certification and /ready, refresh,
``l5d-require-id``, spoofed ``l5d-client-id``, and the transport header with H2
and Opaque hints.

Proxy A (outbound) sends to a service whose endpoint discovery describes as meshed:
identity ``b.ns.serviceaccount.identity.linkerd.cluster.local`` and an opaque-transport
port (proxy B's inbound listener). A connects there over mTLS with ALPN
``transport.l5d.io/v1`` and writes the transport header; B reads it on its direct
path and forwards to the application. B sees A's identity: ``tls="true"`` and
``client_id`` in its metrics, ``l5d-client-id`` for the application.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import pytest
import trio
from cryptography import x509

from linkerd_proxy.addrs import SocketAddr
from linkerd_proxy.app.config import Config
from linkerd_proxy.testing import RunningProxy, open_proxy
from linkerd_proxy.testing.control.values import Endpoint
from linkerd_proxy.testing.control_plane import FakeControlPlane, open_control_plane
from linkerd_proxy.tls.identity_files import prepare_identity_dir
from linkerd_proxy.transport.orig_dst import local_addr_as_orig_dst

LOCALHOST = ipaddress.IPv4Address("127.0.0.1")
SERVICE = SocketAddr(ipaddress.IPv4Address("127.0.0.99"), 8080)
NAME = "web.ns.svc.cluster.local:8080"
CP_NAME = "linkerd-identity.linkerd.serviceaccount.identity.linkerd.cluster.local"
A_ID = "a.ns.serviceaccount.identity.linkerd.cluster.local"
B_ID = "b.ns.serviceaccount.identity.linkerd.cluster.local"
EXPIRY = "control_identity_cert_expiration_timestamp_seconds"
REFRESHES = "control_identity_cert_refreshes_total"


async def _app(seen: list[bytes], stream: trio.SocketStream) -> None:
    """An HTTP/1 app answering 200 with the l5d-client-id it saw."""
    async with stream:
        buf = b""
        while True:
            data = await stream.receive_some(65536)
            if not data:
                return
            buf += data
            while b"\r\n\r\n" in buf:
                head, buf = buf.split(b"\r\n\r\n", 1)
                seen.append(head)
                client_id = b""
                for line in head.split(b"\r\n")[1:]:
                    k, _, v = line.partition(b":")
                    if k.strip().lower() == b"l5d-client-id":
                        client_id = v.strip()
                await stream.send_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(client_id), client_id)
                )


async def _env(cp: FakeControlPlane, tmp: Path, name: str) -> dict[str, str]:
    ident = tmp / name.split(".")[0]
    ident.mkdir()
    prepare_identity_dir(ident, name)
    token = tmp / f"{name.split('.')[0]}.token"
    token.write_text("a-token")
    env = await cp.proxy_env()
    env.update(
        {
            "LINKERD2_PROXY_IDENTITY_DIR": str(ident),
            "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS": await cp.identity.trust_anchors_pem(),
            "LINKERD2_PROXY_IDENTITY_TOKEN_FILE": str(token),
            "LINKERD2_PROXY_IDENTITY_LOCAL_NAME": name,
            "LINKERD2_PROXY_IDENTITY_SVC_NAME": CP_NAME,
            "LINKERD2_PROXY_DESTINATION_SVC_NAME": CP_NAME,
            "LINKERD2_PROXY_POLICY_SVC_NAME": CP_NAME,
            "LINKERD2_PROXY_DESTINATION_PROFILE_NETWORKS": "127.0.0.0/8",
        }
    )
    return env


@attrs.frozen
class Pair:
    cp: FakeControlPlane
    a: RunningProxy
    b: RunningProxy
    seen: list[bytes]
    app: SocketAddr


@pytest.fixture
async def pair(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[Pair]:
    seen: list[bytes] = []
    listeners = await nursery.start(
        functools.partial(trio.serve_tcp, functools.partial(_app, seen), 0, host="127.0.0.1")
    )
    app = SocketAddr(LOCALHOST, listeners[0].socket.getsockname()[1])
    # Loopback control-plane addresses are plaintext (as in the reference), names or not.
    async with open_control_plane() as cp:
        await cp.policy.outbound_not_found()
        await cp.dst.profile(str(SERVICE), fqn="web.ns.svc.cluster.local")
        b_config = Config.from_env(await _env(cp, tmp_path, B_ID))
        with trio.fail_after(15):
            async with open_proxy(b_config, orig_dst=local_addr_as_orig_dst) as b:
                await cp.dst.set_endpoints(
                    NAME,
                    [Endpoint(app, tls_identity=B_ID, opaque_port=b.addrs.inbound.port)],
                )
                a_config = Config.from_env(await _env(cp, tmp_path, A_ID))
                async with open_proxy(a_config, orig_dst=SERVICE) as a:
                    yield Pair(cp, a, b, seen, app)


async def _get(addr: SocketAddr) -> tuple[int, bytes]:
    stream = await trio.open_tcp_stream(*addr.to_sockaddr())
    async with stream:
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: web\r\nl5d-client-id: spoofed\r\n\r\n")
        buf = b""
        while b"\r\n\r\n" not in buf or len(buf.split(b"\r\n\r\n", 1)[1]) < int(
            buf.lower().split(b"content-length: ")[1].split(b"\r\n")[0]
            if b"content-length: " in buf.lower()
            else 0
        ):
            data = await stream.receive_some(65536)
            if not data:
                break
            buf += data
    head, _, body = buf.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


async def test_meshed_request_is_mtls_with_the_client_identity(pair: Pair) -> None:
    with trio.fail_after(15):
        status, body = await _get(pair.a.addrs.outbound[0])
    assert status == 200, body
    assert body == A_ID.encode()  # the app saw A's identity, not the spoofed header
    assert all(b"spoofed" not in h for h in pair.seen)

    out = await pair.a.scrape()
    assert out.value("request_total", direction="outbound", tls="true", server_id=B_ID) == 1
    assert out.value("tcp_open_total", direction="outbound", peer="dst", tls="true") == 1
    inb = await pair.b.scrape()
    assert inb.value("request_total", direction="inbound", tls="true", client_id=A_ID) == 1
    assert (
        inb.value("tcp_open_total", direction="inbound", peer="src", tls="true", client_id=A_ID)
        == 1
    )
    assert inb.value("control_identity_cert_refreshes_total", result="ok") >= 1
    ready = await pair.b.admin_request("GET", "/ready")
    assert ready.status == 200


async def test_direct_connection_without_mtls_is_refused(pair: Pair) -> None:
    stream = await trio.open_tcp_stream(*pair.b.addrs.inbound.to_sockaddr())
    async with stream:
        await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        with trio.fail_after(15):
            assert await stream.receive_some(100) == b""


# --- identity.rs -------------------------------------------------------------------


async def _get_with(addr: SocketAddr, *headers: str) -> tuple[int, bytes]:
    """GET / through ``addr`` with extra header lines, on a connection closed after
    the response; (status, body), the body de-chunked if need be."""
    stream = await trio.open_tcp_stream(*addr.to_sockaddr())
    async with stream:
        extra = "".join(f"{h}\r\n" for h in headers)
        await stream.send_all(
            f"GET / HTTP/1.1\r\nHost: web\r\nconnection: close\r\n{extra}\r\n".encode()
        )
        buf = b""
        while data := await stream.receive_some(65536):
            buf += data
    head, _, body = buf.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head.lower():
        chunks, rest = [], body
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            chunks.append(rest[:size])
            rest = rest[size + 2 :]
        body = b"".join(chunks)
    return int(head.split(b" ")[1]), body


def _client_hello(server_name: str) -> bytes:
    """A real TLS ClientHello for ``server_name`` (from the ssl module)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    out = ssl.MemoryBIO()
    obj = ctx.wrap_bio(ssl.MemoryBIO(), out, server_hostname=server_name)
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read()


async def test_idle_tls_detection_does_not_block_other_connections(pair: Pair) -> None:
    """Connections to B's inbound that stay silent, or stop half-way through a
    ClientHello, wait in detection on their own: a meshed request from A goes
    through at once meanwhile (B's detect timeout is the default 10 s)."""
    hello = _client_hello(B_ID)
    idle = await trio.open_tcp_stream(*pair.b.addrs.inbound.to_sockaddr())
    partial = await trio.open_tcp_stream(*pair.b.addrs.inbound.to_sockaddr())
    async with idle, partial:
        await partial.send_all(hello[: len(hello) // 2])
        with trio.fail_after(2):
            status, body = await _get(pair.a.addrs.outbound[0])
        assert (status, body) == (200, A_ID.encode())
        with trio.move_on_after(0.2) as still_open:
            await partial.receive_some(1)
        assert still_open.cancelled_caught  # still waiting in detection, not refused


async def test_l5d_require_id_mismatch_is_a_502(pair: Pair) -> None:
    """``l5d-require-id`` naming B passes (and is not forwarded); naming anyone else
    fails with 502 before any connection to B."""
    with trio.fail_after(15):
        status, body = await _get_with(pair.a.addrs.outbound[0], f"l5d-require-id: {B_ID}")
        assert (status, body) == (200, A_ID.encode())
        assert all(b"l5d-require-id" not in h.lower() for h in pair.seen)
        served = len(pair.seen)
        status, _ = await _get_with(pair.a.addrs.outbound[0], "l5d-require-id: hey-its-me")
    assert status == 502
    assert len(pair.seen) == served
    out = await pair.a.scrape()
    assert out.value("outbound_http_errors_total", error="identity required") == 1


async def test_tls_is_refused_until_certified_and_ready_waits_for_certify(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    """With the Identity service failing, the proxy is not ready and serves no TLS
    (its inbound listener is bound but not served: a handshake naming its identity
    never completes); once Certify succeeds (the retry comes after
    IDENTITY_MIN_REFRESH), /ready is 200 and the same client completes a
    handshake with a certificate for that identity, chained to the anchors."""
    async with open_control_plane() as cp:
        await cp.identity.go_down()
        env = await _env(cp, tmp_path, B_ID)
        env["LINKERD2_PROXY_IDENTITY_MIN_REFRESH"] = "200ms"
        ports = {}
        for var in ("ADMIN", "INBOUND", "OUTBOUND", "CONTROL"):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                ports[var] = s.getsockname()[1]
            env[f"LINKERD2_PROXY_{var}_LISTEN_ADDR"] = f"127.0.0.1:{ports[var]}"
        admin = SocketAddr(LOCALHOST, ports["ADMIN"])
        inbound = SocketAddr(LOCALHOST, ports["INBOUND"])
        ctx = ssl.create_default_context(cadata=await cp.identity.trust_anchors_pem())
        ctx.check_hostname = False
        certified, done = trio.Event(), trio.Event()

        async def run_b() -> None:
            config = Config.from_env(env)
            async with open_proxy(config, orig_dst=local_addr_as_orig_dst, bind_locally=False):
                certified.set()
                await done.wait()

        nursery.start_soon(run_b)
        try:
            with trio.fail_after(15):
                while await cp.identity.certify_count() < 2:  # noqa: ASYNC110 (other loop)
                    await trio.sleep(0.01)
                assert (await _admin_get(admin, "/ready")) != 200
                with trio.move_on_after(1) as refused:
                    await _tls_handshake(inbound, ctx)
                assert refused.cancelled_caught, "TLS served before the proxy was certified"
                assert not certified.is_set()
                await cp.identity.come_up()
                await certified.wait()
                assert await _admin_get(admin, "/ready") == 200
                cert = await _tls_handshake(inbound, ctx)
        finally:
            done.set()
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == [B_ID]


async def _admin_get(addr: SocketAddr, path: str) -> int:
    """GET ``path`` from an admin server; the status."""
    stream = await trio.open_tcp_stream(*addr.to_sockaddr())
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: admin\r\n\r\n".encode())
        buf = b""
        while b"\r\n" not in buf:
            data = await stream.receive_some(65536)
            if not data:
                break
            buf += data
    return int(buf.split(b" ", 2)[1])


async def _tls_handshake(addr: SocketAddr, ctx: ssl.SSLContext) -> x509.Certificate:
    """Handshake with SNI = B's identity; the server's leaf."""
    tcp = await trio.open_tcp_stream(*addr.to_sockaddr())
    tls = trio.SSLStream(tcp, ctx, server_hostname=B_ID)
    try:
        with trio.fail_after(5):
            await tls.do_handshake()
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der)
    finally:
        await trio.aclose_forcefully(tls)


async def test_certificate_is_refreshed(tmp_path: Path) -> None:
    """3 s certificates: the proxy refreshes at 70 % of the remaining lifetime,
    again and again, each time with a later expiry."""
    async with open_control_plane(identity_lifetime=3.0) as cp:
        env = await _env(cp, tmp_path, B_ID)
        env["LINKERD2_PROXY_IDENTITY_MIN_REFRESH"] = "200ms"
        with trio.fail_after(15):
            async with open_proxy(Config.from_env(env), orig_dst=local_addr_as_orig_dst) as b:
                while (await b.scrape()).value(REFRESHES, result="ok") < 1:  # noqa: ASYNC110
                    await trio.sleep(0.05)
                first = (await b.scrape()).value(EXPIRY)
                while (await b.scrape()).value(REFRESHES, result="ok") < 2:  # noqa: ASYNC110
                    await trio.sleep(0.05)
                s = await b.scrape()
    assert s.value(EXPIRY) > first
    assert s.value(REFRESHES, result="error") == 0


# --- direct.rs ---------------------------------------------------------------------


@pytest.mark.parametrize("hint", ["h2", "opaque"])
async def test_transport_header_with_protocol_hints(pair: Pair, hint: str) -> None:
    """Through B's inbound port with the transport header. With the H2 hint the
    header names HTTP/2 and B serves the request itself (the app sees A's
    identity, B counts an mTLS request); with the Opaque hint it names no
    protocol and B forwards the bytes to the app untouched (no l5d-client-id, no
    inbound request)."""
    await pair.cp.dst.set_endpoints(
        NAME,
        [
            Endpoint(
                pair.app,
                tls_identity=B_ID,
                opaque_port=pair.b.addrs.inbound.port,
                protocol_hint=hint,  # type: ignore[arg-type]
            )
        ],
    )
    with trio.fail_after(15):
        status, body = await _get_with(pair.a.addrs.outbound[0])
    assert status == 200
    inb = await pair.b.scrape()
    requests = inb.value("request_total", direction="inbound", tls="true", client_id=A_ID)
    if hint == "h2":
        assert body == A_ID.encode() and requests == 1
    else:
        assert body == b"" and requests == 0
        assert inb.value("tcp_open_total", direction="inbound", tls="true", client_id=A_ID) == 1


async def test_tcp_half_close_passes_through_mtls(pair: Pair, nursery: trio.Nursery) -> None:
    """A meshed TCP client that shuts down its write side still gets the reply:
    A turns the client's FIN into close_notify, B turns that into a FIN to the
    app, and the app's answer and FIN come back the same way."""

    async def answer_after_eof(stream: trio.SocketStream) -> None:
        async with stream:
            request = b""
            with trio.fail_after(10):
                while data := await stream.receive_some(65536):
                    request += data
            await stream.send_all(b"got %d bytes: " % len(request) + request[::-1])

    listeners = await nursery.start(functools.partial(trio.serve_tcp, answer_after_eof, 0))
    app = SocketAddr(LOCALHOST, listeners[0].socket.getsockname()[1])
    await pair.cp.dst.set_endpoints(
        NAME,
        [
            Endpoint(
                app,
                tls_identity=B_ID,
                opaque_port=pair.b.addrs.inbound.port,
                protocol_hint="opaque",
            )
        ],
    )
    request = b"\x00not http " + bytes(range(256)) * 400  # ~100 KiB, opaque
    stream = await trio.open_tcp_stream(*pair.a.addrs.outbound[0].to_sockaddr())
    async with stream:
        with trio.fail_after(15):
            await stream.send_all(request)
            await stream.send_eof()
            reply = b""
            while data := await stream.receive_some(65536):
                reply += data
    assert reply == b"got %d bytes: " % len(request) + request[::-1]
    inb = await pair.b.scrape()
    assert inb.value("tcp_open_total", direction="inbound", tls="true", client_id=A_ID) == 1
