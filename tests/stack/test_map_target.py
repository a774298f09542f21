"""Tests for linkerd_proxy.stack.map_target."""

from __future__ import annotations

import attrs

from linkerd_proxy.stack import MapTarget


@attrs.frozen
class Logical:
    name: str
    port: int


@attrs.frozen
class Endpoint:
    port: int


async def test_layer_maps_each_target_before_the_inner_factory() -> None:
    built: list[Endpoint] = []

    def new_endpoint(t: Endpoint) -> str:
        built.append(t)
        return f"svc-for-{t.port}"

    def to_endpoint(t: Logical) -> Endpoint:
        return Endpoint(t.port)

    mapped = MapTarget.layer(to_endpoint)(new_endpoint)
    assert isinstance(mapped, MapTarget)
    assert mapped(Logical("web", 80)) == "svc-for-80"
    assert mapped(Logical("api", 8080)) == "svc-for-8080"
    assert built == [Endpoint(80), Endpoint(8080)]


async def test_map_target_calls_fn_once_per_build_and_is_a_value() -> None:
    calls: list[int] = []

    def fn(n: int) -> int:
        calls.append(n)
        return n * 10

    def new(t: int) -> int:
        return t + 1

    m = MapTarget(new, fn)
    assert m(4) == 41
    assert calls == [4]
    # Frozen attrs: hashable and comparable, so it can sit inside other targets/caches.
    assert m == MapTarget(new, fn)
    assert hash(m) == hash(MapTarget(new, fn))
