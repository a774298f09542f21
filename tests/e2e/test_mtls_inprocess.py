"""Identity and mTLS end to end, in-process: two proxies certified by the fake Identity service.

Proxy A (outbound) sends to a service whose endpoint discovery describes as meshed:
identity ``b.ns.serviceaccount.identity.linkerd.cluster.local`` and an opaque-transport
port (proxy B's inbound listener). A connects there over mTLS with ALPN
``transport.l5d.io/v1`` and writes the transport header; B reads it on its direct
path and forwards to the application. B sees A's identity: ``tls="true"`` and
``client_id`` in its metrics, ``l5d-client-id`` for the application.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import pytest
import trio

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
                    yield Pair(cp, a, b, seen)


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
