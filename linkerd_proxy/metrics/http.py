"""Legacy HTTP metrics: ``request_total``, ``response_latency_ms``, ``response_total``.

Sits on the metrics registry, under the HTTP metrics layer
(``linkerd_proxy.http.metrics_layer``), which resolves one
:class:`HttpTargetMetrics` per target and reports each request through it. Pure:
no I/O, no trio.

Label layouts are the reference's (``linkerd/app/core/src/metrics.rs``,
``linkerd/http/metrics/src/requests/report.rs``, checked against the fixtures of
``linkerd/app/integration/src/tests/telemetry.rs``):

- inbound **T**: ``direction="inbound",[authority,]target_addr,target_ip,target_port,``
  server TLS``,srv_group,srv_kind,srv_name,srv_port,route_group,route_kind,route_name,
  authz_group,authz_kind,authz_name``;
- outbound **T**: ``direction="outbound",[authority,]target_addr,target_ip,target_port,``
  client TLS``[,dst_*]``;
- ``request_total{T}``; ``response_latency_ms{T,status_code}`` (integer
  milliseconds, :data:`~linkerd_proxy.metrics.registry.LATENCY_MS_BUCKETS`);
  ``response_total{T,[status_code,]classification,grpc_status,error}`` where
  ``status_code`` is absent when the call failed before a response head.

Families are registered in the reference's order (request_total,
response_latency_ms, response_total).
"""

from __future__ import annotations

import enum

import attrs

from .labels import (
    AuthzLabels,
    ClientTlsLabels,
    Direction,
    DstLabels,
    NoClientTls,
    NoServerTls,
    RouteLabels,
    ServerLabels,
    ServerTlsLabels,
    TargetAddrLabels,
    join,
    label,
)
from .registry import (
    LATENCY_MS_BUCKETS,
    Counter,
    CounterFamily,
    Histogram,
    HistogramFamily,
    Registry,
)

__all__ = [
    "DEFAULT_ROUTE",
    "Classification",
    "HttpClassLabels",
    "HttpMetrics",
    "HttpResponseLabels",
    "HttpStatusLabels",
    "HttpTargetLabels",
    "HttpTargetMetrics",
    "InboundHttpLabels",
    "OutboundHttpLabels",
]

#: The route the reference synthesizes for default inbound policies.
DEFAULT_ROUTE = RouteLabels(group="", kind="default", name="default")


def _none_to_empty(value: str | None) -> str:
    return "" if value is None else value


@attrs.frozen
class InboundHttpLabels:
    """Inbound **T**: the target, server TLS, and the policy that admitted it.

    ``authority`` is rendered only when set (``INBOUND_METRICS_AUTHORITY_LABELS=unsafe``).
    """

    target: TargetAddrLabels
    tls: ServerTlsLabels
    srv: ServerLabels
    route: RouteLabels
    authz: AuthzLabels
    authority: str | None = None

    @classmethod
    def default_policy(
        cls,
        target: TargetAddrLabels,
        tls: ServerTlsLabels = NoServerTls.NO_CLIENT_HELLO,
        *,
        policy: str = "all-unauthenticated",
        authority: str | None = None,
    ) -> InboundHttpLabels:
        """Labels under a synthesized default policy (standalone: ``all-unauthenticated``).

        The reference names the server and the authorization after the policy and
        the route ``default``, all of kind ``default`` with an empty group.
        """
        return cls(
            target=target,
            tls=tls,
            srv=ServerLabels.default_policy(policy, target.addr.port),
            route=DEFAULT_ROUTE,
            authz=AuthzLabels(group="", kind="default", name=policy),
            authority=authority,
        )

    def render(self) -> str:
        return join(
            Direction.INBOUND.render(),
            label("authority", self.authority) if self.authority is not None else "",
            self.target.render(),
            self.tls.render(),
            self.srv.render(),
            self.route.render(),
            self.authz.render(),
        )


@attrs.frozen
class OutboundHttpLabels:
    """Outbound **T**: the endpoint, client TLS, the logical authority, ``dst_*``.

    ``authority`` is absent (not empty) when the logical target is not a name.
    """

    target: TargetAddrLabels
    tls: ClientTlsLabels = NoClientTls.NOT_PROVIDED_BY_SERVICE_DISCOVERY
    authority: str | None = None
    dst: DstLabels = attrs.field(factory=DstLabels)

    def render(self) -> str:
        return join(
            Direction.OUTBOUND.render(),
            label("authority", self.authority) if self.authority is not None else "",
            self.target.render(),
            self.tls.render(),
            self.dst.render(),
        )


HttpTargetLabels = InboundHttpLabels | OutboundHttpLabels


class Classification(enum.Enum):
    """``classification="success"|"failure"``."""

    SUCCESS = "success"
    FAILURE = "failure"

    def render(self) -> str:
        return f'classification="{self.value}"'


@attrs.frozen(cache_hash=True)
class HttpClassLabels:
    """``classification,grpc_status,error``; empty values render as ``""``."""

    classification: Classification
    grpc_status: int | None = None
    error: str = attrs.field(default="", converter=_none_to_empty)

    def render(self) -> str:
        return join(
            self.classification.render(),
            label("grpc_status", "" if self.grpc_status is None else self.grpc_status),
            label("error", self.error),
        )


@attrs.frozen
class HttpStatusLabels:
    """``response_latency_ms`` labels: **T** then ``status_code``."""

    target: HttpTargetLabels
    status_code: int

    def render(self) -> str:
        return join(self.target.render(), label("status_code", self.status_code))


@attrs.frozen
class HttpResponseLabels:
    """``response_total`` labels: **T**, ``status_code`` (if any), then the class."""

    target: HttpTargetLabels
    status_code: int | None
    cls: HttpClassLabels

    def render(self) -> str:
        return join(
            self.target.render(),
            label("status_code", self.status_code) if self.status_code is not None else "",
            self.cls.render(),
        )


class HttpMetrics:
    """The legacy HTTP families, shared by the inbound and outbound stacks.

    Args:
      registry: where to register ``request_total``, ``response_latency_ms`` and
        ``response_total``.

    Raises:
      ValueError: the families are already registered on ``registry``.
    """

    def __init__(self, registry: Registry) -> None:
        self.request_total = registry.register(
            CounterFamily[HttpTargetLabels]("request_total", "Total count of HTTP requests.")
        )
        self.response_latency_ms = registry.register(
            HistogramFamily[HttpStatusLabels](
                "response_latency_ms",
                "Elapsed times between a request's headers being received and its "
                "response stream completing",
                LATENCY_MS_BUCKETS,
            )
        )
        self.response_total = registry.register(
            CounterFamily[HttpResponseLabels]("response_total", "Total count of HTTP responses.")
        )

    def target(self, labels: HttpTargetLabels) -> HttpTargetMetrics:
        """The per-target handle; resolve it once per target (or connection)."""
        return HttpTargetMetrics(self, labels)


class HttpTargetMetrics:
    """One target's series; caches the per-status and per-class handles.

    The caches are bounded by the statuses and classes a target sees (a few
    dozen at most: status codes are 100..999, classes are few).
    """

    __slots__ = ("_latency", "_metrics", "_responses", "labels", "requests")

    def __init__(self, metrics: HttpMetrics, labels: HttpTargetLabels) -> None:
        self._metrics = metrics
        self.labels = labels
        self.requests: Counter = metrics.request_total.get(labels)
        self._latency: dict[int, Histogram] = {}
        self._responses: dict[tuple[int | None, HttpClassLabels], Counter] = {}

    def request(self) -> None:
        """Count one request."""
        self.requests.inc()

    def latency(self, status_code: int, elapsed_ms: int) -> None:
        """Observe one response's latency in (whole) milliseconds."""
        series = self._latency.get(status_code)
        if series is None:
            series = self._metrics.response_latency_ms.get(
                HttpStatusLabels(self.labels, status_code)
            )
            self._latency[status_code] = series
        series.observe(elapsed_ms)

    def response(self, status_code: int | None, cls: HttpClassLabels) -> None:
        """Count one classified response (``status_code`` ``None``: no response head)."""
        key = (status_code, cls)
        series = self._responses.get(key)
        if series is None:
            series = self._metrics.response_total.get(
                HttpResponseLabels(self.labels, status_code, cls)
            )
            self._responses[key] = series
        series.inc()
