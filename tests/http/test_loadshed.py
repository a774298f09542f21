"""Tests for linkerd_proxy.http.loadshed (MaxInFlight, Queue with failfast)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from linkerd_proxy.errors import FailFast, LoadShed
from linkerd_proxy.http.loadshed import MaxInFlight, Queue


class Gated:
    """A service that is ready when its event is set; counts the calls it serves."""

    def __init__(self, ready: bool = True) -> None:
        self.event = trio.Event()
        if ready:
            self.event.set()
        self.served = 0

    def set_ready(self, ready: bool) -> None:
        if ready:
            self.event.set()
        elif self.event.is_set():
            self.event = trio.Event()

    def is_ready(self) -> bool:
        return self.event.is_set()

    async def ready(self) -> None:
        await self.event.wait()

    async def __call__(self, req: int, /) -> int:
        self.served += 1
        return req * 2


async def test_max_in_flight_sheds_excess_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    release = trio.Event()

    async def slow(req: int) -> int:
        await release.wait()
        return req

    svc = MaxInFlight(slow, 2)
    results: list[int] = []
    async with trio.open_nursery() as nursery:
        for i in range(2):
            nursery.start_soon(_run, svc, i, results)
        await trio.testing.wait_all_tasks_blocked()
        assert svc.in_flight == 2
        start = trio.current_time()
        with pytest.raises(LoadShed):
            await svc(9)
        assert trio.current_time() == start
        release.set()
    assert sorted(results) == [0, 1]
    assert svc.in_flight == 0
    assert await svc(3) == 3


async def _run(svc: MaxInFlight[int, int], i: int, out: list[int]) -> None:
    out.append(await svc(i))


async def test_max_in_flight_releases_on_error_and_cancel() -> None:
    async def boom(req: int) -> int:
        raise ValueError(req)

    svc = MaxInFlight(boom, 1)
    for _ in range(3):
        with pytest.raises(ValueError):
            await svc(1)
    assert svc.in_flight == 0

    async def forever(req: int) -> int:
        await trio.sleep_forever()
        raise AssertionError

    svc2 = MaxInFlight(forever, 1)
    with trio.move_on_after(0.01):
        await svc2(1)
    assert svc2.in_flight == 0


async def test_queue_passes_through_when_ready() -> None:
    inner = Gated()
    q = Queue(inner, capacity=1, failfast_timeout=1)
    assert [await q(i) for i in range(5)] == [0, 2, 4, 6, 8]

    async def plain(req: int) -> int:  # no readiness: always ready
        return req

    assert await Queue(plain, 0, 0)(7) == 7


async def test_queue_waits_then_serves(autojump_clock: trio.testing.MockClock) -> None:
    inner = Gated(ready=False)
    q = Queue(inner, capacity=10, failfast_timeout=3)
    results: list[int] = []
    async with trio.open_nursery() as nursery:
        for i in range(3):
            nursery.start_soon(_run_q, q, i, results)
        await trio.sleep(2.5)
        assert q.waiting == 3 and results == []
        inner.set_ready(True)
    assert sorted(results) == [0, 2, 4]
    assert trio.current_time() == pytest.approx(2.5)
    assert not q.in_failfast


async def _run_q(q: Queue[int, int], i: int, out: list[int]) -> None:
    out.append(await q(i))


async def test_queue_failfast_cycle(autojump_clock: trio.testing.MockClock) -> None:
    inner = Gated(ready=False)
    q = Queue(inner, capacity=10, failfast_timeout=3)
    failures: list[float] = []

    async def waiter(delay: float) -> None:
        await trio.sleep(delay)
        with pytest.raises(FailFast):
            await q(1)
        failures.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter, 0)
        nursery.start_soon(waiter, 1)  # shares the first waiter's timer
    assert failures == [pytest.approx(3), pytest.approx(3)]
    assert q.in_failfast and q.waiting == 0

    # In failfast: new requests fail at once.
    start = trio.current_time()
    for _ in range(5):
        with pytest.raises(FailFast):
            await q(1)
    assert trio.current_time() == start and inner.served == 0

    # Recovery is noticed by the next request.
    inner.set_ready(True)
    assert await q(4) == 8
    assert not q.in_failfast

    # A new unready spell gets a fresh timer.
    inner.set_ready(False)
    spell = trio.current_time()
    with pytest.raises(FailFast):
        await q(1)
    assert trio.current_time() - spell == pytest.approx(3)


async def test_queue_capacity_sheds(autojump_clock: trio.testing.MockClock) -> None:
    inner = Gated(ready=False)
    q = Queue(inner, capacity=2, failfast_timeout=10)
    async with trio.open_nursery() as nursery:
        for _ in range(2):
            nursery.start_soon(q, 1)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(LoadShed):
            await q(1)
        inner.set_ready(True)
    assert inner.served == 2


async def test_queue_cancelled_waiters_reset_timer(autojump_clock: trio.testing.MockClock) -> None:
    inner = Gated(ready=False)
    q = Queue(inner, capacity=2, failfast_timeout=3)
    with trio.move_on_after(2):
        await q(1)
    assert q.waiting == 0 and not q.in_failfast
    await trio.sleep(10)
    with trio.move_on_after(2.9):
        await q(1)  # a fresh 3 s timer: not failed after 2.9 s
    assert not q.in_failfast
