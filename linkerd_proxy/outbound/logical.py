"""The logical level of the outbound proxy: discovery decides where each request goes.

When a control plane is configured, every outbound connection holds the
:class:`~linkerd_proxy.outbound.discover.Discovery` of its original destination
(idle-cached), and each request (or, for opaque TCP, the connection) is sent to a
backend of the current :class:`~linkerd_proxy.outbound.routing.Routing`: a policy
route's split, or the default split, picked by weight.

Backends are services cached per backend (see :mod:`linkerd_proxy.outbound.concrete`):
balancers per logical name, the forwarding stack per address.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TypeVar

import trio

from linkerd_proxy.addrs import NameAddr, SocketAddr
from linkerd_proxy.errors import NoRoute
from linkerd_proxy.http.forward import ForwardAddr
from linkerd_proxy.http.model import Request, Response, get_ext, set_ext
from linkerd_proxy.outbound.concrete import Failing
from linkerd_proxy.outbound.discover import Discovery, DiscoveryClients
from linkerd_proxy.outbound.routing import (
    BackendRef,
    BalanceTo,
    ForwardTo,
    Routing,
    Split,
    rule_for,
)
from linkerd_proxy.stack import IdleCache, Service
from linkerd_proxy.tcp import ConnInfo

Req = TypeVar("Req")
Rsp = TypeVar("Rsp")

HttpService = Service[Request, Response]


def pick(split: Split, rng: random.Random) -> BackendRef:
    """A backend of ``split``, by weight (the first when every weight is 0)."""
    backends = split.backends
    if len(backends) == 1:
        return backends[0][0]
    total = sum(w for _, w in backends)
    if total <= 0:
        return backends[0][0]
    point = rng.uniform(0, total)
    for backend, weight in backends:
        point -= weight
        if point <= 0:
            return backend
    return backends[-1][0]


class Discoveries:
    """The idle cache of :class:`Discovery` per original destination.

    Args:
        clients: the control-plane clients.
        idle: ``OUTBOUND_DISCOVERY_IDLE_TIMEOUT``.
        failfast: how long a connection waits for the first answer.
        background: where the watches and the cache's sweeper run.
    """

    def __init__(
        self, clients: DiscoveryClients, *, idle: float, failfast: float, background: trio.Nursery
    ) -> None:
        self.failfast = failfast

        def new(orig_dst: SocketAddr) -> Discovery:
            return Discovery(orig_dst, clients, background)

        self.cache: IdleCache[SocketAddr, Discovery] = IdleCache(new, idle)
        background.start_soon(self.cache.serve)


class LogicalHttp:
    """``Service[Request, Response]``: route each request by its destination's discovery.

    Args:
        discoveries: per original destination.
        backends: the HTTP backend services.
        forward: the forwarding stack (requests carry a :class:`ForwardAddr`).
    """

    def __init__(
        self,
        discoveries: Discoveries,
        backends: Callable[[NameAddr], HttpService],
        forward: HttpService,
        rng: random.Random | None = None,
    ) -> None:
        self._discoveries = discoveries
        self._balanced = backends
        self._forward = forward
        self._rng = rng or random.Random()

    async def __call__(self, req: Request, /) -> Response:
        conn = get_ext(req.extensions, ConnInfo)
        if conn is None:
            raise RuntimeError("outbound request without connection info")
        with self._discoveries.cache.hold(conn.orig_dst) as disc:
            routing = await disc.routing(self._discoveries.failfast)
            backend = pick(self._split(routing, req), self._rng)
            if isinstance(backend, BalanceTo):
                return await self._balanced(backend.name)(req)
            if isinstance(backend, ForwardTo):
                set_ext(req.extensions, ForwardAddr(backend.addr))
                return await self._forward(req)
            return await Failing[Request, Response](backend.message)(req)

    @staticmethod
    def _split(routing: Routing, req: Request) -> Split:
        if routing.http_rules is None:
            return routing.default
        rule = rule_for(routing.http_rules, req)
        if rule is None:
            raise NoRoute("no route matches the request")
        return rule.split
