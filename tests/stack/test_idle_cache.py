"""Tests for linkerd_proxy.stack.idle_cache, all under an autojump MockClock.

Times are asserted relative to ``trio.current_time()``; sleeps land half a
second either side of a deadline so the sweeper and the test never tie.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import pytest
import trio
import trio.testing

from linkerd_proxy.stack import Cached, IdleCache, NewIdleCached, stack

IDLE = 5.0


@attrs.frozen
class Target:
    name: str


class Conn:
    """A fake per-target service: counts calls, records its aclose()."""

    def __init__(self, target: Target, closes: list[tuple[Target, float]]) -> None:
        self.target = target
        self.calls = 0
        self._closes = closes

    async def __call__(self, req: float, /) -> str:
        self.calls += 1
        await trio.sleep(req)
        return f"{self.target.name}:{self.calls}"

    async def aclose(self) -> None:
        self._closes.append((self.target, trio.current_time()))


@attrs.define
class Factory:
    """A NewService[Target, Conn] that counts what it builds."""

    built: list[Conn] = attrs.field(factory=list)
    closes: list[tuple[Target, float]] = attrs.field(factory=list)

    def __call__(self, target: Target, /) -> Conn:
        conn = Conn(target, self.closes)
        self.built.append(conn)
        return conn


@asynccontextmanager
async def running(
    factory: Factory, idle: float = IDLE
) -> AsyncIterator[NewIdleCached[Target, float, str]]:
    """A NewIdleCached over ``factory`` with its sweeper running."""
    cache: NewIdleCached[Target, float, str] = NewIdleCached(factory, idle)
    async with trio.open_nursery() as nursery:
        await nursery.start(cache.serve)
        yield cache
        nursery.cancel_scope.cancel()


A, B = Target("a"), Target("b")


async def test_lookups_reuse_one_service_per_target(autojump_clock: trio.testing.MockClock) -> None:
    factory = Factory()
    async with running(factory) as cache:
        h1, h2 = cache(A), cache(A)
        assert len(factory.built) == 1
        assert await h1(0) == "a:1"
        assert await h2(0) == "a:2"
        assert await cache(A)(0) == "a:3"
        assert len(factory.built) == 1
        assert len(cache) == 1
        assert dict(cache.entries) == {A: factory.built[0]}
        assert isinstance(h1, Cached)
        assert h1.target == A


async def test_unused_entry_is_evicted_after_idle_not_before(
    autojump_clock: trio.testing.MockClock,
) -> None:
    factory = Factory()
    async with running(factory) as cache:
        start = trio.current_time()
        cache(A)
        await trio.sleep(IDLE - 0.5)
        assert A in cache
        await trio.sleep(1)
        assert A not in cache
        assert len(cache) == 0
        assert factory.closes == [(A, start + IDLE)]


async def test_each_use_restarts_the_idle_clock(autojump_clock: trio.testing.MockClock) -> None:
    factory = Factory()
    async with running(factory) as cache:
        handle = cache(A)
        for _ in range(4):
            await trio.sleep(IDLE - 1)
            await handle(0)
        last_use = trio.current_time()
        assert len(factory.built) == 1
        await trio.sleep(IDLE - 0.5)
        assert A in cache
        await trio.sleep(1)
        assert A not in cache
        assert factory.closes == [(A, last_use + IDLE)]


async def test_a_lookup_counts_as_a_use(autojump_clock: trio.testing.MockClock) -> None:
    factory = Factory()
    async with running(factory) as cache:
        cache(A)
        await trio.sleep(IDLE - 1)
        cache(A)
        await trio.sleep(IDLE - 1)
        assert A in cache
        await trio.sleep(1.5)
        assert A not in cache
        assert len(factory.built) == 1


async def test_a_long_call_holds_its_entry_past_idle(
    autojump_clock: trio.testing.MockClock,
) -> None:
    factory = Factory()
    async with running(factory) as cache, trio.open_nursery() as nursery:
        handle = cache(A)
        done = trio.Event()

        async def connection() -> None:
            # A connection-level call: lasts 100s, far beyond IDLE.
            await handle(100)
            done.set()

        nursery.start_soon(connection)
        await trio.sleep(99)
        assert cache.is_held(A)
        assert A in cache
        assert factory.closes == []
        await done.wait()
        ended = trio.current_time()
        assert not cache.is_held(A)
        # The idle clock starts when the call ends, not when it started.
        await trio.sleep(IDLE - 0.5)
        assert A in cache
        await trio.sleep(1)
        assert A not in cache
        assert factory.closes == [(A, ended + IDLE)]
        assert len(factory.built) == 1


async def test_explicit_holds_nest_and_prevent_eviction(
    autojump_clock: trio.testing.MockClock,
) -> None:
    factory = Factory()
    async with running(factory) as cache:
        with cache.hold(A) as conn:
            assert conn is factory.built[0]
            with cache.hold(A) as again:
                assert again is conn
                await trio.sleep(3 * IDLE)
            await trio.sleep(3 * IDLE)
            assert cache.is_held(A)
            assert A in cache
        released = trio.current_time()
        assert not cache.is_held(A)
        await trio.sleep(IDLE + 0.5)
        assert A not in cache
        assert factory.closes == [(A, released + IDLE)]


async def test_hold_cannot_be_entered_twice_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    cache: IdleCache[Target, str] = IdleCache(lambda t: t.name, IDLE)
    hold = cache.hold(A)
    with hold, pytest.raises(RuntimeError):
        hold.__enter__()
    # ...but may be reused once exited.
    with hold as value:
        assert value == "a"


async def test_lookup_after_eviction_builds_afresh_and_stale_handles_follow(
    autojump_clock: trio.testing.MockClock,
) -> None:
    factory = Factory()
    async with running(factory) as cache:
        stale = cache(A)
        assert await stale(0) == "a:1"
        await trio.sleep(IDLE + 0.5)
        assert A not in cache
        first = factory.built[0]
        # A handle taken before eviction must not call the closed service.
        assert await stale(0) == "a:1"
        assert len(factory.built) == 2
        assert first.calls == 1
        assert cache.entries[A] is factory.built[1]
        assert await cache(A)(0) == "a:2"
        assert len(factory.built) == 2


async def test_two_targets_age_independently(autojump_clock: trio.testing.MockClock) -> None:
    factory = Factory()
    async with running(factory) as cache:
        busy, quiet = cache(A), cache(B)
        assert await quiet(0) == "b:1"
        for _ in range(3):
            await trio.sleep(IDLE / 2)
            await busy(0)
        assert A in cache
        assert B not in cache
        assert [t for t, _ in factory.closes] == [B]
        await trio.sleep(IDLE + 0.5)
        assert len(cache) == 0
        assert [t for t, _ in factory.closes] == [B, A]


class BadClose:
    def __init__(self, hang: bool) -> None:
        self.hang = hang

    async def __call__(self, req: None, /) -> None:
        return None

    async def aclose(self) -> None:
        if self.hang:
            await trio.sleep_forever()
        raise OSError("close failed")


async def test_failing_or_hanging_aclose_is_bounded_and_logged(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    cache: NewIdleCached[str, None, None] = NewIdleCached(
        lambda t: BadClose(hang=t == "hang"), IDLE, close_timeout=2.0
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(cache.serve)
        with caplog.at_level(logging.DEBUG, logger="linkerd_proxy.stack.idle_cache"):
            cache("hang")
            cache("raise")
            await trio.sleep(IDLE + 2.5)
            assert len(cache) == 0
            # The sweeper survived both and still evicts.
            cache("later")
            await trio.sleep(IDLE + 0.5)
            assert len(cache) == 0
        nursery.cancel_scope.cancel()
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("'hang'" in m and "took over 2.0s" in m for m in messages), messages
    assert any("'raise'" in m and "failed" in m for m in messages), messages
    failed = [r for r in caplog.records if r.exc_info and "'raise'" in r.getMessage()]
    assert isinstance(failed[0].exc_info[1], OSError)  # type: ignore[index]


async def test_values_without_aclose_are_just_dropped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    cache: IdleCache[Target, str] = IdleCache(lambda t: t.name, IDLE)
    async with trio.open_nursery() as nursery:
        await nursery.start(cache.serve)
        assert cache.get(A) == "a"
        await trio.sleep(IDLE + 0.5)
        assert len(cache) == 0
        nursery.cancel_scope.cancel()


async def test_nothing_is_evicted_without_a_sweeper(autojump_clock: trio.testing.MockClock) -> None:
    factory = Factory()
    cache: NewIdleCached[Target, float, str] = NewIdleCached(factory, IDLE)
    cache(A)
    await trio.sleep(10 * IDLE)
    assert A in cache


class StepCounter(trio.abc.Instrument):
    """Counts scheduling steps of tasks whose name ends with ``suffix``."""

    def __init__(self, suffix: str) -> None:
        self.suffix = suffix
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task.name.endswith(self.suffix):
            self.steps += 1


async def test_sweeper_sleeps_until_something_can_expire(
    autojump_clock: trio.testing.MockClock,
) -> None:
    factory = Factory()
    counter = StepCounter(".serve")
    trio.lowlevel.add_instrument(counter)
    try:
        async with running(factory, idle=1.0) as cache:
            # An empty cache: the sweeper does not wake at all.
            steps = counter.steps
            await trio.sleep(10_000)
            assert counter.steps == steps
            # A held entry: it wakes for the new entry and at its first deadline
            # (finding it held), then sleeps until the hold ends. Polling at
            # idle/2 would be 20,000 steps here.
            with cache.hold(A):
                await trio.sleep(10_000)
                assert counter.steps - steps <= 2
            # One unheld entry used 100 times in quick succession: the sweeper
            # wakes O(1) times, not once per use.
            handle = cache(A)
            steps = counter.steps
            for _ in range(100):
                await handle(0.001)
            await trio.sleep(2)
            assert A not in cache
            assert counter.steps - steps <= 6
    finally:
        trio.lowlevel.remove_instrument(counter)


async def test_sweeper_exits_on_cancel_and_only_one_runs(
    autojump_clock: trio.testing.MockClock,
) -> None:
    factory = Factory()
    cache: NewIdleCached[Target, float, str] = NewIdleCached(factory, IDLE)
    cache(A)
    async with trio.open_nursery() as nursery:
        await nursery.start(cache.serve)
        with pytest.raises(RuntimeError, match="already running"):
            await cache.serve()
        nursery.cancel_scope.cancel()
    assert trio.current_time() == 0  # cancelled at once, not after a sweep
    assert A in cache
    # The flag is reset: a new sweeper may start and does its job.
    async with trio.open_nursery() as nursery:
        await nursery.start(cache.serve)
        await trio.sleep(IDLE + 0.5)
        assert A not in cache
        nursery.cancel_scope.cancel()


async def test_layer_starts_the_sweeper_in_the_given_nursery(
    autojump_clock: trio.testing.MockClock,
) -> None:
    factory = Factory()
    async with trio.open_nursery() as nursery:
        cached = stack(factory).push_timeout(30.0).push_idle_cached(IDLE, nursery)
        svc = cached(A)
        assert await svc(1) == "a:1"
        assert isinstance(cached.inner, NewIdleCached)
        await trio.sleep(IDLE + 0.5)
        assert len(cached.inner) == 0
        assert len(nursery.child_tasks) == 1
        nursery.cancel_scope.cancel()


async def test_connection_holds_entry_over_real_sockets(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seen: list[bytes | bytearray] = []
    finished = trio.Event()

    class Echo:
        async def __call__(self, conn: trio.abc.Stream, /) -> None:
            async with conn:
                async for chunk in conn:
                    seen.append(chunk)
                    await conn.send_all(chunk)
            finished.set()

    async with trio.open_nursery() as nursery:
        cache = stack(lambda _t: Echo()).push_idle_cached(IDLE, nursery)
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, cache("app"), 0, host="127.0.0.1")
        )
        port = listeners[0].socket.getsockname()[1]
        client = await trio.open_tcp_stream("127.0.0.1", port)
        await client.send_all(b"hi")
        assert await client.receive_some(10) == b"hi"
        # The open connection holds the entry far past the idle timeout.
        await trio.sleep(10 * IDLE)
        assert cache.inner.is_held("app")  # type: ignore[attr-defined]
        await client.send_all(b"again")
        assert await client.receive_some(10) == b"again"
        await client.aclose()
        with trio.fail_after(1):
            await finished.wait()
        await trio.testing.wait_all_tasks_blocked()
        assert not cache.inner.is_held("app")  # type: ignore[attr-defined]
        await trio.sleep(IDLE + 0.5)
        assert len(cache.inner.entries) == 0  # type: ignore[attr-defined]
        nursery.cancel_scope.cancel()
    assert seen == [b"hi", b"again"]
