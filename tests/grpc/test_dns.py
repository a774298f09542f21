"""Control-plane DNS: lookups, TTL caching, negative caching, special cases."""

from __future__ import annotations

import ipaddress
import math
import socket

import pytest
import trio
import trio.testing

from linkerd_proxy.addrs import IpAddr, NameAddr, SocketAddr
from linkerd_proxy.errors import DnsError
from linkerd_proxy.grpc.dns import DnsResolver, DnsSettings, system_lookup

A = ipaddress.IPv4Address("10.0.0.1")
B = ipaddress.IPv4Address("10.0.0.2")
V6 = ipaddress.IPv6Address("fd00::1")
NAME = NameAddr("dst.linkerd.svc.cluster.local.", 8086)


class FakeDns:
    """Answers from a mutable table; counts lookups."""

    def __init__(self) -> None:
        self.answers: dict[str, list[IpAddr] | None] = {}
        self.lookups = 0

    async def __call__(self, name: str) -> list[IpAddr]:
        self.lookups += 1
        answer = self.answers.get(name)
        if answer is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return list(answer)


def test_ttl_is_clamped_and_floored() -> None:
    assert DnsSettings().ttl() == 5.0
    assert DnsSettings(min_ttl=30.0).ttl() == 30.0
    assert DnsSettings(max_ttl=2.0).ttl() == 5.0  # the floor wins
    assert DnsSettings(max_ttl=2.0, floor=1.0).ttl() == 2.0
    assert DnsSettings(assumed_ttl=60.0, max_ttl=20.0).ttl() == 20.0
    assert DnsSettings(assumed_ttl=0.1, floor=0.5).ttl() == 0.5


async def test_socket_addr_and_localhost_need_no_lookup() -> None:
    dns = FakeDns()
    resolver = DnsResolver(lookup=dns)
    sock = SocketAddr(A, 8086)
    assert (await resolver.resolve(sock)).addrs == (sock,)
    local = await resolver.resolve(NameAddr("localhost.", 8090))
    assert local.addrs == (SocketAddr(ipaddress.IPv4Address("127.0.0.1"), 8090),)
    assert local.expires == math.inf
    assert dns.lookups == 0


async def test_answers_are_cached_for_the_ttl(mock_clock: trio.testing.MockClock) -> None:
    clock = mock_clock
    dns = FakeDns()
    dns.answers[NAME.name] = [B, A, A, V6]
    resolver = DnsResolver(DnsSettings(assumed_ttl=10.0, floor=1.0), lookup=dns)

    first = await resolver.resolve(NAME)
    # Sorted, deduplicated, with the configured port.
    assert first.addrs == (SocketAddr(A, 8086), SocketAddr(B, 8086), SocketAddr(V6, 8086))
    dns.answers[NAME.name] = [B]
    clock.jump(9.9)
    assert (await resolver.resolve(NAME)).addrs == first.addrs
    assert dns.lookups == 1
    clock.jump(0.2)
    assert (await resolver.resolve(NAME)).addrs == (SocketAddr(B, 8086),)
    assert dns.lookups == 2


async def test_failures_are_cached_for_the_negative_ttl(
    mock_clock: trio.testing.MockClock,
) -> None:
    clock = mock_clock
    dns = FakeDns()
    resolver = DnsResolver(DnsSettings(assumed_ttl=3.0, floor=1.0), lookup=dns)

    with pytest.raises(DnsError) as info:
        await resolver.resolve(NAME)
    assert info.value.negative_ttl == 3.0
    assert NAME.name in str(info.value)
    dns.answers[NAME.name] = [A]
    clock.jump(2.9)
    with pytest.raises(DnsError):
        await resolver.resolve(NAME)
    assert dns.lookups == 1
    clock.jump(0.2)
    assert (await resolver.resolve(NAME)).addrs == (SocketAddr(A, 8086),)
    # An empty answer is a failure too.
    dns.answers[NAME.name] = []
    clock.jump(3.1)
    with pytest.raises(DnsError, match="no addresses"):
        await resolver.resolve(NAME)


async def test_system_lookup_resolves_through_the_system_resolver() -> None:
    with trio.fail_after(5):
        ips = await system_lookup("127.0.0.1")
        assert ips == [ipaddress.IPv4Address("127.0.0.1")]
        with pytest.raises(OSError):
            await system_lookup("no-such-name.invalid.")
