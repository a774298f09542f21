"""Balancers: P2C/PeakEWMA share under load, response-body tracking, TCP P2C."""

from __future__ import annotations

import random

import trio
import trio.testing

from linkerd_proxy.balance import Balancer, Endpoint, EndpointPool, EwmaConfig, TcpBalancer
from linkerd_proxy.discovery.updates import Remove, Reset
from linkerd_proxy.http.body import PipeBody

from .conftest import A, B, C, eps, get, make


async def _closed_loop(bal: Balancer[str], workers: int, until: float) -> None:
    async def worker() -> None:
        for _ in range(100_000):
            if trio.current_time() >= until:
                return
            await bal(get())

    async with trio.open_nursery() as nursery:
        for _ in range(workers):
            nursery.start_soon(worker)


async def test_a_slower_endpoint_gets_a_clearly_smaller_share(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A answers in 10 ms, B in 30 ms (20 ms slower); 8 clients in a closed loop.
    # Both estimates start at the 30 ms default and move towards the samples
    # over the decay time, so the decay is 1 s here and the share is measured
    # after a 3 s warm-up. Then P2C (which, over two endpoints, always compares
    # both) sends each request to the lower estimate x (pending + 1), keeping
    # 10 ms x (pA + 1) ~ 30 ms x (pB + 1) with pA + pB ~ 7: pA ~ 5.75, pB ~ 1.25.
    # By Little's law the rates are pA / 10 ms and pB / 30 ms, so B's share is
    # ~ 0.042 / 0.617 ~ 7%; discreteness (pB is 1 or 2) puts it near 5-15%.
    # Round robin would give B 50%, a 1/latency split 25%.
    net, pool, bal = make(seed=11, ewma=EwmaConfig(decay=1.0))
    net.latency.update({A: 0.010, B: 0.030})
    await pool.update(Reset(eps(A, B)))
    await _closed_loop(bal, workers=8, until=3.0)
    a0, b0 = net.calls(A), net.calls(B)
    await _closed_loop(bal, workers=8, until=6.0)
    a, b = net.calls(A) - a0, net.calls(B) - b0
    share_b = b / (a + b)
    print("share of the slower endpoint:", share_b, a + b)
    assert a + b > 1000
    assert 0.02 < share_b < 0.18, share_b


async def test_response_body_holds_the_endpoint_until_it_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net, pool, bal = make()
    body = PipeBody()
    net.bodies[A] = body
    await pool.update(Reset(eps(A)))
    rsp = await bal(get())
    slot_ewma = net.services(A)[0]
    # The load sample is pending until the first body frame (PendingUntilFirstData).
    (ep_pending,) = [s.ewma.pending for s in pool._slots.values()]
    assert ep_pending == 1
    await pool.update(Remove(frozenset({A})))
    assert not slot_ewma.closed  # its response is still streaming
    await trio.sleep(0.2)
    body.push(b"hello")
    assert await rsp.body.read() == b"hello"
    assert not slot_ewma.closed
    body.finish([(b"grpc-status", b"0")])
    assert await rsp.body.read() == b""
    assert rsp.body.trailers == [(b"grpc-status", b"0")]
    assert slot_ewma.closed  # closed once the last response ended


async def test_first_frame_ends_the_latency_sample(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net, pool, bal = make()
    body = PipeBody()
    net.bodies[A] = body
    await pool.update(Reset(eps(A)))
    rsp = await bal(get())
    await trio.sleep(0.5)
    body.push(b"x")
    await rsp.body.read()
    (slot,) = pool._slots.values()
    assert slot.ewma.pending == 0
    assert abs(slot.ewma.estimate - 0.5) < 1e-6  # a 500 ms peak replaced 30 ms
    await rsp.body.aclose()
    assert slot.in_use == 0


class _Conn:
    """A connection-level endpoint service: each call lasts ``hold`` seconds."""

    def __init__(self, target: Endpoint[str], log: list[tuple[str, int]], hold: float) -> None:
        self.target = target
        self.log = log
        self.hold = hold
        self.open = 0

    async def __call__(self, conn: int, /) -> str:
        self.open += 1
        self.log.append((str(self.target.addr), conn))
        try:
            await trio.sleep(self.hold)
        finally:
            self.open -= 1
        return str(self.target.addr)


async def test_tcp_p2c_spreads_open_connections(autojump_clock: trio.testing.MockClock) -> None:
    log: list[tuple[str, int]] = []
    services: dict[str, _Conn] = {}

    def new(target: Endpoint[str]) -> _Conn:
        svc = _Conn(target, log, hold=60.0)
        services[str(target.addr)] = svc
        return svc

    pool: EndpointPool[str, _Conn] = EndpointPool(new, rng=random.Random(5))
    bal: TcpBalancer[str, int, str] = TcpBalancer(pool)  # type: ignore[arg-type]
    await pool.update(Reset(eps(A, B, C)))
    peak: dict[str, int] = {}
    async with trio.open_nursery() as nursery:
        for i in range(9):
            nursery.start_soon(bal, i)
            await trio.sleep(0.01)
        await trio.testing.wait_all_tasks_blocked()
        peak = {a: s.open for a, s in services.items()}
    # Long-lived connections: the pending (open connection) penalty dominates,
    # so P2C never stacks more than one extra connection on any endpoint.
    assert sum(peak.values()) == 9
    assert max(peak.values()) - min(peak.values(), default=0) <= 2, peak
    assert len(peak) == 3
    assert all(s.open == 0 for s in services.values())
