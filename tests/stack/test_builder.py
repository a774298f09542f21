"""Tests for linkerd_proxy.stack.builder (and the service protocols it composes)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing
from mypy import api as mypy_api

from linkerd_proxy.errors import ResponseTimeout
from linkerd_proxy.stack import (
    NewService,
    OnService,
    Service,
    ServiceFn,
    Stack,
    service_fn,
    stack,
)

HERE = Path(__file__).parent
ROOT = HERE.parent.parent

Trail = tuple[str, ...]


@attrs.frozen
class Recorder:
    """A service that returns the request trail plus the target it was built for."""

    target: Trail

    async def __call__(self, req: Trail, /) -> Trail:
        return (*req, f"wire{self.target}")


@attrs.frozen
class Tagged:
    """A service that appends its name to the request then calls ``inner``."""

    name: str
    inner: Service[Trail, Trail]

    async def __call__(self, req: Trail, /) -> Trail:
        return await self.inner((*req, self.name))


TrailStack = NewService[Trail, Service[Trail, Trail]]


def tagging(name: str, built: list[str]) -> Callable[[TrailStack], NewService[Trail, Tagged]]:
    """A layer that records when it builds and adds its name to targets and requests."""

    def apply(inner: TrailStack) -> NewService[Trail, Tagged]:
        def new(target: Trail) -> Tagged:
            built.append(name)
            return Tagged(name, inner((*target, name)))

        return new

    return apply


async def test_three_layers_nest_first_push_nearest_the_wire() -> None:
    built: list[str] = []
    s = (
        stack(Recorder)
        .push(tagging("a", built))
        .push(tagging("b", built))
        .push(tagging("c", built))
    )
    svc = s(("t",))
    # The last push sees the target first and builds first; the first push is
    # nearest the wire, so it sees the most-decorated target.
    assert built == ["c", "b", "a"]
    assert await svc(()) == ("c", "b", "a", "wire('t', 'c', 'b', 'a')")


async def test_push_returns_a_new_stack_and_leaves_the_old_one_alone() -> None:
    built: list[str] = []
    base = stack(Recorder)
    pushed = base.push(tagging("a", built))
    assert base(("t",)) == Recorder(("t",))
    assert built == []
    assert isinstance(pushed(("t",)), Tagged)
    assert built == ["a"]


async def test_stack_is_a_new_service_and_into_new_service_unwraps() -> None:
    def new(t: int) -> ServiceFn[int, int]:
        async def add(req: int) -> int:
            return req + t

        return service_fn(add)

    s = stack(new)
    assert s.into_new_service() is new
    assert await s(2)(40) == 42
    assert await s.into_new_service()(1)(1) == 2


async def test_lambdas_and_async_functions_fit_the_protocols() -> None:
    async def double(req: int) -> int:
        return req * 2

    s = stack(lambda _t: double)
    assert s("anything") is double
    assert await s("x")(21) == 42


async def test_push_map_target_maps_before_building() -> None:
    seen: list[str] = []

    def new(t: str) -> ServiceFn[str, str]:
        seen.append(t)

        async def echo(req: str) -> str:
            return f"{t}:{req}"

        return service_fn(echo)

    # A lambda's parameter type cannot be inferred: annotate the result.
    s: Stack[int, ServiceFn[str, str]] = stack(new).push_map_target(lambda n: f"port-{n}")
    assert await s(80)("hi") == "port-80:hi"
    assert seen == ["port-80"]


async def test_push_on_service_wraps_each_built_service() -> None:
    builds: list[str] = []

    def new(t: str) -> Recorder:
        builds.append(t)
        return Recorder((t,))

    def wrap(inner: Recorder) -> Tagged:
        return Tagged("outer", inner)

    s = stack(new).push_on_service(wrap)
    assert isinstance(s.inner, OnService)
    svc = s("x")
    assert isinstance(svc, Tagged)
    assert await svc(("req",)) == ("req", "outer", "wire('x',)")
    assert builds == ["x"]


async def test_push_timeout_wraps_services(autojump_clock: trio.testing.MockClock) -> None:
    async def slow(req: int) -> int:
        await trio.sleep(10)
        return req

    unbounded = stack(lambda _t: slow).push_timeout(None)
    assert await unbounded("t")(5) == 5
    bounded = stack(lambda _t: slow).push_timeout(1.0)
    with pytest.raises(ResponseTimeout):
        await bounded("t")(5)


async def test_service_fn_wraps_an_async_function() -> None:
    async def f(req: str) -> int:
        return len(req)

    svc = service_fn(f)
    assert svc == ServiceFn(f)
    assert await svc("four") == 4


def _mypy(*args: str) -> tuple[str, int]:
    out, err, status = mypy_api.run(
        ["--strict", "--no-error-summary", "--config-file", str(ROOT / "pyproject.toml"), *args]
    )
    return out + err, status


async def test_typed_example_passes_mypy_strict() -> None:
    out, status = _mypy(str(HERE / "typecheck_example.py"))
    assert status == 0, out


async def test_mypy_rejects_mistyped_stacks(tmp_path: Path) -> None:
    # The types really flow: wrong annotations and wrong layers are errors, so the
    # builder is not silently producing Any.
    snippet = """
from linkerd_proxy.errors import ResponseTimeout
from linkerd_proxy.stack import Stack, Timeout, MapTarget, stack

class Echo:
    async def __call__(self, req: bytes, /) -> bytes:
        return req

def new(t: int) -> Echo:
    return Echo()

def to_int(s: str) -> int:
    return int(s)

ok: Stack[str, Timeout[bytes, bytes]] = stack(new).push(MapTarget.layer(to_int)).push_timeout(1)
wrong_target: Stack[bytes, Echo] = stack(new).push(MapTarget.layer(to_int))
wrong_rsp: Stack[int, Timeout[bytes, str]] = stack(new).push_timeout(1)
not_a_service = stack(lambda t: 5).push_timeout(1)
"""
    example = tmp_path / "mistyped.py"
    example.write_text(snippet)
    out, status = _mypy(str(example))
    assert status == 1, out
    lines = [line for line in out.splitlines() if ": error:" in line]
    # Line 15 is well typed; 16, 17 and 18 are each wrong.
    assert sorted({line.split(":")[1] for line in lines}) == ["16", "17", "18"], out
