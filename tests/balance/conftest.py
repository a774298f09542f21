"""Fake endpoint services for the balancer tests."""

from __future__ import annotations

from collections.abc import Mapping

import trio

from linkerd_proxy.addrs import SocketAddr
from linkerd_proxy.balance import Balancer, Endpoint, EndpointPool, EwmaConfig, FailureAccrual
from linkerd_proxy.errors import ConnectError
from linkerd_proxy.http.body import Body, EmptyBody
from linkerd_proxy.http.model import Request, Response
from linkerd_proxy.stack import Service
from linkerd_proxy.transport.backoff import ExponentialBackoff

A = SocketAddr.parse("10.0.0.1:80")
B = SocketAddr.parse("10.0.0.2:80")
C = SocketAddr.parse("10.0.0.3:80")


class FakeEndpoint:
    """One endpoint's service: counts calls, sleeps ``latency``, may refuse to connect."""

    def __init__(self, net: FakeNet, target: Endpoint[str]) -> None:
        self.net = net
        self.target = target
        self.calls = 0
        self.closed = False

    async def __call__(self, req: Request, /) -> Response:
        assert not self.closed, "a closed endpoint service was called"
        self.calls += 1
        addr = self.target.addr
        self.net.dials.append(addr)
        await trio.sleep(self.net.latency.get(addr, 0.0))
        if addr in self.net.refuse:
            raise ConnectError(addr, "connection refused", 111)
        body: Body = self.net.bodies.pop(addr, EmptyBody())
        return Response(self.net.status.get(addr, 200), body=body)

    async def aclose(self) -> None:
        self.closed = True
        await trio.lowlevel.checkpoint()


class FakeNet:
    """The NewService building :class:`FakeEndpoint` s, and the world they live in."""

    def __init__(self) -> None:
        self.built: list[FakeEndpoint] = []
        self.dials: list[SocketAddr] = []
        self.latency: dict[SocketAddr, float] = {}
        self.refuse: set[SocketAddr] = set()
        self.status: dict[SocketAddr, int] = {}
        self.bodies: dict[SocketAddr, Body] = {}

    def __call__(self, target: Endpoint[str], /) -> Service[Request, Response]:
        ep = FakeEndpoint(self, target)
        self.built.append(ep)
        return ep

    def services(self, addr: SocketAddr) -> list[FakeEndpoint]:
        return [e for e in self.built if e.target.addr == addr]

    def calls(self, addr: SocketAddr) -> int:
        return sum(e.calls for e in self.services(addr))


def make(
    seed: int = 0, accrual: FailureAccrual | None = None, ewma: EwmaConfig | None = None
) -> tuple[FakeNet, EndpointPool[str, Service[Request, Response]], Balancer[str]]:
    net = FakeNet()
    pool: EndpointPool[str, Service[Request, Response]] = EndpointPool(
        net,
        ewma=ewma or EwmaConfig(),
        connect_backoff=ExponentialBackoff(1.0, 8.0),
        accrual=accrual,
        rng=__import__("random").Random(seed),
    )
    return net, pool, Balancer(pool)


def eps(*addrs: SocketAddr, meta: str = "m") -> Mapping[SocketAddr, str]:
    return dict.fromkeys(addrs, meta)


def get() -> Request:
    return Request("GET", "http", "svc.test:80", "/", "HTTP/1.1")


async def burst(bal: Balancer[str], n: int) -> list[int]:
    """``n`` concurrent requests; their statuses."""
    statuses: list[int] = []

    async def one() -> None:
        statuses.append((await bal(get())).status)

    async with trio.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(one)
    return statuses
