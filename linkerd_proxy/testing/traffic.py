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

The proxy runs *meshed*: an in-process fake control plane
(:mod:`linkerd_proxy.testing.control_plane`) certifies it and a second in-process
proxy, the *peer*, so that mTLS flows both ways (:class:`Mesh`):

* ours -> peer: HTTP and opaque TCP over mTLS with the transport header (the
  services :data:`WEB` and :data:`ECHO`, whose endpoints name the peer's inbound
  port as their ``opaque_port``);
* peer -> ours: HTTP over mTLS on our inbound's *direct path* (transport header,
  :data:`MAIN_DIRECT`) and on a *plain port* (:data:`MAIN_PLAIN`, an endpoint at
  ``127.0.0.2:<our inbound port>`` that our router maps to the HTTP backend): the
  two paths of linkerd2#13821, which render the same labels;
* a TLS ClientHello for a foreign SNI to our inbound (passthrough,
  ``tls="opaque"``) and plaintext clients to our (meshed) inbound.

Each generator checks what the client saw and raises :class:`TrafficError` if the
proxy did not behave, so a test cannot pass on traffic that silently failed.

To add a kind (HTTP/1, HTTP/2, gRPC, TLS ...): write ``async def kind(env) -> None``
here and add it to :data:`TRAFFIC_KINDS`; every test that runs
:func:`run_every_kind` picks it up.
"""

from __future__ import annotations

import contextlib
import ssl

import trio

from linkerd_proxy.addrs import SocketAddr
from linkerd_proxy.http.body import BytesBody
from linkerd_proxy.http.h2.client import open_h2_connection
from linkerd_proxy.http.h2.settings import H2ClientSettings
from linkerd_proxy.http.model import Request, header
from linkerd_proxy.testing.traffic_env import (
    ANY,
    CONNECTION_TIMEOUT,
    CP_NAME,
    ECHO,
    FOREIGN_IP,
    FOREIGN_SNI,
    GRPC_FAIL_STATUS,
    GRPC_MESSAGE,
    LOCALHOST,
    LOCALHOST_2,
    MAIN_DIRECT,
    MAIN_ID,
    MAIN_PLAIN,
    PEER_ID,
    PROFILE_NETWORKS,
    SERVICE_NAMES,
    STARTUP_TIMEOUT,
    WEB,
    Backends,
    Mesh,
    OrigDstRouter,
    TrafficEnv,
    TrafficError,
    TrafficFn,
    echo_handler,
    http_handler,
    meshed_config,
    open_traffic_proxy,
    serve_tcp,
    wait_ready,
)


async def exchange(
    env: TrafficEnv,
    listener: SocketAddr,
    orig_dst: SocketAddr,
    router: OrigDstRouter | None = None,
    payload: bytes = b"metrics-e2e " * 100,
) -> None:
    """Send ``payload`` through ``listener`` to the echo server ``orig_dst``, check the echo.

    ``router`` is the listening proxy's (default: ours, ``env.router``).

    Raises:
        TrafficError: what came back differs from what was sent.
        trio.TooSlowError: not done within :data:`CONNECTION_TIMEOUT`.
    """
    with trio.fail_after(CONNECTION_TIMEOUT):
        stream = await (router or env.router).connect(listener, orig_dst)
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
    await exchange(env, env.outbound, env.backends.echo)


async def inbound_tcp(env: TrafficEnv) -> None:
    """Opaque TCP forwarded by the inbound proxy to an echo server (default policy)."""
    await exchange(env, env.inbound, env.backends.echo)


async def outbound_connect_refused(env: TrafficEnv) -> None:
    """Outbound to a closed port: ``outbound_tcp_errors_total{error="i/o"}``."""
    await _refused(env, env.outbound, env.backends.dead)


async def inbound_connect_refused(env: TrafficEnv) -> None:
    """Inbound to a closed port: ``inbound_tcp_errors_total{error="i/o"}``."""
    await _refused(env, env.inbound, env.backends.dead)


async def outbound_reset(env: TrafficEnv) -> None:
    """Outbound to a server that resets: ``tcp_close_total{errno="ECONNRESET"}``."""
    await _reset_by_server(env, env.outbound)


async def inbound_reset(env: TrafficEnv) -> None:
    """Inbound to a server that resets."""
    await _reset_by_server(env, env.inbound)


async def outbound_loop_refused(env: TrafficEnv) -> None:
    """Original destination = the outbound listener itself: refused (``unexpected``)."""
    await _refused(env, env.outbound, env.outbound)


async def outbound_no_orig_dst(env: TrafficEnv) -> None:
    """No original destination (not redirected): refused (``unexpected``)."""
    await _refused(env, env.outbound, None)


async def inbound_foreign_ip_refused(env: TrafficEnv) -> None:
    """Original destination outside ``INBOUND_IPS``: refused (``unexpected``)."""
    await _refused(env, env.inbound, SocketAddr(FOREIGN_IP, env.backends.echo.port))


async def inbound_direct_refused(env: TrafficEnv) -> None:
    """A direct connection (to the inbound port itself) without mTLS: refused."""
    await _refused(env, env.inbound, env.inbound)


async def _http1(
    env: TrafficEnv,
    listener: SocketAddr,
    orig_dst: SocketAddr,
    path: str,
    router: OrigDstRouter | None = None,
) -> int:
    """One HTTP/1.1 request through ``listener``; returns the status code."""
    request = f"GET {path} HTTP/1.1\r\nHost: traffic.test\r\nConnection: close\r\n\r\n"
    with trio.fail_after(CONNECTION_TIMEOUT):
        stream = await (router or env.router).connect(listener, orig_dst)
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
    env: TrafficEnv,
    listener: SocketAddr,
    orig_dst: SocketAddr,
    path: str,
    status: int,
    router: OrigDstRouter | None = None,
) -> None:
    got = await _http1(env, listener, orig_dst, path, router)
    if got != status:
        raise TrafficError(f"{path} through {listener}: expected {status}, got {got}")


async def outbound_http1(env: TrafficEnv) -> None:
    """HTTP/1.1 through the outbound proxy: a success and a 5xx failure."""
    await _expect_status(env, env.outbound, env.backends.http, "/ok", 200)
    await _expect_status(env, env.outbound, env.backends.http, "/status/503", 503)


async def inbound_http1(env: TrafficEnv) -> None:
    """HTTP/1.1 through the inbound proxy."""
    await _expect_status(env, env.inbound, env.backends.http, "/ok", 200)


async def outbound_http1_unreachable(env: TrafficEnv) -> None:
    """HTTP/1.1 to a port where nothing listens: a synthetic 502 and an error count."""
    await _expect_status(env, env.outbound, env.backends.dead, "/ok", 502)


async def outbound_http2(env: TrafficEnv) -> None:
    """HTTP/2 (prior knowledge) through the outbound proxy."""
    with trio.fail_after(CONNECTION_TIMEOUT):
        stream = await env.router.connect(env.outbound, env.backends.http)
        async with open_h2_connection(stream, H2ClientSettings()) as conn:
            req = Request("GET", "http", "traffic.test", "/ok", "HTTP/2")
            rsp = await conn(req)
            body = await rsp.body.read_all(1024)
    if rsp.status != 200 or body != b"ok":
        raise TrafficError(f"h2 through the outbound proxy: {rsp.status} {body!r}")


async def _grpc(
    env: TrafficEnv, listener: SocketAddr, orig_dst: SocketAddr, method: str, want: int
) -> None:
    """One unary gRPC-style call over HTTP/2; check the ``grpc-status`` trailer."""
    with trio.fail_after(CONNECTION_TIMEOUT):
        stream = await env.router.connect(listener, orig_dst)
        async with open_h2_connection(stream, H2ClientSettings()) as conn:
            headers = [(b"content-type", b"application/grpc"), (b"te", b"trailers")]
            req = Request(
                "POST",
                "http",
                "grpc.test",
                f"/grpc.Test/{method}",
                "HTTP/2",
                headers,
                BytesBody(GRPC_MESSAGE),
            )
            rsp = await conn(req)
            body = await rsp.body.read_all(1024)
            trailers = rsp.body.trailers or []
    got = header(trailers, b"grpc-status")
    if rsp.status != 200 or body != GRPC_MESSAGE or got != str(want).encode():
        raise TrafficError(f"grpc {method} through {listener}: {rsp.status} {got!r} {body!r}")


async def outbound_grpc(env: TrafficEnv) -> None:
    """gRPC through the outbound proxy: ``grpc-status`` 0 (success) and 14 (failure)."""
    await _grpc(env, env.outbound, env.backends.http, "Ok", 0)
    await _grpc(env, env.outbound, env.backends.http, "Fail", GRPC_FAIL_STATUS)


async def inbound_grpc(env: TrafficEnv) -> None:
    """gRPC from a plaintext client through the (meshed) inbound proxy."""
    await _grpc(env, env.inbound, env.backends.http, "Ok", 0)
    await _grpc(env, env.inbound, env.backends.http, "Fail", GRPC_FAIL_STATUS)


async def meshed_http(env: TrafficEnv) -> None:
    """HTTP/1 ours -> peer: mTLS to the peer's inbound port plus the transport header."""
    await _expect_status(env, env.outbound, WEB, "/ok", 200)


async def meshed_grpc(env: TrafficEnv) -> None:
    """gRPC ours -> peer over mTLS and the transport header (HTTP/2 session protocol)."""
    await _grpc(env, env.outbound, WEB, "Ok", 0)
    await _grpc(env, env.outbound, WEB, "Fail", GRPC_FAIL_STATUS)


async def meshed_tcp(env: TrafficEnv) -> None:
    """Opaque TCP ours -> peer over mTLS and the transport header.

    The echo is read back *before* the client's EOF: our mTLS stream cannot
    half-close (``transport/duplex.py`` ends the pair at the EOF), unlike the
    reference's (close_notify, then the peer keeps sending).
    """
    payload = b"meshed-tcp " * 100
    with trio.fail_after(CONNECTION_TIMEOUT):
        stream = await env.router.connect(env.outbound, ECHO)
        async with stream:
            await stream.send_all(payload)
            got = bytearray()
            while len(got) < len(payload) and (chunk := await stream.receive_some(65536)):
                got += chunk
            await stream.send_eof()
            rest = await stream.receive_some(65536)
    if got != payload or rest:
        raise TrafficError(
            f"meshed echo returned {len(got)} of {len(payload)} bytes, then {rest!r}"
        )


async def meshed_inbound_direct(env: TrafficEnv) -> None:
    """HTTP peer -> ours on our inbound's direct path (``tls="true"``, ``client_id``)."""
    peer = env.mesh.peer.addrs.outbound[0]
    await _expect_status(env, peer, MAIN_DIRECT, "/ok", 200, env.mesh.router)


async def meshed_inbound_port(env: TrafficEnv) -> None:
    """HTTP peer -> ours over mTLS on a plain inbound port (same labels as the direct path)."""
    peer = env.mesh.peer.addrs.outbound[0]
    await _expect_status(env, peer, MAIN_PLAIN, "/status/500", 500, env.mesh.router)


def client_hello(server_name: str) -> bytes:
    """The bytes of a real TLS ClientHello for ``server_name`` (from :mod:`ssl`)."""
    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


async def inbound_tls_passthrough(env: TrafficEnv) -> None:
    """TLS for a name that is not ours: forwarded opaque (``tls="opaque",sni=...``).

    The echo server plays the TLS server: the ClientHello must come back intact.
    """
    await exchange(env, env.inbound, env.backends.echo, payload=client_hello(FOREIGN_SNI))


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
    "outbound_grpc": outbound_grpc,
    "inbound_grpc": inbound_grpc,
    "meshed_http": meshed_http,
    "meshed_grpc": meshed_grpc,
    "meshed_tcp": meshed_tcp,
    "meshed_inbound_direct": meshed_inbound_direct,
    "meshed_inbound_port": meshed_inbound_port,
    "inbound_tls_passthrough": inbound_tls_passthrough,
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


__all__ = [
    "ANY",
    "CONNECTION_TIMEOUT",
    "CP_NAME",
    "ECHO",
    "FOREIGN_IP",
    "FOREIGN_SNI",
    "GRPC_FAIL_STATUS",
    "GRPC_MESSAGE",
    "LOCALHOST",
    "LOCALHOST_2",
    "MAIN_DIRECT",
    "MAIN_ID",
    "MAIN_PLAIN",
    "PEER_ID",
    "PROFILE_NETWORKS",
    "SERVICE_NAMES",
    "STARTUP_TIMEOUT",
    "TRAFFIC_KINDS",
    "WEB",
    "Backends",
    "Mesh",
    "OrigDstRouter",
    "TrafficEnv",
    "TrafficError",
    "TrafficFn",
    "client_hello",
    "echo_handler",
    "exchange",
    "http_handler",
    "inbound_connect_refused",
    "inbound_direct_refused",
    "inbound_foreign_ip_refused",
    "inbound_grpc",
    "inbound_http1",
    "inbound_reset",
    "inbound_tcp",
    "inbound_tls_passthrough",
    "meshed_config",
    "meshed_grpc",
    "meshed_http",
    "meshed_inbound_direct",
    "meshed_inbound_port",
    "meshed_tcp",
    "open_traffic_proxy",
    "outbound_connect_refused",
    "outbound_grpc",
    "outbound_http1",
    "outbound_http1_unreachable",
    "outbound_http2",
    "outbound_loop_refused",
    "outbound_no_orig_dst",
    "outbound_reset",
    "outbound_tcp",
    "run_every_kind",
    "run_paced",
    "serve_tcp",
    "wait_ready",
]
