"""Traffic generators for the in-process proxy: one function per kind of traffic.

Part of the public test harness, used by the end-to-end metrics tests
(``tests/e2e/test_promtool.py``, ``tests/e2e/test_prometheus.py``) to make the proxy
export every family and label layout it can: a scrape taken after
:func:`run_every_kind` holds every series the proxy produces today.

:func:`open_traffic_proxy` starts the backends (an echo server, a server that resets
every connection, and a port where nothing listens) and a proxy whose original
destination is chosen per connection by the *client's source port*
(:class:`OrigDstRouter`): a generator binds its client socket first, says where that
connection "was going", then connects. So one proxy serves every kind at once.

Each generator checks what the client saw and raises :class:`TrafficError` if the
proxy did not behave, so a test cannot pass on traffic that silently failed.

To add a kind (HTTP/1, HTTP/2, gRPC, TLS ...): write ``async def kind(env) -> None``
here and add it to :data:`TRAFFIC_KINDS`; every test that runs
:func:`run_every_kind` picks it up.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import attrs
import trio

from linkerd_proxy.addrs import SocketAddr
from linkerd_proxy.app.config import Config
from linkerd_proxy.errors import OrigDstError
from linkerd_proxy.http.body import BytesBody
from linkerd_proxy.http.detect import Detected
from linkerd_proxy.http.h1.server import serve_h1
from linkerd_proxy.http.h2.client import open_h2_connection
from linkerd_proxy.http.h2.server import serve_h2
from linkerd_proxy.http.h2.settings import H2ClientSettings, H2ServerSettings
from linkerd_proxy.http.model import Request, Response
from linkerd_proxy.testing.proxy import RunningProxy, open_proxy
from linkerd_proxy.transport.detect_io import detect_protocol

LOCALHOST = ipaddress.IPv4Address("127.0.0.1")
#: An original destination outside INBOUND_IPS (TEST-NET-1, never reached).
FOREIGN_IP = ipaddress.IPv4Address("192.0.2.10")
#: Bound on each generated connection.
CONNECTION_TIMEOUT = 5.0


class TrafficError(AssertionError):
    """A generated connection did not see what the proxy should have done."""


class OrigDstRouter:
    """An ``orig_dst`` lookup answering per client source port.

    A client port with no route gets :class:`~linkerd_proxy.errors.OrigDstError`,
    as a connection that was not redirected by iptables would.
    """

    def __init__(self) -> None:
        self._routes: dict[int, SocketAddr] = {}

    def __call__(self, stream: trio.SocketStream) -> SocketAddr:
        port: int = stream.socket.getpeername()[1]
        try:
            return self._routes[port]
        except KeyError:
            raise OrigDstError(f"no original destination for client port {port}") from None

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
class TrafficEnv:
    """A proxy with its backends and router: what every generator takes."""

    proxy: RunningProxy
    router: OrigDstRouter
    backends: Backends


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


async def _http_ok(req: Request) -> Response:
    await req.body.read_all(1 << 20)
    status = int(req.path.rsplit("/", 1)[1]) if req.path.startswith("/status/") else 200
    return Response(status, [(b"content-type", b"text/plain")], BytesBody(b"ok"))


async def http_handler(stream: trio.SocketStream) -> None:
    """An HTTP/1 and HTTP/2 server: ``/status/N`` answers N, anything else 200 ``ok``."""
    detected, prefix = await detect_protocol(stream, timeout=CONNECTION_TIMEOUT)
    if detected is Detected.H2:
        await serve_h2(stream, _http_ok, settings=H2ServerSettings(), prefix=prefix)
    else:
        await serve_h1(stream, _http_ok, prefix=prefix)


def _dead_port() -> SocketAddr:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return SocketAddr(LOCALHOST, sock.getsockname()[1])


@contextlib.asynccontextmanager
async def open_traffic_proxy(config: Config | None = None) -> AsyncIterator[TrafficEnv]:
    """Start the backends and a proxy routed by :class:`OrigDstRouter`; yield them.

    ``INBOUND_IPS`` is set to 127.0.0.1 so that inbound traffic to the backends is
    accepted and traffic to :data:`FOREIGN_IP` is refused.
    """
    config = config or Config()
    config = attrs.evolve(config, inbound=attrs.evolve(config.inbound, ips=frozenset([LOCALHOST])))
    router = OrigDstRouter()
    async with trio.open_nursery() as nursery:
        backends = Backends(
            echo=await serve_tcp(nursery, echo_handler),
            reset=await serve_tcp(nursery, _reset),
            dead=_dead_port(),
            http=await serve_tcp(nursery, http_handler),
        )
        async with open_proxy(config, orig_dst=router) as proxy:
            yield TrafficEnv(proxy, router, backends)
        nursery.cancel_scope.cancel()


async def exchange(env: TrafficEnv, listener: SocketAddr, orig_dst: SocketAddr) -> None:
    """Send a payload through ``listener`` to the echo server ``orig_dst``, check the echo.

    Raises:
        TrafficError: what came back differs from what was sent.
        trio.TooSlowError: not done within :data:`CONNECTION_TIMEOUT`.
    """
    payload = b"metrics-e2e " * 100
    with trio.fail_after(CONNECTION_TIMEOUT):
        stream = await env.router.connect(listener, orig_dst)
        async with stream:
            await stream.send_all(payload)
            await stream.send_eof()
            got = bytearray()
            while chunk := await stream.receive_some(65536):
                got += chunk
    if got != payload:
        raise TrafficError(f"echo through {listener} returned {len(got)} of {len(payload)} bytes")


async def _refused(env: TrafficEnv, listener: SocketAddr, orig_dst: SocketAddr | None) -> None:
    """Connect and expect the proxy to close the connection without sending anything."""
    with trio.fail_after(CONNECTION_TIMEOUT):
        stream = await env.router.connect(listener, orig_dst)
        async with stream:
            with contextlib.suppress(trio.BrokenResourceError):
                await stream.send_all(b"hello?")
            try:
                got = await stream.receive_some(1024)
            except trio.BrokenResourceError:
                got = b""
    if got:
        raise TrafficError(f"{listener} -> {orig_dst}: expected a refusal, got {got!r}")


async def _reset_by_server(env: TrafficEnv, listener: SocketAddr) -> None:
    await _refused(env, listener, env.backends.reset)


async def outbound_tcp(env: TrafficEnv) -> None:
    """Opaque TCP forwarded by the outbound proxy to an echo server."""
    await exchange(env, env.proxy.addrs.outbound[0], env.backends.echo)


async def inbound_tcp(env: TrafficEnv) -> None:
    """Opaque TCP forwarded by the inbound proxy to an echo server (default policy)."""
    await exchange(env, env.proxy.addrs.inbound, env.backends.echo)


async def outbound_connect_refused(env: TrafficEnv) -> None:
    """Outbound to a closed port: ``outbound_tcp_errors_total{error="i/o"}``."""
    await _refused(env, env.proxy.addrs.outbound[0], env.backends.dead)


async def inbound_connect_refused(env: TrafficEnv) -> None:
    """Inbound to a closed port: ``inbound_tcp_errors_total{error="i/o"}``."""
    await _refused(env, env.proxy.addrs.inbound, env.backends.dead)


async def outbound_reset(env: TrafficEnv) -> None:
    """Outbound to a server that resets: ``tcp_close_total{errno="ECONNRESET"}``."""
    await _reset_by_server(env, env.proxy.addrs.outbound[0])


async def inbound_reset(env: TrafficEnv) -> None:
    """Inbound to a server that resets."""
    await _reset_by_server(env, env.proxy.addrs.inbound)


async def outbound_loop_refused(env: TrafficEnv) -> None:
    """Original destination = the outbound listener itself: refused (``unexpected``)."""
    await _refused(env, env.proxy.addrs.outbound[0], env.proxy.addrs.outbound[0])


async def outbound_no_orig_dst(env: TrafficEnv) -> None:
    """No original destination (not redirected): refused (``unexpected``)."""
    await _refused(env, env.proxy.addrs.outbound[0], None)


async def inbound_foreign_ip_refused(env: TrafficEnv) -> None:
    """Original destination outside ``INBOUND_IPS``: refused (``unexpected``)."""
    await _refused(env, env.proxy.addrs.inbound, SocketAddr(FOREIGN_IP, env.backends.echo.port))


async def inbound_direct_refused(env: TrafficEnv) -> None:
    """A direct connection (to the inbound port itself) without mTLS: refused."""
    await _refused(
        env, env.proxy.addrs.inbound, SocketAddr(LOCALHOST, env.proxy.addrs.inbound.port)
    )


async def _http1(env: TrafficEnv, listener: SocketAddr, orig_dst: SocketAddr, path: str) -> int:
    """One HTTP/1.1 request through ``listener``; returns the status code."""
    request = f"GET {path} HTTP/1.1\r\nHost: traffic.test\r\nConnection: close\r\n\r\n"
    with trio.fail_after(CONNECTION_TIMEOUT):
        stream = await env.router.connect(listener, orig_dst)
        async with stream:
            await stream.send_all(request.encode())
            got = bytearray()
            while chunk := await stream.receive_some(65536):
                got += chunk
    head = bytes(got).split(b"\r\n", 1)[0].split()
    if len(head) < 2 or not head[1].isdigit():
        raise TrafficError(f"no HTTP response through {listener}: {bytes(got[:80])!r}")
    return int(head[1])


async def _expect_status(
    env: TrafficEnv, listener: SocketAddr, orig_dst: SocketAddr, path: str, status: int
) -> None:
    got = await _http1(env, listener, orig_dst, path)
    if got != status:
        raise TrafficError(f"{path} through {listener}: expected {status}, got {got}")


async def outbound_http1(env: TrafficEnv) -> None:
    """HTTP/1.1 through the outbound proxy: a success and a 5xx failure."""
    await _expect_status(env, env.proxy.addrs.outbound[0], env.backends.http, "/ok", 200)
    await _expect_status(env, env.proxy.addrs.outbound[0], env.backends.http, "/status/503", 503)


async def inbound_http1(env: TrafficEnv) -> None:
    """HTTP/1.1 through the inbound proxy."""
    await _expect_status(env, env.proxy.addrs.inbound, env.backends.http, "/ok", 200)


async def outbound_http1_unreachable(env: TrafficEnv) -> None:
    """HTTP/1.1 to a port where nothing listens: a synthetic 502 and an error count."""
    await _expect_status(env, env.proxy.addrs.outbound[0], env.backends.dead, "/ok", 502)


async def outbound_http2(env: TrafficEnv) -> None:
    """HTTP/2 (prior knowledge) through the outbound proxy."""
    with trio.fail_after(CONNECTION_TIMEOUT):
        stream = await env.router.connect(env.proxy.addrs.outbound[0], env.backends.http)
        async with open_h2_connection(stream, H2ClientSettings()) as conn:
            req = Request("GET", "http", "traffic.test", "/ok", "HTTP/2")
            rsp = await conn(req)
            body = await rsp.body.read_all(1024)
    if rsp.status != 200 or body != b"ok":
        raise TrafficError(f"h2 through the outbound proxy: {rsp.status} {body!r}")


#: Every kind of traffic the proxy handles today, by name.
TRAFFIC_KINDS: dict[str, TrafficFn] = {
    "outbound_tcp": outbound_tcp,
    "inbound_tcp": inbound_tcp,
    "outbound_connect_refused": outbound_connect_refused,
    "inbound_connect_refused": inbound_connect_refused,
    "outbound_reset": outbound_reset,
    "inbound_reset": inbound_reset,
    "outbound_loop_refused": outbound_loop_refused,
    "outbound_no_orig_dst": outbound_no_orig_dst,
    "inbound_foreign_ip_refused": inbound_foreign_ip_refused,
    "inbound_direct_refused": inbound_direct_refused,
    "outbound_http1": outbound_http1,
    "inbound_http1": inbound_http1,
    "outbound_http1_unreachable": outbound_http1_unreachable,
    "outbound_http2": outbound_http2,
}


async def run_every_kind(env: TrafficEnv, rounds: int = 1) -> None:
    """Run each of :data:`TRAFFIC_KINDS` ``rounds`` times, kinds concurrently.

    Raises:
        TrafficError: a connection did not behave (the first one found).
    """
    for _ in range(rounds):
        async with trio.open_nursery() as nursery:
            for fn in TRAFFIC_KINDS.values():
                nursery.start_soon(fn, env)


async def run_paced(fn: TrafficFn, env: TrafficEnv, *, rate: float, duration: float) -> list[float]:
    """Start ``fn`` ``rate`` times a second for ``duration`` seconds, on a fixed schedule.

    Starts are scheduled on absolute deadlines (a late start does not shift the
    next ones) and run concurrently, so a slow connection does not lower the rate.

    Returns:
        The ``trio.current_time()`` of each start.

    Raises:
        TrafficError: a connection did not behave.
    """
    count = round(rate * duration)
    starts: list[float] = []
    async with trio.open_nursery() as nursery:
        t0 = trio.current_time()
        for i in range(count):
            await trio.sleep_until(t0 + i / rate)
            starts.append(trio.current_time())
            nursery.start_soon(fn, env)
    return starts
