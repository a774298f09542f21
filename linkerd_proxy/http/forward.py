"""The shared half of both directions' HTTP stacks: route, cache, meter, send.

Both the inbound and the outbound proxy (standalone) send each request to the
original destination of its connection, keeping one cached stack per
``(address, authority)``: one connection pool per Host, as the reference does::

    MaxInFlight   the direction's in-flight limit, excess shed with 503
    Router        target = ForwardTarget(original destination, authority)
    idle cache    the direction's discovery idle timeout
    NewHttpMetrics  request_total, response_total, response_latency_ms
    HttpEndpoint  HTTP/1 pool or HTTP/2 connection to the address

Only the labels and the connect-side metrics differ between directions.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
import trio

from linkerd_proxy.addrs import SocketAddr
from linkerd_proxy.http.endpoint import HttpEndpoint
from linkerd_proxy.http.h2.settings import H2ClientSettings
from linkerd_proxy.http.loadshed import MaxInFlight
from linkerd_proxy.http.metrics_layer import NewHttpMetrics
from linkerd_proxy.http.model import Request, Response, get_ext
from linkerd_proxy.metrics.http import HttpMetrics, HttpTargetLabels
from linkerd_proxy.stack import Service, stack
from linkerd_proxy.stack.router import MemoRouter
from linkerd_proxy.tcp import ConnInfo, ConnMetrics, MeteredStream
from linkerd_proxy.tcp.forward import Connect
from linkerd_proxy.transport.backoff import ExponentialBackoff

HttpService = Service[Request, Response]


@attrs.frozen
class ForwardTarget:
    """Where a request goes: its connection's original destination, per authority."""

    addr: SocketAddr
    authority: str | None
    #: The inbound connection's TLS label set (part of the metrics labels).
    tls: object = None


@attrs.frozen
class ForwardAddr:
    """Request extension: forward to this address instead of the original destination
    (set by discovery, e.g. a profile's endpoint or a policy's forward backend)."""

    addr: SocketAddr


def forward_target(req: Request) -> ForwardTarget:
    """The target of a request (its connection's :class:`ConnInfo` must be set).

    Raises:
        RuntimeError: the request carries no connection info (a wiring bug).
    """
    override = get_ext(req.extensions, ForwardAddr)
    conn = get_ext(req.extensions, ConnInfo)
    if override is not None:
        return ForwardTarget(override.addr, req.authority, conn.tls if conn else None)
    if conn is None:
        raise RuntimeError("request without connection info")
    return ForwardTarget(conn.orig_dst, req.authority, conn.tls)


@attrs.frozen
class ForwardParams:
    """How one direction forwards HTTP (all from its configuration)."""

    dial: Connect
    max_idle: int
    pool_idle_timeout: float
    cache_idle_timeout: float
    #: ``None``: the caller puts its own limit above (the discovery stacks do).
    max_in_flight: int | None
    h2: H2ClientSettings
    connect_backoff: ExponentialBackoff | None = None
    failfast_timeout: float = 0.0


def new_forward_service(
    params: ForwardParams,
    *,
    metrics: HttpMetrics,
    labels: Callable[[ForwardTarget], HttpTargetLabels],
    connect_metrics: Callable[[ForwardTarget], ConnMetrics],
    background: trio.Nursery,
) -> HttpService:
    """Build the shared service (see the module docstring).

    Args:
        params: the direction's settings.
        metrics: the HTTP families.
        labels: a target's label set.
        connect_metrics: opens the connect-side TCP metrics of a new connection.
        background: where connection and cache tasks run.
    """

    def new_endpoint(target: ForwardTarget) -> HttpEndpoint:
        async def connect() -> trio.abc.Stream:
            stream = await params.dial(target.addr)
            return MeteredStream(stream, connect_metrics(target))

        return HttpEndpoint(
            target.addr,
            connect,
            max_idle=params.max_idle,
            idle_timeout=params.pool_idle_timeout,
            h2=params.h2,
            background=background,
            connect_backoff=params.connect_backoff,
            failfast_timeout=params.failfast_timeout,
        )

    cached = (
        stack(new_endpoint)
        .push(NewHttpMetrics.layer(metrics, labels))
        .push_idle_cached(params.cache_idle_timeout, background)
    )
    router = MemoRouter(cached, forward_target)
    if params.max_in_flight is None:
        return router
    return MaxInFlight(router, params.max_in_flight)
