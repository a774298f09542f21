"""The endpoint set: lazy services, updates, removal, backoff, readiness."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from linkerd_proxy.balance import FailureAccrual, is_connect_failure
from linkerd_proxy.discovery.updates import Add, DoesNotExist, Remove, Reset
from linkerd_proxy.errors import ConnectError, FailFast
from linkerd_proxy.http.loadshed import Queue
from linkerd_proxy.transport.backoff import ExponentialBackoff

from .conftest import A, B, C, burst, eps, get, make


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


async def test_services_are_built_on_first_pick_not_on_add(
    clock: trio.testing.MockClock,
) -> None:
    net, pool, bal = make()
    net.latency.update({A: 0.01, B: 0.01})
    await pool.update(Add(eps(A, B)))
    assert net.built == []
    assert bal.is_ready()
    await bal(get())
    assert len(net.built) == 1
    assert await burst(bal, 20) == [200] * 20  # concurrency spreads them over both
    assert len(net.built) == 2  # each endpoint built once, then reused
    assert net.calls(A) + net.calls(B) == 21
    assert net.calls(A) >= 5 and net.calls(B) >= 5


async def test_remove_closes_the_service_and_it_is_never_called_again(
    clock: trio.testing.MockClock,
) -> None:
    net, pool, bal = make()
    await pool.update(Reset(eps(A)))
    await bal(get())
    (svc_a,) = net.services(A)
    await pool.update(Remove(frozenset({A})))
    assert svc_a.closed
    assert not bal.is_ready()
    await pool.update(Add(eps(B)))
    for _ in range(10):
        await bal(get())
    await trio.sleep(120)  # no traffic: nothing may dial anything
    assert net.calls(A) == 1
    assert net.dials.count(A) == 1
    assert len(net.services(A)) == 1


async def test_a_request_about_to_pick_a_removed_endpoint_goes_elsewhere(
    clock: trio.testing.MockClock,
) -> None:
    net, pool, bal = make()
    net.refuse.add(A)
    await pool.update(Reset(eps(A)))
    with pytest.raises(ConnectError):
        await bal(get())  # A is now backing off for 1 s
    assert not bal.is_ready()
    result: list[int] = []

    async def waiter() -> None:
        result.append((await bal(get())).status)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        assert result == []  # parked on readiness, about to pick A
        await pool.update(Remove(frozenset({A})))
        await trio.sleep(5)  # A's backoff is long over; it must stay gone
        assert result == []
        await pool.update(Add(eps(B)))
    assert result == [200]
    assert net.calls(A) == 1
    assert all(s.closed for s in net.services(A))


async def test_removal_waits_for_the_call_in_flight(clock: trio.testing.MockClock) -> None:
    net, pool, bal = make()
    net.latency[A] = 1.0
    await pool.update(Reset(eps(A)))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bal, get())
        await trio.sleep(0.5)
        await pool.update(Remove(frozenset({A})))
        (svc_a,) = net.services(A)
        assert not svc_a.closed  # still answering its request
    assert svc_a.closed


async def test_reset_replaces_and_keeps_unchanged_endpoints(
    clock: trio.testing.MockClock,
) -> None:
    net, pool, bal = make()
    net.latency.update({A: 0.01, B: 0.01, C: 0.01})
    await pool.update(Reset(eps(A, B)))
    await burst(bal, 10)
    (svc_b,) = net.services(B)
    await pool.update(Reset(eps(B, C)))
    assert pool.endpoints == eps(B, C)
    assert all(s.closed for s in net.services(A))
    assert not svc_b.closed
    await burst(bal, 20)
    assert net.services(B) == [svc_b]  # the same service, not rebuilt
    assert net.calls(C) > 0
    # New metadata for B: a new service; the old one is closed.
    await pool.update(Add(eps(B, meta="other")))
    assert svc_b.closed
    assert pool.updates == {"reset": 2, "add": 1, "remove": 0}


async def test_does_not_exist_empties_and_the_queue_fails_fast(
    clock: trio.testing.MockClock,
) -> None:
    _net, pool, bal = make()
    await pool.update(Reset(eps(A)))
    queue = Queue(bal, capacity=10, failfast_timeout=3.0)
    assert (await queue(get())).status == 200
    await pool.update(DoesNotExist())
    assert not bal.is_ready() and len(pool) == 0
    start = trio.current_time()
    with pytest.raises(FailFast):
        await queue(get())
    assert trio.current_time() - start == pytest.approx(3.0)
    with pytest.raises(FailFast):
        await queue(get())  # in failfast: at once
    assert trio.current_time() - start == pytest.approx(3.0)
    # An empty Reset (NoEndpoints{exists=true}) is also unready; then recovery.
    await pool.update(Reset(eps()))
    assert not bal.is_ready()
    await pool.update(Add(eps(B)))
    assert (await queue(get())).status == 200


async def test_failed_endpoint_is_skipped_during_backoff_and_never_redialled_idle(
    clock: trio.testing.MockClock,
) -> None:
    net, pool, bal = make(seed=4)
    net.refuse.add(A)
    await pool.update(Reset(eps(A, B)))
    for _ in range(30):
        assert (await bal(get())).status == 200  # a refused connect moves to B
    assert net.calls(A) == 1  # within A's 1 s backoff: never picked again
    await trio.sleep(600)  # no requests: no dialling at all
    assert net.calls(A) == 1
    # Requests again: A is probed (once at a time) only when a request picks it.
    for _ in range(50):
        assert (await bal(get())).status == 200
        await trio.sleep(0.1)
    assert 2 <= net.calls(A) <= 4  # probes at +1 s, +2 s, +4 s of backoff at most
    net.refuse.discard(A)
    net.latency.update({A: 0.01, B: 0.01})
    await trio.sleep(10)
    before = net.calls(A)
    for _ in range(5):
        await burst(bal, 10)
    assert net.calls(A) - before > 10  # restored after a probe connected


async def test_all_failed_is_unready_and_readiness_returns_when_backoff_ends(
    clock: trio.testing.MockClock,
) -> None:
    net, pool, bal = make()
    net.refuse.update({A, B})
    await pool.update(Reset(eps(A, B)))
    with pytest.raises(ConnectError):
        await bal(get())
    assert net.calls(A) == 1 and net.calls(B) == 1  # each tried once
    assert not bal.is_ready()
    start = trio.current_time()
    await bal.ready()
    assert trio.current_time() - start == pytest.approx(1.0)  # the 1 s backoff
    assert net.calls(A) + net.calls(B) == 2  # waiting dialled nothing


async def test_readiness_transitions_wake_waiters(clock: trio.testing.MockClock) -> None:
    _net, pool, bal = make()
    woke: list[float] = []

    async def waiter() -> None:
        await bal.ready()
        woke.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        nursery.start_soon(waiter)
        await trio.sleep(7)
        assert woke == []
        await pool.update(Add(eps(A)))
    assert woke == [7.0, 7.0]


async def test_failure_accrual_shuts_the_gate_then_probes(clock: trio.testing.MockClock) -> None:
    accrual = FailureAccrual(max_failures=3, backoff=ExponentialBackoff(1.0, 60.0))
    net, pool, bal = make(accrual=accrual)
    net.status[A] = 500
    await pool.update(Reset(eps(A)))
    for _ in range(3):
        assert (await bal(get())).status == 500
    assert not bal.is_ready()  # three consecutive failures: gate shut for 1 s
    await bal.ready()
    assert trio.current_time() == pytest.approx(1.0)
    assert (await bal(get())).status == 500  # the probe fails: shut for 2 s
    assert not bal.is_ready()
    await bal.ready()
    assert trio.current_time() == pytest.approx(3.0)
    net.status[A] = 200
    assert (await bal(get())).status == 200  # the probe succeeds: open again
    for _ in range(5):
        assert (await bal(get())).status == 200
    assert bal.is_ready()


async def test_connect_failure_classification() -> None:
    err = ConnectError(A, "refused")
    assert is_connect_failure(err)
    try:
        raise FailFast("unreachable") from err
    except FailFast as wrapped:
        assert is_connect_failure(wrapped)
    assert not is_connect_failure(RuntimeError("x"))


async def test_closed_pool_closes_everything(clock: trio.testing.MockClock) -> None:
    net, pool, bal = make()
    net.latency.update({A: 0.01, B: 0.01})
    await pool.update(Reset(eps(A, B)))
    await burst(bal, 10)
    assert len(net.built) == 2
    await bal.aclose()
    assert all(s.closed for s in net.built)
    with pytest.raises(trio.ClosedResourceError):
        await bal(get())
