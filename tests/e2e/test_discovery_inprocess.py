"""Outbound discovery end to end, in-process: the fake control plane over the real API.

The proxy runs with ``DESTINATION_SVC_ADDR`` and ``POLICY_SVC_ADDR`` pointing at the
fake control plane (loopback, plaintext). Its outbound connections go to a
"service IP" (127.0.0.99:8080) whose profile names ``web.ns.svc.cluster.local``;
``Destination.Get`` of that name lists the real backends, which the proxy balances
over.

The cases of the reference's ``discovery.rs`` (SPEC.md section 9) follow the
first three tests, each with an HTTP/1.1 client using ``Host`` and one using
absolute URIs.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import trio

from linkerd_proxy.addrs import SocketAddr
from linkerd_proxy.app.config import Config
from linkerd_proxy.grpc.status import Code
from linkerd_proxy.testing import RunningProxy, open_proxy
from linkerd_proxy.testing.control.values import Endpoint
from linkerd_proxy.testing.control_plane import FakeControlPlane, open_control_plane

LOCALHOST = ipaddress.IPv4Address("127.0.0.1")
SERVICE = SocketAddr(ipaddress.IPv4Address("127.0.0.99"), 8080)
NAME = "web.ns.svc.cluster.local:8080"


def _backend(
    name: str, delay: float = 0.0, hits: list[str] | None = None
) -> Callable[[trio.SocketStream], Awaitable[None]]:
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
                    if hits is not None:
                        hits.append(name)
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


async def _get(proxy_addr: SocketAddr, n: int, mode: str = "h1") -> list[str]:
    """``n`` keep-alive requests on one connection; the bodies (backend names), or the
    status of a response other than 200. ``mode`` "h1-absolute" uses absolute URIs."""
    if mode == "h1-absolute":
        request = f"GET http://{NAME}/ HTTP/1.1\r\nHost: {NAME}\r\n\r\n".encode()
    else:
        request = b"GET / HTTP/1.1\r\nHost: web\r\n\r\n"
    stream = await trio.open_tcp_stream(*proxy_addr.to_sockaddr())
    names = []
    async with stream:
        buf = b""
        for _ in range(n):
            await stream.send_all(request)
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


# --- the discovery.rs cases -------------------------------------------------------------

MODES = ["h1", "h1-absolute"]
FQN = "web.ns.svc.cluster.local"
FAILFAST = 0.5


@contextlib.asynccontextmanager
async def _meshed(
    orig_dst: SocketAddr = SERVICE, *, failfast: float = FAILFAST, cp_down: bool = False
) -> AsyncIterator[tuple[FakeControlPlane, RunningProxy]]:
    """A control plane whose profile of ``orig_dst`` names :data:`FQN`, and a proxy using it
    (policy not found: the proxy synthesizes its default). ``cp_down``: the control plane
    is stopped before the proxy starts."""
    async with open_control_plane() as cp:
        env = await cp.proxy_env()
        env["LINKERD2_PROXY_DESTINATION_PROFILE_NETWORKS"] = "127.0.0.0/8"
        env["LINKERD2_PROXY_OUTBOUND_HTTP_FAILFAST_TIMEOUT"] = f"{int(failfast * 1000)}ms"
        env.pop("LINKERD2_PROXY_IDENTITY_SVC_ADDR")
        await cp.dst.profile(str(orig_dst), fqn=FQN)
        await cp.policy.outbound_not_found()
        if cp_down:
            await cp.stop()
        async with open_proxy(Config.from_env(env), orig_dst=orig_dst) as proxy:
            yield cp, proxy


async def _one(proxy: RunningProxy, mode: str) -> str:
    """One request on a new connection: the body, a status, or "reset"."""
    with trio.fail_after(10):
        try:
            return (await _get(proxy.addrs.outbound[0], 1, mode))[0]
        except trio.BrokenResourceError:
            return "reset"


@pytest.mark.parametrize("mode", MODES)
async def test_dst_resolutions_are_cached(nursery: trio.Nursery, mode: str) -> None:
    backend = await _serve(nursery, _backend("a"))
    async with _meshed() as (cp, proxy):
        await cp.dst.set_endpoints(NAME, [Endpoint(backend)])
        assert await _one(proxy, mode) == "a"
        assert await _one(proxy, mode) == "a"  # a second connection, same destination
        assert await cp.dst.profile_count(str(SERVICE)) == 1
        assert await cp.dst.get_count(NAME) == 1


@pytest.mark.parametrize("mode", MODES)
async def test_reconnects_if_controller_stream_ends(nursery: trio.Nursery, mode: str) -> None:
    backend = await _serve(nursery, _backend("a"))
    async with _meshed() as (cp, proxy):
        await cp.dst.set_endpoints(NAME, [Endpoint(backend)])
        assert await _one(proxy, mode) == "a"
        assert await cp.dst.fail_streams(NAME, code=Code.OK) == 1
        with trio.fail_after(5):
            await cp.dst.wait_for_gets(NAME, 2)
        assert await _one(proxy, mode) == "a"


@pytest.mark.parametrize("exists", [True, False], ids=["no-endpoints", "does-not-exist"])
@pytest.mark.parametrize("mode", MODES)
async def test_fails_fast_with_504_and_no_fallback(
    nursery: trio.Nursery, mode: str, exists: bool
) -> None:
    hits: list[str] = []
    orig = await _serve(nursery, _backend("orig", hits=hits))
    async with _meshed(orig) as (cp, proxy):
        await cp.dst.no_endpoints(NAME.replace("8080", str(orig.port)), exists=exists)
        start = trio.current_time()
        assert await _one(proxy, mode) == "504"
        assert trio.current_time() - start >= FAILFAST * 0.9
    assert hits == [], "the original destination must not be used"


@pytest.mark.parametrize("mode", MODES)
async def test_falls_back_to_orig_dst_after_invalid_argument(
    nursery: trio.Nursery, mode: str
) -> None:
    orig = await _serve(nursery, _backend("orig"))
    async with _meshed(orig) as (cp, proxy):
        await cp.dst.profile_not_found(str(orig), code=Code.INVALID_ARGUMENT)
        assert await _one(proxy, mode) == "orig"
        assert await cp.dst.profile_count(str(orig)) == 1


@pytest.mark.parametrize("exists", [True, False], ids=["then-empty", "then-dne"])
@pytest.mark.parametrize("mode", MODES)
async def test_destinations_reset_on_reconnect(
    nursery: trio.Nursery, mode: str, exists: bool
) -> None:
    """After the stream is re-established, its first message replaces the set: an
    empty set (or a name that no longer exists) means 504, not the stale endpoint."""
    backend = await _serve(nursery, _backend("a"))
    async with _meshed() as (cp, proxy):
        await cp.dst.set_endpoints(NAME, [Endpoint(backend)])
        assert await _one(proxy, mode) == "a"
        await cp.stop()
        await cp.dst.no_endpoints(NAME, exists=exists)
        await cp.start()
        with trio.fail_after(5):
            await cp.dst.wait_for_gets(NAME, 2)
            while await cp.dst.active_gets(NAME) < 1:  # noqa: ASYNC110 (the fake's state)
                await trio.sleep(0.01)
        await trio.sleep(0.1)  # the reset reaches the balancer
        assert await _one(proxy, mode) == "504"


@pytest.mark.parametrize("mode", MODES)
async def test_silent_destination_times_out_with_504(nursery: trio.Nursery, mode: str) -> None:
    backend = await _serve(nursery, _backend("a"))
    async with _meshed() as (cp, proxy):
        await cp.dst.set_endpoints(NAME, [Endpoint(backend)])
        await cp.dst.go_silent(NAME)
        assert await _one(proxy, mode) == "504"
        assert await cp.dst.get_count(NAME) == 1


@pytest.mark.parametrize("mode", MODES)
async def test_control_connect_errors_are_retried(nursery: trio.Nursery, mode: str) -> None:
    """The control plane is down when the first connection comes: with no discovery
    answer within the fail-fast timeout the connection is refused (reset, as discovery
    runs before protocol detection). Then it comes up: the proxy's retries reach it
    and requests succeed."""
    backend = await _serve(nursery, _backend("a"))
    async with _meshed(cp_down=True) as (cp, proxy):
        await cp.dst.set_endpoints(NAME, [Endpoint(backend)])
        assert await _one(proxy, mode) == "reset"
        assert await cp.dst.profile_count(str(SERVICE)) == 0
        await cp.start()
        seen = []
        with trio.fail_after(10):
            for _ in range(40):  # the control backoff is 0.1 s doubling: a few seconds
                seen.append(await _one(proxy, mode))
                if seen[-1] == "a":
                    break
                await trio.sleep(0.2)
        assert seen[-1] == "a", seen


async def _serve_stoppable(
    handler: Callable[[trio.SocketStream], Awaitable[None]],
    *,
    task_status: trio.TaskStatus[tuple[SocketAddr, trio.CancelScope]] = trio.TASK_STATUS_IGNORED,
) -> None:
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            addr = await _serve(nursery, handler)
            task_status.started((addr, scope))


async def test_balancer_waits_for_ready_endpoint(nursery: trio.Nursery) -> None:
    """linkerd2#2550: the only endpoint dies without discovery knowing; a request
    waits in the balancer (it does not fail at once) and goes to the endpoint that
    discovery adds next."""
    alpha, stop_alpha = await nursery.start(_serve_stoppable, _backend("alpha"))
    beta = await _serve(nursery, _backend("beta"))
    async with _meshed(failfast=5.0) as (cp, proxy):
        await cp.dst.set_endpoints(NAME, [Endpoint(alpha)])
        assert await _one(proxy, "h1") == "alpha"
        stop_alpha.cancel()
        labels = {"direction": "outbound", "peer": "dst", "target_addr": str(alpha)}
        with trio.fail_after(5):
            while (await proxy.scrape()).value("tcp_close_total", **labels) < 1:  # noqa: ASYNC110
                await trio.sleep(0.02)
        result: list[str] = []

        async def request() -> None:
            result.append(await _one(proxy, "h1"))

        async with trio.open_nursery() as waiting:
            waiting.start_soon(request)
            await trio.sleep(0.5)
            assert result == [], "the request must wait for a ready endpoint"
            await cp.dst.add(NAME, [Endpoint(beta)])
        assert result == ["beta"]
