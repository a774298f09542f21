"""Inbound default policies: the pure check, and enforcement through the proxy."""

from __future__ import annotations

import functools
import ipaddress

import attrs
import pytest
import trio

from linkerd_proxy.addrs import SocketAddr
from linkerd_proxy.app.config import Config
from linkerd_proxy.inbound.authz import authorized
from linkerd_proxy.testing import open_proxy

LOCALHOST = ipaddress.IPv4Address("127.0.0.1")
CLUSTER = [ipaddress.IPv4Network("10.0.0.0/8")]
INSIDE = ipaddress.IPv4Address("10.1.2.3")
OUTSIDE = ipaddress.IPv4Address("192.0.2.7")


@pytest.mark.parametrize(
    ("policy", "ip", "client_id", "allowed"),
    [
        ("all-unauthenticated", OUTSIDE, None, True),
        ("audit", OUTSIDE, None, True),
        ("deny", INSIDE, "a.ns.serviceaccount.identity.linkerd.cluster.local", False),
        ("all-authenticated", OUTSIDE, None, False),
        ("all-authenticated", OUTSIDE, "a.ns", True),
        ("cluster-unauthenticated", INSIDE, None, True),
        ("cluster-unauthenticated", OUTSIDE, "a.ns", False),
        ("cluster-authenticated", INSIDE, None, False),
        ("cluster-authenticated", INSIDE, "a.ns", True),
        ("cluster-authenticated", OUTSIDE, "a.ns", False),
    ],
)
def test_authorized(
    policy: str, ip: ipaddress.IPv4Address, client_id: str | None, allowed: bool
) -> None:
    assert authorized(policy, ip, client_id, CLUSTER) is allowed


def test_unknown_policy_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown default policy"):
        authorized("nope", INSIDE, None, CLUSTER)


async def _http_ok(stream: trio.SocketStream) -> None:
    async with stream:
        await stream.receive_some(65536)
        await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")


async def _echo(stream: trio.SocketStream) -> None:
    async with stream:
        while data := await stream.receive_some(65536):
            await stream.send_all(data)


async def _serve(nursery: trio.Nursery, handler: object) -> SocketAddr:
    listeners = await nursery.start(functools.partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    return SocketAddr(LOCALHOST, listeners[0].socket.getsockname()[1])


def _config(policy: str) -> Config:
    config = Config.from_env(
        {
            "LINKERD2_PROXY_INBOUND_DEFAULT_POLICY": policy,
            "LINKERD2_PROXY_POLICY_CLUSTER_NETWORKS": "10.0.0.0/8",
        }
    )
    return attrs.evolve(config, inbound=attrs.evolve(config.inbound, ips=frozenset([LOCALHOST])))


async def test_deny_answers_http_with_403_and_closes_tcp(nursery: trio.Nursery) -> None:
    http_app = await _serve(nursery, _http_ok)
    tcp_app = await _serve(nursery, _echo)
    async with open_proxy(_config("deny"), orig_dst=http_app) as proxy:
        stream = await trio.open_tcp_stream(*proxy.addrs.inbound.to_sockaddr())
        async with stream:
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n")
            with trio.fail_after(5):
                head = await stream.receive_some(65536)
        assert head.startswith(b"HTTP/1.1 403"), head
        scrape = await proxy.scrape()
        assert scrape.value("request_total", direction="inbound") == 0
    async with open_proxy(_config("deny"), orig_dst=tcp_app) as proxy:
        stream = await trio.open_tcp_stream(*proxy.addrs.inbound.to_sockaddr())
        async with stream:
            await stream.send_all(b"\x00not http")
            with trio.fail_after(5):
                try:
                    got = await stream.receive_some(100)
                except trio.BrokenResourceError:
                    got = b""
        assert got == b""


async def test_cluster_policy_refuses_clients_outside_the_cluster(nursery: trio.Nursery) -> None:
    http_app = await _serve(nursery, _http_ok)
    async with open_proxy(_config("cluster-unauthenticated"), orig_dst=http_app) as proxy:
        stream = await trio.open_tcp_stream(*proxy.addrs.inbound.to_sockaddr())
        async with stream:
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n")
            with trio.fail_after(5):
                head = await stream.receive_some(65536)
        assert head.startswith(b"HTTP/1.1 403"), head  # 127.0.0.1 is not in 10.0.0.0/8


async def test_all_unauthenticated_allows(nursery: trio.Nursery) -> None:
    http_app = await _serve(nursery, _http_ok)
    async with open_proxy(_config("all-unauthenticated"), orig_dst=http_app) as proxy:
        stream = await trio.open_tcp_stream(*proxy.addrs.inbound.to_sockaddr())
        async with stream:
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n")
            with trio.fail_after(5):
                head = await stream.receive_some(65536)
        assert head.startswith(b"HTTP/1.1 200"), head
