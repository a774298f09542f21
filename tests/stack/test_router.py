"""Tests for ``linkerd_proxy.stack.router``: Router and MemoRouter dispatch."""

from __future__ import annotations

import pytest

from linkerd_proxy.stack.router import MemoRouter, Router
from linkerd_proxy.stack.service import Service


class _Echo:
    """A service answering ``(target, request)``."""

    def __init__(self, target: str) -> None:
        self.target = target

    async def __call__(self, req: str, /) -> tuple[str, str]:
        return self.target, req


class _Factory:
    """A NewService counting the services it builds."""

    def __init__(self) -> None:
        self.built: list[str] = []

    def __call__(self, target: str, /) -> Service[str, tuple[str, str]]:
        self.built.append(target)
        return _Echo(target)


def _target_of(req: str) -> str:
    if req == "bad":
        raise ValueError("no target")
    return req.split("/", 1)[0]


async def test_router_builds_per_request() -> None:
    factory = _Factory()
    router: Router[str, tuple[str, str], str] = Router(factory, _target_of)
    assert await router("a/1") == ("a", "a/1")
    assert await router("a/2") == ("a", "a/2")
    assert factory.built == ["a", "a"]


async def test_memo_router_reuses_the_last_targets_service() -> None:
    factory = _Factory()
    router: MemoRouter[str, tuple[str, str], str] = MemoRouter(factory, _target_of)
    for i in range(5):
        assert await router(f"a/{i}") == ("a", f"a/{i}")
    assert factory.built == ["a"]


async def test_memo_router_routes_each_target_to_its_own_service() -> None:
    factory = _Factory()
    router: MemoRouter[str, tuple[str, str], str] = MemoRouter(factory, _target_of)
    assert await router("a/1") == ("a", "a/1")
    assert await router("b/1") == ("b", "b/1")
    assert await router("b/2") == ("b", "b/2")
    assert await router("a/2") == ("a", "a/2")
    assert factory.built == ["a", "b", "a"]


async def test_memo_router_refusal_propagates_and_keeps_the_memo() -> None:
    factory = _Factory()
    router: MemoRouter[str, tuple[str, str], str] = MemoRouter(factory, _target_of)
    assert await router("a/1") == ("a", "a/1")
    with pytest.raises(ValueError, match="no target"):
        await router("bad")
    assert await router("a/2") == ("a", "a/2")
    assert factory.built == ["a"]
