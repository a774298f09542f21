"""``OutboundPolicies.Watch``: the client policy of an outbound target.

Where it sits: above ``grpc.client.ControlClient`` and ``discovery.endpoint``;
below the outbound stack, which reads :class:`OutboundPolicy` for the protocol
(detect / opaque / http1 / http2 / grpc / tls), the HTTP and gRPC routes (matches,
filters, timeouts, retries, weighted backends) and failure accrual. A balancer
backend's ``path`` is what ``discovery.destination.open_resolution`` resolves.

The translation (:func:`policy_from_proto`) is pure and strict: a policy missing
a required part raises :class:`InvalidPolicy`, which the watch turns into
:func:`invalid_policy` (every request fails with an internal error), as the
reference does. NOT_FOUND / UNIMPLEMENTED end the watch with ``PolicyNotFound``:
the caller synthesizes a default. The policy ``ControlClient`` must be built with
``is_fatal=policy_is_fatal`` so that those codes end the watch instead of being
retried.

Importing this module loads neither the generated API nor the gRPC bridge: the
gRPC client types are annotations only and the codec is built on first use. It
does load the pure ``grpc.status``, so a proxy without a control plane does not
import it at all (``outbound.discover`` imports it when a watch starts).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import attrs
import trio

import linkerd_proxy.api as api
from linkerd_proxy.addrs import NameAddr, SocketAddr
from linkerd_proxy.discovery.endpoint import (
    addr_to_proto,
    endpoint_from_proto,
)
from linkerd_proxy.discovery.policy_model import (
    Backend,
    Balance,
    ConsecutiveFailures,
    Detect,
    Distribution,
    Fail,
    FailureAccrual,
    FailureInjector,
    Filter,
    Forward,
    GrpcRouteMatch,
    HeaderMatch,
    HeaderModifier,
    HostMatch,
    HttpRouteMatch,
    InternalError,
    OutboundPolicy,
    PathMatch,
    PeakEwma,
    QueryParamMatch,
    Queue,
    Redirect,
    ResourceMeta,
    Retry,
    Route,
    RouteBackend,
    RoutesProtocol,
    Rule,
    SuccessRate,
    Timeouts,
    invalid_policy,
)
from linkerd_proxy.errors import DiscoveryRejected, GrpcError, PolicyNotFound
from linkerd_proxy.grpc.status import Code
from linkerd_proxy.transport.backoff import ExponentialBackoff

if TYPE_CHECKING:
    from linkerd_proxy.grpc.bridge import Codec
    from linkerd_proxy.grpc.client import ControlClient, ControlStream

log = logging.getLogger(__name__)

WATCH = "/io.linkerd.proxy.outbound.OutboundPolicies/Watch"
NOT_FOUND_CODES = frozenset({Code.NOT_FOUND, Code.UNIMPLEMENTED})


class InvalidPolicy(ValueError):
    """A policy from the control plane is missing something it needs."""


@functools.cache
def watch_codec() -> Codec[api.outbound.TrafficSpec, api.outbound.OutboundPolicy]:
    """The codec of ``OutboundPolicies.Watch`` calls (built once, on first use)."""
    from linkerd_proxy.grpc.bridge import Codec  # not at import: see the module doc

    return Codec(bytes, api.outbound.OutboundPolicy.parse)


def policy_is_fatal(error: GrpcError) -> bool:
    """``is_fatal`` for the policy client: also NOT_FOUND and UNIMPLEMENTED."""
    from linkerd_proxy.grpc.client import fatal_for_watch  # not at import: see the module doc

    return fatal_for_watch(error) or error.status in NOT_FOUND_CODES


# ------------------------------------------------------------ translation


def _secs(value: timedelta | None) -> float | None:
    return None if value is None else value.total_seconds()


def _need(value: Any, what: str) -> Any:
    if value is None:
        raise InvalidPolicy(f"missing {what}")
    return value


def meta_from_proto(pb: api.meta.Metadata | None) -> ResourceMeta:
    pb = _need(pb, "metadata")
    if pb.resource is not None:
        r = pb.resource
        return ResourceMeta(r.kind, r.name, r.group, r.namespace, r.section, r.port, False)
    return ResourceMeta(name=pb.default or "")


def backoff_from_proto(pb: api.outbound.ExponentialBackoff | None) -> ExponentialBackoff:
    pb = _need(pb, "backoff")
    try:
        return ExponentialBackoff(
            _need(_secs(pb.min_backoff), "min backoff"),
            _need(_secs(pb.max_backoff), "max backoff"),
            pb.jitter_ratio,
        )
    except ValueError as exc:
        raise InvalidPolicy(str(exc)) from exc


def backend_from_proto(pb: api.outbound.Backend | None) -> Backend:
    pb = _need(pb, "backend")
    meta = meta_from_proto(pb.metadata)
    queue_pb = _need(pb.queue, "queue")
    queue = Queue(queue_pb.capacity, _need(_secs(queue_pb.failfast_timeout), "queue failfast"))
    dispatcher: Balance | Forward | Fail
    if pb.balancer is not None:
        disco = _need(pb.balancer.discovery, "balancer discovery")
        path = _need(disco.dst, "destination get").path
        if pb.balancer.peak_ewma is not None:
            e = pb.balancer.peak_ewma
            load = PeakEwma(_need(_secs(e.default_rtt), "rtt"), _need(_secs(e.decay), "decay"))
        elif pb.balancer.penalty_peak_ewma is not None:
            p = pb.balancer.penalty_peak_ewma
            load = PeakEwma(
                _secs(p.default_rtt) or 0.030,
                _secs(p.decay) or 10.0,
                (
                    _secs(p.penalty) or 5.0,
                    _secs(p.penalty_decay) or 10.0,
                    _secs(p.max_retry_after) or 300.0,
                ),
            )
        else:
            raise InvalidPolicy("missing balancer load")
        dispatcher = Balance(path, load)
    elif pb.forward is not None:
        entry = endpoint_from_proto(pb.forward)
        if entry is None:
            raise InvalidPolicy("invalid forward address")
        dispatcher = Forward(*entry)
    else:
        dispatcher = Fail(f"backend {meta.kind} {meta.namespace}/{meta.name} has no dispatcher")
    return Backend(meta, queue, dispatcher)


def _headers(pb: api.http_types.Headers | None) -> tuple[tuple[str, bytes], ...]:
    return tuple((h.name, h.value) for h in pb.headers) if pb is not None else ()


def filter_from_proto(pb: Any) -> Filter:
    if getattr(pb, "request_header_modifier", None) is not None:
        m = pb.request_header_modifier
        return HeaderModifier(_headers(m.add), _headers(m.set), tuple(m.remove))
    if getattr(pb, "response_header_modifier", None) is not None:
        m = pb.response_header_modifier
        return HeaderModifier(_headers(m.add), _headers(m.set), tuple(m.remove), response=True)
    if getattr(pb, "redirect", None) is not None:
        r = pb.redirect
        scheme = None
        if r.scheme is not None:
            reg = r.scheme.registered
            scheme = (
                api.http_types.SchemeRegistered(reg).name.lower()
                if reg is not None
                else r.scheme.unregistered
            )
        path = r.path
        return Redirect(scheme, r.host, path and path.full, path and path.prefix, r.port, r.status)
    if getattr(pb, "failure_injector", None) is not None:
        f = pb.failure_injector
        ratio = 1.0
        if f.ratio is not None:
            ratio = f.ratio.numerator / f.ratio.denominator if f.ratio.denominator else 0.0
        grpc = isinstance(f, api.grpc_route.GrpcFailureInjector)
        return FailureInjector(f.code if grpc else f.status, f.message, ratio, grpc)
    if getattr(pb, "forbidden", None) is not None:
        return InternalError("forbidden")
    return InternalError("invalid route filter")


def _http_match(pb: api.http_route.HttpRouteMatch) -> HttpRouteMatch:
    path = None
    if pb.path is not None:
        for kind in ("exact", "prefix", "regex"):
            if getattr(pb.path, kind) is not None:
                path = PathMatch(kind, getattr(pb.path, kind))
    method = None
    if pb.method is not None:
        reg = pb.method.registered
        method = (
            api.http_types.HttpMethodRegistered(reg).name
            if reg is not None
            else pb.method.unregistered
        )
    return HttpRouteMatch(
        path,
        tuple(HeaderMatch(h.name, h.exact, h.regex) for h in pb.headers),
        tuple(QueryParamMatch(q.name, q.exact, q.regex) for q in pb.query_params),
        method,
    )


def _grpc_match(pb: api.grpc_route.GrpcRouteMatch) -> GrpcRouteMatch:
    rpc = pb.rpc
    headers = tuple(HeaderMatch(h.name, h.exact, h.regex) for h in pb.headers)
    return GrpcRouteMatch(rpc.service if rpc else "", rpc.method if rpc else "", headers)


def distribution_from_proto(pb: Any) -> Distribution:
    pb = _need(pb, "distribution")

    def route_backend(rb: Any, weight: int) -> RouteBackend:
        rb = _need(rb, "route backend")
        filters = tuple(filter_from_proto(f) for f in rb.filters)
        timeout = _secs(getattr(rb, "request_timeout", None))
        return RouteBackend(backend_from_proto(rb.backend), weight, filters, timeout)

    if pb.first_available is not None:
        return Distribution(
            "first_available", tuple(route_backend(b, 1) for b in pb.first_available.backends)
        )
    if pb.random_available is not None:
        items = pb.random_available.backends
        return Distribution(
            "random_available", tuple(route_backend(w.backend, w.weight) for w in items)
        )
    return Distribution("empty")


_GRPC_CONDITIONS = {
    "cancelled": Code.CANCELLED,
    "deadine_exceeded": Code.DEADLINE_EXCEEDED,
    "resource_exhausted": Code.RESOURCE_EXHAUSTED,
    "internal": Code.INTERNAL,
    "unavailable": Code.UNAVAILABLE,
}


def _retry(pb: Any) -> Retry | None:
    if pb is None:
        return None
    backoff = backoff_from_proto(pb.backoff) if pb.backoff is not None else None
    retry = Retry(pb.max_retries, pb.max_request_bytes, _secs(pb.timeout), backoff)
    cond = pb.conditions
    if isinstance(pb, api.outbound.HttpRouteRetry):
        ranges = tuple((r.start, r.end) for r in cond.status_ranges) if cond else ()
        return attrs.evolve(retry, status_ranges=ranges)
    codes = frozenset(c for f, c in _GRPC_CONDITIONS.items() if cond and getattr(cond, f))
    return attrs.evolve(retry, grpc_codes=codes)


def rule_from_proto(pb: Any) -> Rule:
    matches: list[HttpRouteMatch | GrpcRouteMatch] = []
    for m in getattr(pb, "matches", ()):
        matches.append(
            _grpc_match(m) if isinstance(m, api.grpc_route.GrpcRouteMatch) else _http_match(m)
        )
    t = getattr(pb, "timeouts", None)
    if t is not None:
        timeouts = Timeouts(_secs(t.request), _secs(t.response), _secs(t.idle))
    else:
        timeouts = Timeouts(request=_secs(getattr(pb, "request_timeout", None)))
    return Rule(
        matches=tuple(matches),
        distribution=distribution_from_proto(pb.backends),
        filters=tuple(filter_from_proto(f) for f in pb.filters),
        timeouts=timeouts,
        retry=_retry(getattr(pb, "retry", None)),
        allow_l5d_request_headers=getattr(pb, "allow_l5d_request_headers", False),
    )


def _host(pb: Any) -> HostMatch:
    if pb.exact is not None:
        return HostMatch(exact=pb.exact)
    return HostMatch(suffix=".".join(reversed(pb.suffix.reverse_labels)) if pb.suffix else "")


def route_from_proto(pb: Any) -> Route:
    return Route(
        meta_from_proto(pb.metadata),
        tuple(rule_from_proto(r) for r in pb.rules),
        hosts=tuple(_host(h) for h in getattr(pb, "hosts", ())),
        snis=tuple(_host(h) for h in getattr(pb, "snis", ())),
    )


def accrual_from_proto(pb: api.outbound.FailureAccrual | None) -> FailureAccrual | None:
    if pb is None:
        return None
    if pb.consecutive_failures is not None:
        c = pb.consecutive_failures
        return ConsecutiveFailures(c.max_failures, backoff_from_proto(c.backoff))
    u = _need(pb.unified, "failure accrual kind")
    if not 0.0 <= u.success_rate_threshold <= 1.0:
        raise InvalidPolicy("success rate threshold must be between 0.0 and 1.0")
    window = _secs(u.decay) or 10.0
    return SuccessRate(
        u.success_rate_threshold,
        window,
        u.min_requests,
        u.max_consecutive_failures,
        backoff_from_proto(u.backoff),
    )


def _routes(kind: str, pb: Any) -> RoutesProtocol:
    pb = _need(pb, f"{kind} configuration")
    routes = tuple(route_from_proto(r) for r in pb.routes)
    return RoutesProtocol(kind, routes, accrual_from_proto(getattr(pb, "failure_accrual", None)))


def policy_from_proto(pb: api.outbound.OutboundPolicy) -> OutboundPolicy:
    """Translate one policy.

    Raises:
        InvalidPolicy: a required part (metadata, protocol, detect timeout, queue,
            balancer load, ...) is missing or invalid.
    """
    meta = meta_from_proto(pb.metadata)
    proto = _need(pb.protocol, "protocol")
    if proto.detect is not None:
        d = proto.detect
        timeout = _need(_secs(d.timeout), "detect timeout")
        protocol: Detect | RoutesProtocol = Detect(
            timeout,
            _routes("http1", d.http1),
            _routes("http2", d.http2),
            _routes("opaque", d.opaque),
        )
    else:
        for kind in ("opaque", "http1", "http2", "grpc", "tls"):
            if getattr(proto, kind) is not None:
                protocol = _routes(kind, getattr(proto, kind))
                break
        else:
            raise InvalidPolicy("missing protocol kind")
    return OutboundPolicy(meta, protocol)


# ------------------------------------------------------------------ watch


def traffic_spec(workload: str, target: SocketAddr | NameAddr) -> api.outbound.TrafficSpec:
    """The request for ``target``: an address, or an authority for a name."""
    if isinstance(target, SocketAddr):
        return api.outbound.TrafficSpec(source_workload=workload, addr=addr_to_proto(target))
    return api.outbound.TrafficSpec(source_workload=workload, authority=str(target))


class PolicyWatch:
    """The policies of one watch (each message is a whole policy)."""

    def __init__(
        self,
        target: SocketAddr | NameAddr,
        stream: ControlStream[api.outbound.OutboundPolicy],
        detect_timeout: float,
    ) -> None:
        self.target = target
        self._stream = stream
        self._detect_timeout = detect_timeout

    async def receive(self) -> OutboundPolicy:
        """The next policy (:func:`invalid_policy` if the server's is invalid).

        Raises:
            PolicyNotFound: NOT_FOUND / UNIMPLEMENTED: synthesize a default.
            DiscoveryRejected: INVALID_ARGUMENT / FAILED_PRECONDITION: fail the connection.
            trio.EndOfChannel: the watch was stopped.
        """
        try:
            received = await self._stream.receive()
        except GrpcError as exc:
            if exc.status in NOT_FOUND_CODES:
                raise PolicyNotFound(str(self.target), exc.status) from exc
            raise DiscoveryRejected(str(self.target), exc.status, exc.message) from exc
        try:
            return policy_from_proto(received.message)
        except InvalidPolicy as exc:
            log.warning("client policy for %s misconfigured: %s", self.target, exc)
            return invalid_policy(self._detect_timeout)

    def __aiter__(self) -> PolicyWatch:
        return self

    async def __anext__(self) -> OutboundPolicy:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None


@contextlib.asynccontextmanager
async def open_policy(
    client: ControlClient,
    workload: str,
    target: SocketAddr | NameAddr,
    *,
    detect_timeout: float = 10.0,
) -> AsyncIterator[PolicyWatch]:
    """Watch the outbound policy of ``target`` for the ``async with`` block.

    Args:
        client: the policy client, built with ``is_fatal=policy_is_fatal``.
        workload: ``LINKERD2_PROXY_POLICY_WORKLOAD`` (the JSON text).
        target: the original destination (or a name).
        detect_timeout: the detect timeout of :func:`invalid_policy`.

    Cancellation: leaving the block cancels the watch and resets its stream.
    """
    request = traffic_spec(workload, target)
    async with client.open_stream(WATCH, request, watch_codec(), buffer=4) as stream:
        yield PolicyWatch(target, stream, detect_timeout)
