"""A typed usage example of the stack builder, checked by ``mypy --strict`` in a test.

Not collected by pytest (no ``test_`` prefix). Every assignment below carries an
explicit annotation, so if the builder's types stopped flowing (or decayed to
``Any``, which test_builder checks separately) mypy would report it here.
"""

from __future__ import annotations

import attrs
import trio

from linkerd_proxy.stack import (
    Cached,
    MapTarget,
    NewService,
    Service,
    ServiceFn,
    Stack,
    Timeout,
    service_fn,
    stack,
)


@attrs.frozen
class Endpoint:
    port: int


@attrs.frozen
class Logical:
    name: str
    port: int


class Echo:
    def __init__(self, target: Endpoint) -> None:
        self.target = target

    async def __call__(self, req: bytes, /) -> bytes:
        return req


async def upper(req: str) -> str:
    return req.upper()


def to_endpoint(t: Logical) -> Endpoint:
    return Endpoint(t.port)


def build(nursery: trio.Nursery) -> None:
    base: Stack[Endpoint, Echo] = stack(Echo)
    mapped: Stack[Logical, Echo] = base.push(MapTarget.layer(to_endpoint))
    timed: Stack[Logical, Timeout[bytes, bytes]] = mapped.push_timeout(1.0)
    cached: Stack[Logical, Cached[bytes, bytes]] = timed.push_idle_cached(5.0, nursery)
    as_new: NewService[Logical, Service[bytes, bytes]] = cached
    svc: Service[bytes, bytes] = as_new(Logical("a", 80))
    del svc

    # map_target and on_service shorthands keep the types too.
    ports: Stack[str, Echo] = base.push_map_target(lambda s: Endpoint(int(s)))
    sized: Stack[str, ServiceFn[bytes, int]] = ports.push_on_service(lambda_len)
    del sized

    # A plain function and an async function satisfy the protocols.
    def new_upper(t: Endpoint) -> ServiceFn[str, str]:
        return service_fn(upper)

    plain: Service[str, str] = upper
    fns: Stack[Endpoint, ServiceFn[str, str]] = stack(new_upper)
    del plain, fns


def lambda_len(echo: Echo) -> ServiceFn[bytes, int]:
    async def call(req: bytes) -> int:
        return len(await echo(req))

    return ServiceFn(call)
