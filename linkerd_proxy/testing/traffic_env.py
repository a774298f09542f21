"""The environment the traffic generators run in: backends, a meshed proxy and its peer.

Part of :mod:`linkerd_proxy.testing.traffic` (which re-exports everything here):
:func:`open_traffic_proxy` starts the backends, the fake control plane, the peer
proxy and the proxy under test, routed per client source port by
:class:`OrigDstRouter`. See that module's docstring for the whole picture.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import socket
import struct
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import attrs
import trio

from linkerd_proxy.addrs import SocketAddr
from linkerd_proxy.app.config import Config
from linkerd_proxy.errors import OrigDstError
from linkerd_proxy.http.body import BytesBody
from linkerd_proxy.http.detect import Detected
from linkerd_proxy.http.h1.server import serve_h1
from linkerd_proxy.http.h2.server import serve_h2
from linkerd_proxy.http.h2.settings import H2ServerSettings
from linkerd_proxy.http.model import Request, Response, header
from linkerd_proxy.testing.control.values import Endpoint
from linkerd_proxy.testing.control_plane import FakeControlPlane, open_control_plane
from linkerd_proxy.testing.proxy import RunningProxy, local_config, open_proxy
from linkerd_proxy.tls.identity_files import prepare_identity_dir
from linkerd_proxy.transport.detect_io import detect_protocol

LOCALHOST = ipaddress.IPv4Address("127.0.0.1")
#: A second loopback address: our inbound listens on every interface, and a
#: connection arriving on this one is routed like an iptables-redirected one.
LOCALHOST_2 = ipaddress.IPv4Address("127.0.0.2")
ANY = ipaddress.IPv4Address("0.0.0.0")
#: An original destination outside INBOUND_IPS (TEST-NET-1, never reached).
FOREIGN_IP = ipaddress.IPv4Address("192.0.2.10")
#: The SNI of the passthrough kind: a TLS server that is not this proxy.
FOREIGN_SNI = "foreign.example.com"
#: Bound on each generated connection.
CONNECTION_TIMEOUT = 5.0
#: Bound on starting the control plane and both proxies (identity issued).
STARTUP_TIMEOUT = 20.0

CP_NAME = "linkerd-identity.linkerd.serviceaccount.identity.linkerd.cluster.local"
MAIN_ID = "main.ns.serviceaccount.identity.linkerd.cluster.local"
PEER_ID = "peer.ns.serviceaccount.identity.linkerd.cluster.local"
#: Logical services (their IPs are the only ones in DESTINATION_PROFILE_NETWORKS,
#: so traffic to the backends' own addresses is forwarded without discovery).
PROFILE_NETWORKS = "127.0.0.96/30"
#: HTTP on the peer (ours -> peer, transport header, HTTP session protocol).
WEB = SocketAddr(ipaddress.IPv4Address("127.0.0.99"), 8080)
#: Opaque TCP on the peer (ours -> peer, transport header, no session protocol).
ECHO = SocketAddr(ipaddress.IPv4Address("127.0.0.98"), 7000)
#: HTTP on us, through our inbound's direct path (peer -> ours, transport header).
MAIN_DIRECT = SocketAddr(ipaddress.IPv4Address("127.0.0.97"), 8080)
#: HTTP on us, through our inbound's plain port (peer -> 127.0.0.2:<inbound port>).
MAIN_PLAIN = SocketAddr(ipaddress.IPv4Address("127.0.0.96"), 8080)
SERVICE_NAMES = {
    WEB: "web.ns.svc.cluster.local",
    ECHO: "echo.ns.svc.cluster.local",
    MAIN_DIRECT: "main-direct.ns.svc.cluster.local",
    MAIN_PLAIN: "main-plain.ns.svc.cluster.local",
}


class TrafficError(AssertionError):
    """A generated connection did not see what the proxy should have done."""


class OrigDstRouter:
    """An ``orig_dst`` lookup answering per client source port, else per local address.

    In order: a route for the client's source port (:meth:`connect`), a route for
    the address the connection arrived on (:attr:`local_routes`), the local
    address itself when its port is one of :attr:`direct_ports` (a proxy's
    inbound port: connections from other proxies take the direct path). Anything
    else gets :class:`~linkerd_proxy.errors.OrigDstError`, as a connection that
    was not redirected by iptables would.
    """

    def __init__(self) -> None:
        self._routes: dict[int, SocketAddr] = {}
        self.local_routes: dict[SocketAddr, SocketAddr] = {}
        self.direct_ports: set[int] = set()
        #: How many lookups each rule answered (``"port"``, ``"local"``, ``"direct"``).
        self.hits: dict[str, int] = {"port": 0, "local": 0, "direct": 0}

    def __call__(self, stream: trio.SocketStream) -> SocketAddr:
        port: int = stream.socket.getpeername()[1]
        if (route := self._routes.get(port)) is not None:
            self.hits["port"] += 1
            return route
        host, local_port = stream.socket.getsockname()[:2]
        local = SocketAddr(ipaddress.ip_address(host), local_port)
        if (route := self.local_routes.get(local)) is not None:
            self.hits["local"] += 1
            return route
        if local_port in self.direct_ports:
            self.hits["direct"] += 1
            return local
        raise OrigDstError(f"no original destination for client port {port}")

    async def connect(self, listener: SocketAddr, orig_dst: SocketAddr | None) -> trio.SocketStream:
        """Connect to ``listener`` as a client whose original destination is ``orig_dst``.

        ``None`` leaves the connection without one (the lookup fails).
        """
        sock = trio.socket.socket()
        try:
            await sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            if orig_dst is None:
                self._routes.pop(port, None)
            else:
                self._routes[port] = orig_dst
            await sock.connect(listener.to_sockaddr())
        except BaseException:
            sock.close()
            raise
        return trio.SocketStream(sock)


@attrs.frozen
class Backends:
    """Servers the generated traffic goes to."""

    echo: SocketAddr
    reset: SocketAddr
    dead: SocketAddr
    http: SocketAddr


@attrs.frozen
class Mesh:
    """The meshed side of a :class:`TrafficEnv`: the control plane and the peer proxy."""

    cp: FakeControlPlane
    peer: RunningProxy
    router: OrigDstRouter


@attrs.frozen
class TrafficEnv:
    """A proxy with its backends and router: what every generator takes.

    ``proxy`` is meshed (identity ``MAIN_ID``) and its inbound listens on every
    interface: connect to :attr:`inbound`, not ``proxy.addrs.inbound`` (0.0.0.0).
    """

    proxy: RunningProxy
    router: OrigDstRouter
    backends: Backends
    mesh: Mesh

    @property
    def inbound(self) -> SocketAddr:
        """Our inbound listener on 127.0.0.1 (the direct path's address)."""
        return SocketAddr(LOCALHOST, self.proxy.addrs.inbound.port)

    @property
    def outbound(self) -> SocketAddr:
        return self.proxy.addrs.outbound[0]


TrafficFn = Callable[[TrafficEnv], Awaitable[None]]


async def echo_handler(stream: trio.SocketStream) -> None:
    """Echo every byte back; shut down the write side after the client's EOF."""
    async with stream:
        while data := await stream.receive_some(65536):
            await stream.send_all(data)
        await stream.send_eof()


async def _reset(stream: trio.SocketStream) -> None:
    # Read the request, then close with SO_LINGER 0: the peer sees ECONNRESET.
    with contextlib.suppress(trio.BrokenResourceError):
        await stream.receive_some(1)
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    stream.socket.close()


async def serve_tcp(
    nursery: trio.Nursery, handler: Callable[[trio.SocketStream], Awaitable[None]]
) -> SocketAddr:
    """Serve ``handler`` on 127.0.0.1:0 in ``nursery``; return the bound address."""
    listeners = await nursery.start(functools.partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    return SocketAddr(LOCALHOST, listeners[0].socket.getsockname()[1])


#: The gRPC status the backend ends ``/grpc.Test/Fail`` with (UNAVAILABLE: a failure).
GRPC_FAIL_STATUS = 14
GRPC_MESSAGE = b"\x00\x00\x00\x00\x02hi"  # one uncompressed length-prefixed message


async def _http_ok(req: Request) -> Response:
    await req.body.read_all(1 << 20)
    if (header(req.headers, b"content-type") or b"").startswith(b"application/grpc"):
        code = GRPC_FAIL_STATUS if req.path.endswith("/Fail") else 0
        trailers = [(b"grpc-status", str(code).encode())]
        return Response(
            200, [(b"content-type", b"application/grpc")], BytesBody(GRPC_MESSAGE, trailers)
        )
    status = int(req.path.rsplit("/", 1)[1]) if req.path.startswith("/status/") else 200
    return Response(status, [(b"content-type", b"text/plain")], BytesBody(b"ok"))


async def http_handler(stream: trio.SocketStream) -> None:
    """An HTTP/1 and HTTP/2 server: ``/status/N`` answers N, anything else 200 ``ok``.

    A gRPC request (``content-type: application/grpc``) gets one message and a
    ``grpc-status`` trailer: ``14`` for a path ending in ``/Fail``, else ``0``.
    """
    detected, prefix = await detect_protocol(stream, timeout=CONNECTION_TIMEOUT)
    if detected is Detected.H2:
        await serve_h2(stream, _http_ok, settings=H2ServerSettings(), prefix=prefix)
    else:
        await serve_h1(stream, _http_ok, prefix=prefix)


def _dead_port() -> SocketAddr:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return SocketAddr(LOCALHOST, sock.getsockname()[1])


async def meshed_config(
    cp: FakeControlPlane, workdir: Path, identity: str, base: Config | None = None
) -> Config:
    """A configuration pointing at ``cp`` with identity ``identity`` (files in ``workdir``).

    Every listener is on 127.0.0.1:0 (:func:`~linkerd_proxy.testing.local_config`);
    ``base`` (default: the standalone defaults) supplies everything else except
    the control-plane and identity settings.
    """
    short = identity.split(".")[0]
    ident = workdir / short
    ident.mkdir()
    prepare_identity_dir(ident, identity)
    token = workdir / f"{short}.token"
    token.write_text("a-token")
    env = await cp.proxy_env()
    env.update(
        {
            "LINKERD2_PROXY_IDENTITY_DIR": str(ident),
            "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS": await cp.identity.trust_anchors_pem(),
            "LINKERD2_PROXY_IDENTITY_TOKEN_FILE": str(token),
            "LINKERD2_PROXY_IDENTITY_LOCAL_NAME": identity,
            "LINKERD2_PROXY_IDENTITY_SVC_NAME": CP_NAME,
            "LINKERD2_PROXY_DESTINATION_SVC_NAME": CP_NAME,
            "LINKERD2_PROXY_POLICY_SVC_NAME": CP_NAME,
            "LINKERD2_PROXY_DESTINATION_PROFILE_NETWORKS": PROFILE_NETWORKS,
        }
    )
    meshed = Config.from_env(env)
    if base is not None:
        meshed = attrs.evolve(
            base, identity=meshed.identity, destination=meshed.destination, policy=meshed.policy
        )
    return local_config(meshed)


async def wait_ready(proxy: RunningProxy, timeout: float = STARTUP_TIMEOUT) -> None:  # noqa: ASYNC109
    """Wait until ``proxy``'s ``/ready`` answers 200 (its identity is certified).

    Raises:
        trio.TooSlowError: not ready within ``timeout``.
    """
    with trio.fail_after(timeout):
        while (await proxy.admin_request("GET", "/ready")).status != 200:  # noqa: ASYNC110
            await trio.sleep(0.05)


async def _describe_services(
    cp: FakeControlPlane, backends: Backends, main_inbound: int, peer_inbound: int
) -> None:
    """Tell the fake Destination where each logical service's endpoints are."""
    for addr, fqn in SERVICE_NAMES.items():
        await cp.dst.profile(str(addr), fqn=fqn)
    endpoints = {
        WEB: Endpoint(backends.http, tls_identity=PEER_ID, opaque_port=peer_inbound),
        ECHO: Endpoint(
            backends.echo, tls_identity=PEER_ID, opaque_port=peer_inbound, protocol_hint="opaque"
        ),
        MAIN_DIRECT: Endpoint(backends.http, tls_identity=MAIN_ID, opaque_port=main_inbound),
        MAIN_PLAIN: Endpoint(SocketAddr(LOCALHOST_2, main_inbound), tls_identity=MAIN_ID),
    }
    for addr, endpoint in endpoints.items():
        await cp.dst.set_endpoints(f"{SERVICE_NAMES[addr]}:{addr.port}", [endpoint])


@contextlib.asynccontextmanager
async def open_traffic_proxy(config: Config | None = None) -> AsyncIterator[TrafficEnv]:
    """Start the backends, the fake control plane, a peer proxy and our proxy; yield them.

    Our proxy is routed by :class:`OrigDstRouter`; ``INBOUND_IPS`` is 127.0.0.1 so
    that inbound traffic to the backends is accepted and traffic to
    :data:`FOREIGN_IP` is refused. Both proxies are certified (``/ready``) before
    this yields. ``config`` supplies everything but the control-plane, identity
    and listener settings.

    Raises:
        trio.TooSlowError: a proxy was not ready within :data:`STARTUP_TIMEOUT`.
    """
    router, peer_router = OrigDstRouter(), OrigDstRouter()
    async with (
        trio.open_nursery() as nursery,
        open_control_plane() as cp,
        contextlib.AsyncExitStack() as stack,
    ):
        backends = Backends(
            echo=await serve_tcp(nursery, echo_handler),
            reset=await serve_tcp(nursery, _reset),
            dead=_dead_port(),
            http=await serve_tcp(nursery, http_handler),
        )
        await cp.policy.outbound_not_found()
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="traffic-")))
        main_config = await meshed_config(cp, tmp, MAIN_ID, config)
        main_config = attrs.evolve(
            main_config,
            inbound=attrs.evolve(
                main_config.inbound, ips=frozenset([LOCALHOST]), listen_addr=SocketAddr(ANY, 0)
            ),
        )
        peer_config = await meshed_config(cp, tmp, PEER_ID)
        peer = await stack.enter_async_context(open_proxy(peer_config, orig_dst=peer_router))
        proxy = await stack.enter_async_context(
            open_proxy(main_config, orig_dst=router, bind_locally=False)
        )
        main_inbound, peer_inbound = proxy.addrs.inbound.port, peer.addrs.inbound.port
        peer_router.direct_ports.add(peer_inbound)
        router.direct_ports.add(main_inbound)
        router.local_routes[SocketAddr(LOCALHOST_2, main_inbound)] = backends.http
        await _describe_services(cp, backends, main_inbound, peer_inbound)
        await wait_ready(peer)
        await wait_ready(proxy)
        yield TrafficEnv(proxy, router, backends, Mesh(cp, peer, peer_router))
        await stack.aclose()
        nursery.cancel_scope.cancel()
