"""Tests for linkerd_proxy.stack.timeout (all under an autojump MockClock)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from linkerd_proxy.errors import ProxyError, ResponseTimeout
from linkerd_proxy.stack import Timeout


class Sleeper:
    """Sleeps ``delay`` seconds per call, recording how calls end."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.finished = 0
        self.cancelled = 0

    async def __call__(self, req: str, /) -> str:
        try:
            await trio.sleep(self.delay)
        except trio.Cancelled:
            self.cancelled += 1
            raise
        self.finished += 1
        return req.upper()


async def test_fires_raises_response_timeout_and_cancels_inner(
    autojump_clock: trio.testing.MockClock,
) -> None:
    inner = Sleeper(10)
    svc = Timeout.layer(2.5)(inner)
    start = trio.current_time()
    with pytest.raises(ResponseTimeout) as info:
        await svc("x")
    assert trio.current_time() - start == pytest.approx(2.5)
    assert isinstance(info.value, ProxyError)
    assert not isinstance(info.value, trio.TooSlowError)
    assert info.value.timeout == 2.5
    assert "2.5" in str(info.value)
    assert (inner.cancelled, inner.finished) == (1, 0)


async def test_does_not_fire_when_inner_answers_in_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    inner = Sleeper(2.4)
    svc = Timeout(inner, 2.5)
    assert await svc("ok") == "OK"
    # The bound applies per call, not to the service's lifetime.
    assert await svc("again") == "AGAIN"
    assert trio.current_time() == pytest.approx(4.8)
    assert (inner.cancelled, inner.finished) == (0, 2)


async def test_none_means_no_bound(autojump_clock: trio.testing.MockClock) -> None:
    svc = Timeout(Sleeper(10_000), None)
    assert await svc("late") == "LATE"
    assert trio.current_time() == pytest.approx(10_000)


async def test_inner_errors_and_inner_deadlines_pass_through(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def failing(req: str) -> str:
        raise ValueError(req)

    async def own_deadline(req: str) -> str:
        with trio.fail_after(1):
            await trio.sleep(5)
        return req

    with pytest.raises(ValueError, match="boom"):
        await Timeout(failing, 10)("boom")
    # A TooSlowError from a deadline inside the service is not ours to rename.
    with pytest.raises(trio.TooSlowError):
        await Timeout(own_deadline, 10)("x")


async def test_outer_cancellation_is_not_turned_into_a_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    inner = Sleeper(100)
    svc = Timeout(inner, 50)
    with trio.move_on_after(1) as outer:
        await svc("x")
    assert outer.cancelled_caught
    assert inner.cancelled == 1
