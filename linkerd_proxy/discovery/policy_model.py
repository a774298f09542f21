"""The outbound policy model: what ``OutboundPolicies.Watch`` says about a target.

Plain frozen values (no I/O): the protocol (detect / opaque / http1 / http2 / grpc /
tls), routes (matches, filters, timeouts, retries, weighted backends) and failure
accrual. ``discovery.policy`` builds them from the API messages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from linkerd_proxy.addrs import SocketAddr
from linkerd_proxy.discovery.endpoint import EndpointMeta
from linkerd_proxy.transport.backoff import ExponentialBackoff

if TYPE_CHECKING:
    # Annotation only: the outbound stacks read these models without a control plane.
    from linkerd_proxy.grpc.status import Code


@attrs.frozen
class ResourceMeta:
    """Which resource a policy part came from (``default`` for synthesized ones)."""

    kind: str = "default"
    name: str = ""
    group: str = ""
    namespace: str = ""
    section: str = ""
    port: int = 0
    is_default: bool = True


@attrs.frozen
class Queue:
    capacity: int
    failfast_timeout: float


@attrs.frozen
class PeakEwma:
    default_rtt: float = 0.030
    decay: float = 10.0
    #: Set for the penalty variant (seconds): penalty, penalty_decay, max_retry_after.
    penalty: tuple[float, float, float] | None = None


@attrs.frozen
class Balance:
    """Balance (P2C) over the endpoints of ``Destination.Get(path)``."""

    path: str
    load: PeakEwma


@attrs.frozen
class Forward:
    """Send to one endpoint."""

    addr: SocketAddr
    meta: EndpointMeta


@attrs.frozen
class Fail:
    """Fail every request (502)."""

    message: str


@attrs.frozen
class Backend:
    meta: ResourceMeta
    queue: Queue
    dispatcher: Balance | Forward | Fail


@attrs.frozen
class RouteBackend:
    backend: Backend
    weight: int = 1
    filters: tuple[Any, ...] = ()
    request_timeout: float | None = None


@attrs.frozen
class Distribution:
    """``kind`` is ``empty``, ``first_available`` or ``random_available``."""

    kind: str
    backends: tuple[RouteBackend, ...] = ()


@attrs.frozen
class PathMatch:
    """``kind`` is ``exact``, ``prefix`` or ``regex``."""

    kind: str
    value: str


@attrs.frozen
class HeaderMatch:
    name: str
    exact: bytes | None = None
    regex: str | None = None


@attrs.frozen
class QueryParamMatch:
    name: str
    exact: str | None = None
    regex: str | None = None


@attrs.frozen
class HttpRouteMatch:
    path: PathMatch | None = None
    headers: tuple[HeaderMatch, ...] = ()
    query_params: tuple[QueryParamMatch, ...] = ()
    method: str | None = None


@attrs.frozen
class GrpcRouteMatch:
    service: str = ""
    method: str = ""
    headers: tuple[HeaderMatch, ...] = ()


@attrs.frozen
class HostMatch:
    exact: str | None = None
    suffix: str | None = None  # e.g. "example.com" for *.example.com


@attrs.frozen
class HeaderModifier:
    """``response`` is false for request header modifiers."""

    add: tuple[tuple[str, bytes], ...] = ()
    set: tuple[tuple[str, bytes], ...] = ()
    remove: tuple[str, ...] = ()
    response: bool = False


@attrs.frozen
class Redirect:
    scheme: str | None
    host: str
    path_full: str | None
    path_prefix: str | None
    port: int
    status: int


@attrs.frozen
class FailureInjector:
    """``status`` is an HTTP status, or a gRPC code when ``grpc``."""

    status: int
    message: str
    ratio: float = 1.0
    grpc: bool = False


@attrs.frozen
class InternalError:
    message: str


Filter = HeaderModifier | Redirect | FailureInjector | InternalError


@attrs.frozen
class Timeouts:
    request: float | None = None
    response: float | None = None
    idle: float | None = None


@attrs.frozen
class Retry:
    """Route retries; ``status_ranges`` for HTTP, ``grpc_codes`` for gRPC."""

    max_retries: int
    max_request_bytes: int
    timeout: float | None
    backoff: ExponentialBackoff | None
    status_ranges: tuple[tuple[int, int], ...] = ()
    grpc_codes: frozenset[Code] = frozenset()


@attrs.frozen
class Rule:
    matches: tuple[HttpRouteMatch | GrpcRouteMatch, ...]
    distribution: Distribution
    filters: tuple[Filter, ...] = ()
    timeouts: Timeouts = Timeouts()
    retry: Retry | None = None
    allow_l5d_request_headers: bool = False


@attrs.frozen
class Route:
    """An HTTPRoute or GRPCRoute (or an opaque/TLS route: no hosts, no matches)."""

    meta: ResourceMeta
    rules: tuple[Rule, ...]
    hosts: tuple[HostMatch, ...] = ()
    snis: tuple[HostMatch, ...] = ()


@attrs.frozen
class ConsecutiveFailures:
    max_failures: int
    backoff: ExponentialBackoff


@attrs.frozen
class SuccessRate:
    success_rate_threshold: float
    window: float
    min_requests: int
    max_consecutive_failures: int
    backoff: ExponentialBackoff


FailureAccrual = ConsecutiveFailures | SuccessRate


@attrs.frozen
class RoutesProtocol:
    """``kind`` is ``http1``, ``http2``, ``grpc``, ``opaque`` or ``tls``."""

    kind: str
    routes: tuple[Route, ...] = ()
    failure_accrual: FailureAccrual | None = None


@attrs.frozen
class Detect:
    timeout: float
    http1: RoutesProtocol
    http2: RoutesProtocol
    opaque: RoutesProtocol


@attrs.frozen
class OutboundPolicy:
    meta: ResourceMeta
    protocol: Detect | RoutesProtocol

    def backends(self) -> frozenset[Backend]:
        """Every backend any route may use."""
        protos = (
            [self.protocol.http1, self.protocol.http2, self.protocol.opaque]
            if isinstance(self.protocol, Detect)
            else [self.protocol]
        )
        return frozenset(
            rb.backend
            for p in protos
            for route in p.routes
            for rule in route.rules
            for rb in rule.distribution.backends
        )


def invalid_policy(
    detect_timeout: float, reason: str = "invalid client policy configuration"
) -> OutboundPolicy:
    """The policy used when the control plane's one is invalid: every request fails."""
    meta = ResourceMeta(name="invalid")
    rule = Rule(
        matches=(HttpRouteMatch(),),
        distribution=Distribution("empty"),
        filters=(InternalError(reason),),
    )
    routes = (Route(meta, (rule,)),)
    opaque = RoutesProtocol("opaque", (Route(meta, (attrs.evolve(rule, matches=()),)),))
    http1, http2 = RoutesProtocol("http1", routes), RoutesProtocol("http2", routes)
    return OutboundPolicy(meta, Detect(detect_timeout, http1, http2, opaque))
