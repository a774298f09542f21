"""The concrete level of the outbound proxy: one service per backend.

A :class:`~linkerd_proxy.outbound.routing.BackendRef` becomes a service:

- ``BalanceTo(name)``: ``Queue(Balancer(EndpointPool))`` fed by
  ``Destination.Get(name)``. The resolution starts with the first request (a
  NewService spawns nothing) and stops when the idle cache evicts the balancer;
  an endpoint's connection is opened only when a request picks it, and a removed
  endpoint is never dialled again (the pool's contract).
- ``ForwardTo(addr)``: the forwarding stack to one address.
- ``FailWith(message)``: every request fails with 502.

HTTP and TCP each have their own caches of these, keyed by backend.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import trio

from linkerd_proxy.addrs import NameAddr
from linkerd_proxy.balance import Balancer, Endpoint, EndpointPool, EwmaConfig, TcpBalancer
from linkerd_proxy.balance.pool import serve_updates
from linkerd_proxy.discovery.destination import open_resolution
from linkerd_proxy.discovery.endpoint import EndpointMeta
from linkerd_proxy.discovery.updates import DoesNotExist
from linkerd_proxy.errors import BackendFailed, DiscoveryRejected, FailFast
from linkerd_proxy.http.loadshed import Queue
from linkerd_proxy.stack import NewService, Service

if TYPE_CHECKING:
    from linkerd_proxy.grpc.client import ControlClient

log = logging.getLogger(__name__)

Req = TypeVar("Req")
Rsp = TypeVar("Rsp")


class Balanced(Generic[Req, Rsp]):
    """A balancer over ``Destination.Get(name)`` behind a fail-fast queue.

    Args:
        name: the logical name to resolve.
        client: the Destination service client.
        context_token: ``DESTINATION_CONTEXT``.
        pool: the endpoint set the resolution feeds.
        balancer: picks an endpoint from ``pool`` per call.
        queue_capacity / failfast_timeout: the queue in front (504 when no
            endpoint is ready for that long).
        background: where the resolution runs.
    """

    def __init__(
        self,
        name: NameAddr,
        client: ControlClient,
        context_token: str,
        pool: EndpointPool[EndpointMeta, Service[Req, Rsp]],
        balancer: Balancer[EndpointMeta] | TcpBalancer[EndpointMeta, Req, Rsp],
        *,
        queue_capacity: int,
        failfast_timeout: float,
        background: trio.Nursery,
    ) -> None:
        self.name = name
        self._client = client
        self._token = context_token
        self._pool = pool
        self._balancer = balancer
        self._queue: Queue[Req, Rsp] = Queue(balancer, queue_capacity, failfast_timeout)  # type: ignore[arg-type]
        self._background = background
        self._failfast = failfast_timeout
        self._scope: trio.CancelScope | None = None

    async def __call__(self, req: Req, /) -> Rsp:
        """Send ``req`` through the queue to the balancer.

        When every endpoint failed to connect, the request (which reached none of
        them) waits, within the fail-fast timeout, for an endpoint to become ready
        again, as it waits for an unready endpoint in the reference (linkerd2#2550):
        so an endpoint added meanwhile serves it, and otherwise it fails fast.

        Raises:
            FailFast: no endpoint became ready within the fail-fast timeout.
        """
        if self._scope is None:
            self._scope = trio.CancelScope()
            self._background.start_soon(self._resolve, self._scope)
        deadline = trio.current_time() + self._failfast
        while True:
            try:
                return await self._queue(req)
            except Exception as exc:
                if not self._pool.is_connect_failure(exc) or self._pool.is_ready():
                    raise
                with trio.move_on_at(deadline):
                    await self._pool.ready()
                if not self._pool.is_ready():
                    raise FailFast() from exc

    async def _resolve(self, scope: trio.CancelScope) -> None:
        with scope:
            try:
                async with open_resolution(self._client, str(self.name), self._token) as res:
                    await serve_updates(self._pool, res)
            except* DiscoveryRejected as group:
                log.info("resolution of %s rejected: %s", self.name, group.exceptions[0])
                await self._pool.update(DoesNotExist())

    async def aclose(self) -> None:
        """Stop resolving and close every endpoint (idle-cache eviction)."""
        if self._scope is not None:
            self._scope.cancel()
        await self._balancer.aclose()


class Failing(Generic[Req, Rsp]):
    """A ``Fail`` backend: every call raises :class:`BackendFailed`."""

    def __init__(self, message: str) -> None:
        self.message = message

    async def __call__(self, req: Req, /) -> Rsp:
        await trio.lowlevel.checkpoint()
        raise BackendFailed(self.message)


def _new_balanced(
    client: ControlClient,
    context_token: str,
    endpoint_for: Callable[[NameAddr], NewService[Endpoint[EndpointMeta], Service[Req, Rsp]]],
    balancer: Callable[[EndpointPool[EndpointMeta, Service[Req, Rsp]]], Any],
    *,
    ewma: EwmaConfig,
    queue_capacity: int,
    failfast_timeout: float,
    background: trio.Nursery,
) -> Callable[[NameAddr], Balanced[Req, Rsp]]:
    def new(name: NameAddr) -> Balanced[Req, Rsp]:
        pool: EndpointPool[EndpointMeta, Service[Req, Rsp]] = EndpointPool(
            endpoint_for(name), ewma=ewma
        )
        return Balanced(
            name,
            client,
            context_token,
            pool,
            balancer(pool),
            queue_capacity=queue_capacity,
            failfast_timeout=failfast_timeout,
            background=background,
        )

    return new


def new_balanced_http(
    client: ControlClient,
    context_token: str,
    endpoint_for: Callable[[NameAddr], NewService[Endpoint[EndpointMeta], Service[Req, Rsp]]],
    *,
    ewma: EwmaConfig,
    queue_capacity: int,
    failfast_timeout: float,
    background: trio.Nursery,
) -> Callable[[NameAddr], Balanced[Req, Rsp]]:
    """A NewService: name -> HTTP balancer (P2C over PeakEWMA, per request)."""
    return _new_balanced(
        client,
        context_token,
        endpoint_for,
        Balancer,  # type: ignore[arg-type]  # HTTP: Req/Rsp are Request/Response
        ewma=ewma,
        queue_capacity=queue_capacity,
        failfast_timeout=failfast_timeout,
        background=background,
    )


def new_balanced_tcp(
    client: ControlClient,
    context_token: str,
    endpoint_for: Callable[[NameAddr], NewService[Endpoint[EndpointMeta], Service[Req, Rsp]]],
    *,
    ewma: EwmaConfig,
    queue_capacity: int,
    failfast_timeout: float,
    background: trio.Nursery,
) -> Callable[[NameAddr], Balanced[Req, Rsp]]:
    """A NewService: name -> TCP balancer (P2C per connection)."""
    return _new_balanced(
        client,
        context_token,
        endpoint_for,
        TcpBalancer,
        ewma=ewma,
        queue_capacity=queue_capacity,
        failfast_timeout=failfast_timeout,
        background=background,
    )
