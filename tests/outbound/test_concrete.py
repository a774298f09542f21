"""The concrete level: a balanced backend waits for a ready endpoint (linkerd2#2550)."""

from __future__ import annotations

from typing import Any, cast

import pytest
import trio
import trio.testing

from linkerd_proxy.addrs import NameAddr, SocketAddr
from linkerd_proxy.balance import Endpoint, EndpointPool, TcpBalancer
from linkerd_proxy.discovery.updates import Add, Reset
from linkerd_proxy.errors import ConnectError, FailFast
from linkerd_proxy.grpc.client import ControlClient
from linkerd_proxy.outbound.concrete import Balanced
from linkerd_proxy.stack import Service
from linkerd_proxy.transport.backoff import ExponentialBackoff

DEAD = SocketAddr.parse("10.0.0.1:80")
LIVE = SocketAddr.parse("10.0.0.2:80")


class Net:
    """Endpoint services answering their address, except ``DEAD``, which refuses."""

    def __init__(self) -> None:
        self.dials: list[SocketAddr] = []

    def __call__(self, target: Endpoint[str], /) -> Service[str, str]:
        async def call(req: str, /) -> str:
            self.dials.append(target.addr)
            await trio.lowlevel.checkpoint()
            if target.addr == DEAD:
                raise ConnectError(target.addr, "connection refused", 111)
            return f"{req} from {target.meta}"

        return call


def _balanced(net: Net, nursery: trio.Nursery) -> tuple[Balanced[str, str], EndpointPool[str, Any]]:
    pool: EndpointPool[Any, Service[str, str]] = EndpointPool(
        net, connect_backoff=ExponentialBackoff(0.5, 2.0, 0.0)
    )
    bal: Balanced[str, str] = Balanced(
        NameAddr.parse("web.ns.svc.cluster.local:80"),
        cast(ControlClient, None),
        "",
        pool,
        TcpBalancer(pool),
        queue_capacity=10,
        failfast_timeout=5.0,
        background=nursery,
    )
    bal._scope = trio.CancelScope()  # no resolution: the test feeds the pool itself
    return bal, pool


async def test_request_waits_for_an_endpoint_added_after_the_only_one_failed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = Net()
    result: list[str] = []
    async with trio.open_nursery() as nursery:
        bal, pool = _balanced(net, nursery)
        await pool.update(Reset({DEAD: "dead"}))

        async def request() -> None:
            result.append(await bal("GET"))

        nursery.start_soon(request)
        await trio.sleep(2.0)
        assert result == []  # not a 502: it waits
        await pool.update(Add({LIVE: "live"}))
    assert result == ["GET from live"]
    assert trio.current_time() < 2.1
    assert 1 <= net.dials.count(DEAD) <= 3  # a probe per backoff (0.5 s, 1 s), no loop


async def test_request_fails_fast_when_no_endpoint_becomes_ready(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = Net()
    async with trio.open_nursery() as nursery:
        bal, pool = _balanced(net, nursery)
        await pool.update(Reset({DEAD: "dead"}))
        with pytest.raises(FailFast):
            await bal("GET")
        assert trio.current_time() == pytest.approx(5.0, abs=0.01)
        assert net.dials.count(DEAD) <= 4  # probes at 0, 0.5, 1.5, 3.5 s
        nursery.cancel_scope.cancel()
