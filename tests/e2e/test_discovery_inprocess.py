"""Outbound discovery end to end, in-process: the fake control plane over the real API.

The proxy runs with ``DESTINATION_SVC_ADDR`` and ``POLICY_SVC_ADDR`` pointing at the
fake control plane (loopback, plaintext). Its outbound connections go to a
"service IP" (127.0.0.99:8080) whose profile names ``web.ns.svc.cluster.local``;
``Destination.Get`` of that name lists the real backends, which the proxy balances
over.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Awaitable, Callable

import trio

from linkerd_proxy.addrs import SocketAddr
from linkerd_proxy.app.config import Config
from linkerd_proxy.testing import open_proxy
from linkerd_proxy.testing.control.values import Endpoint
from linkerd_proxy.testing.control_plane import open_control_plane

LOCALHOST = ipaddress.IPv4Address("127.0.0.1")
SERVICE = SocketAddr(ipaddress.IPv4Address("127.0.0.99"), 8080)
NAME = "web.ns.svc.cluster.local:8080"


def _backend(name: str, delay: float = 0.0) -> Callable[[trio.SocketStream], Awaitable[None]]:
    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            buf = b""
            while True:
                data = await stream.receive_some(65536)
                if not data:
                    return
                buf += data
                while b"\r\n\r\n" in buf:
                    _, buf = buf.split(b"\r\n\r\n", 1)
                    if delay:
                        await trio.sleep(delay)
                    body = name.encode()
                    await stream.send_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
                    )

    return handle


async def _serve(
    nursery: trio.Nursery, handler: Callable[[trio.SocketStream], Awaitable[None]]
) -> SocketAddr:
    listeners = await nursery.start(functools.partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    return SocketAddr(LOCALHOST, listeners[0].socket.getsockname()[1])


async def _get(proxy_addr: SocketAddr, n: int) -> list[str]:
    """``n`` keep-alive requests on one connection; the bodies (backend names)."""
    stream = await trio.open_tcp_stream(*proxy_addr.to_sockaddr())
    names = []
    async with stream:
        buf = b""
        for _ in range(n):
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n")
            while True:
                head, sep, rest = buf.partition(b"\r\n\r\n")
                if sep:
                    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                    if len(rest) >= length:
                        status = head.split(b" ", 2)[1].decode()
                        names.append(rest[:length].decode() if status == "200" else status)
                        buf = rest[length:]
                        break
                data = await stream.receive_some(65536)
                assert data, "connection closed"
                buf += data
    return names


async def test_balances_over_destination_endpoints(nursery: trio.Nursery) -> None:
    backends = {name: await _serve(nursery, _backend(name)) for name in ("a", "b", "c")}
    async with open_control_plane() as cp:
        env = await cp.proxy_env()
        env["LINKERD2_PROXY_DESTINATION_PROFILE_NETWORKS"] = "127.0.0.0/8"
        env.pop("LINKERD2_PROXY_IDENTITY_SVC_ADDR")
        await cp.dst.profile(str(SERVICE), fqn="web.ns.svc.cluster.local")
        await cp.policy.outbound_not_found()
        await cp.dst.set_endpoints(NAME, [Endpoint(addr) for addr in backends.values()])
        config = Config.from_env(env)
        async with open_proxy(config, orig_dst=SERVICE) as proxy:
            with trio.fail_after(20):
                seen = await _get(proxy.addrs.outbound[0], 60)
            assert set(seen) == {"a", "b", "c"}, seen
            # Remove two endpoints: traffic moves to the last one only.
            await cp.dst.remove(NAME, [backends["a"], backends["b"]])
            await trio.sleep(0.3)
            with trio.fail_after(20):
                after = await _get(proxy.addrs.outbound[0], 20)
            assert set(after) == {"c"}, after
            scrape = await proxy.scrape()
            assert scrape.value("request_total", direction="outbound", authority=NAME) == 80
            dst_labels = [s.labels for s in scrape.find("request_total", direction="outbound")]
            assert all(lbl.get("authority") == NAME for lbl in dst_labels), dst_labels


async def test_no_endpoints_fails_fast_with_504(nursery: trio.Nursery) -> None:
    async with open_control_plane() as cp:
        env = await cp.proxy_env()
        env["LINKERD2_PROXY_DESTINATION_PROFILE_NETWORKS"] = "127.0.0.0/8"
        env["LINKERD2_PROXY_OUTBOUND_HTTP_FAILFAST_TIMEOUT"] = "500ms"
        env.pop("LINKERD2_PROXY_IDENTITY_SVC_ADDR")
        await cp.dst.profile(str(SERVICE), fqn="web.ns.svc.cluster.local")
        await cp.policy.outbound_not_found()
        await cp.dst.no_endpoints(NAME, exists=True)
        async with open_proxy(Config.from_env(env), orig_dst=SERVICE) as proxy:
            with trio.fail_after(10):
                assert await _get(proxy.addrs.outbound[0], 1) == ["504"]


async def test_outside_profile_networks_forwards_to_orig_dst(nursery: trio.Nursery) -> None:
    direct = await _serve(nursery, _backend("direct"))
    async with open_control_plane() as cp:
        env = await cp.proxy_env()
        env["LINKERD2_PROXY_DESTINATION_PROFILE_NETWORKS"] = "10.0.0.0/8"
        env.pop("LINKERD2_PROXY_IDENTITY_SVC_ADDR")
        await cp.policy.outbound_not_found()
        async with open_proxy(Config.from_env(env), orig_dst=direct) as proxy:
            with trio.fail_after(10):
                assert await _get(proxy.addrs.outbound[0], 3) == ["direct"] * 3
        assert await cp.dst.profile_count(str(direct)) == 0
