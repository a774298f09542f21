"""OutboundPolicies.Watch: policy translation, invalid policies, NotFound, the watch."""

from __future__ import annotations

from datetime import timedelta

import pytest
import trio
from grpclib.const import Status

import linkerd_proxy.api as api
from linkerd_proxy.addrs import NameAddr, SocketAddr
from linkerd_proxy.discovery.endpoint import addr_to_proto
from linkerd_proxy.discovery.policy import (
    Balance,
    ConsecutiveFailures,
    Detect,
    FailureInjector,
    Forward,
    HeaderModifier,
    InternalError,
    InvalidPolicy,
    PeakEwma,
    Queue,
    Redirect,
    Timeouts,
    open_policy,
    policy_from_proto,
    policy_is_fatal,
)
from linkerd_proxy.errors import DiscoveryRejected, PolicyNotFound
from linkerd_proxy.grpc.bridge import Bridge
from linkerd_proxy.grpc.status import Code

from .conftest import FakePolicies, Script, Servers, client_for

o, hr, m = api.outbound, api.http_route, api.meta
MS = timedelta(milliseconds=1)


def meta(name: str, kind: str = "Service") -> m.Metadata:
    return m.Metadata(
        resource=m.Resource(group="core", kind=kind, name=name, namespace="ns", port=80)
    )


def balancer(path: str) -> o.Backend:
    return o.Backend(
        metadata=meta(path),
        queue=o.Queue(capacity=100, failfast_timeout=3000 * MS),
        balancer=o.BackendBalanceP2C(
            discovery=o.BackendEndpointDiscovery(
                dst=o.BackendEndpointDiscoveryDestinationGet(path=path)
            ),
            peak_ewma=o.BackendBalanceP2CPeakEwma(default_rtt=30 * MS, decay=10000 * MS),
        ),
    )


def http_policy() -> o.OutboundPolicy:
    rule = o.HttpRouteRule(
        matches=[
            hr.HttpRouteMatch(
                path=hr.PathMatch(prefix="/api"),
                headers=[hr.HeaderMatch(name="x-env", exact=b"canary")],
                method=api.http_types.HttpMethod(
                    registered=api.http_types.HttpMethodRegistered.POST
                ),
            )
        ],
        filters=[
            o.HttpRouteFilter(
                request_header_modifier=hr.RequestHeaderModifier(
                    add=api.http_types.Headers([api.http_types.HeadersHeader("x-a", b"1")]),
                    remove=["x-b"],
                )
            ),
            o.HttpRouteFilter(redirect=hr.RequestRedirect(host="other", port=8080, status=301)),
            o.HttpRouteFilter(
                failure_injector=hr.HttpFailureInjector(
                    status=503, message="boom", ratio=hr.Ratio(1, 4)
                )
            ),
        ],
        backends=o.HttpRouteDistribution(
            random_available=o.HttpRouteDistributionRandomAvailable(
                [
                    o.HttpRouteWeightedRouteBackend(
                        o.HttpRouteRouteBackend(backend=balancer("web-v1.ns.svc.cluster.local:80")),
                        9,
                    ),
                    o.HttpRouteWeightedRouteBackend(
                        o.HttpRouteRouteBackend(
                            backend=o.Backend(
                                metadata=meta("pod"),
                                queue=o.Queue(10, 1000 * MS),
                                forward=api.destination.WeightedAddr(
                                    addr=addr_to_proto(SocketAddr.parse("10.0.0.1:80"))
                                ),
                            )
                        ),
                        1,
                    ),
                ]
            )
        ),
        timeouts=hr.Timeouts(response=500 * MS, request=2000 * MS),
        retry=o.HttpRouteRetry(
            max_retries=3,
            conditions=o.HttpRouteRetryConditions(
                [o.HttpRouteRetryConditionsStatusRange(500, 599)]
            ),
            timeout=100 * MS,
            backoff=o.ExponentialBackoff(
                min_backoff=25 * MS, max_backoff=250 * MS, jitter_ratio=0.5
            ),
        ),
        allow_l5d_request_headers=True,
    )
    routes = [
        o.HttpRoute(
            metadata=meta("web-route", "HTTPRoute"), hosts=[hr.HostMatch(exact="web")], rules=[rule]
        )
    ]
    accrual = o.FailureAccrual(
        consecutive_failures=o.FailureAccrualConsecutiveFailures(
            7, o.ExponentialBackoff(min_backoff=1000 * MS, max_backoff=60000 * MS, jitter_ratio=0.5)
        )
    )
    return o.OutboundPolicy(
        metadata=meta("web"),
        protocol=o.ProxyProtocol(
            detect=o.ProxyProtocolDetect(
                timeout=10000 * MS,
                http1=o.ProxyProtocolHttp1(routes=routes, failure_accrual=accrual),
                http2=o.ProxyProtocolHttp2(routes=routes),
                opaque=o.ProxyProtocolOpaque(),
            )
        ),
    )


def test_translate_detect_http_policy() -> None:
    policy = policy_from_proto(http_policy())
    assert policy.meta.name == "web" and not policy.meta.is_default
    proto = policy.protocol
    assert isinstance(proto, Detect) and proto.timeout == 10.0
    assert proto.http1.failure_accrual == ConsecutiveFailures(
        7, proto.http1.failure_accrual.backoff
    )  # type: ignore[union-attr]
    assert proto.http1.failure_accrual.backoff.max == 60.0  # type: ignore[union-attr]
    (route,) = proto.http1.routes
    assert route.hosts[0].exact == "web"
    (rule,) = route.rules
    (match,) = rule.matches
    assert match.path is not None and (match.path.kind, match.path.value) == ("prefix", "/api")  # type: ignore[union-attr]
    assert match.method == "POST" and match.headers[0].exact == b"canary"  # type: ignore[union-attr]
    header, redirect, fault = rule.filters
    assert header == HeaderModifier(add=(("x-a", b"1"),), remove=("x-b",))
    assert isinstance(redirect, Redirect) and redirect.host == "other" and redirect.status == 301
    assert fault == FailureInjector(503, "boom", 0.25)
    assert rule.timeouts == Timeouts(request=2.0, response=0.5)
    assert (
        rule.retry is not None
        and rule.retry.max_retries == 3
        and rule.retry.status_ranges == ((500, 599),)
    )
    assert rule.retry.backoff is not None and rule.retry.backoff.min == 0.025
    assert rule.allow_l5d_request_headers
    assert rule.distribution.kind == "random_available"
    balanced, forwarded = rule.distribution.backends
    assert balanced.weight == 9 and forwarded.weight == 1
    assert balanced.backend.queue == Queue(100, 3.0)
    assert balanced.backend.dispatcher == Balance(
        "web-v1.ns.svc.cluster.local:80", PeakEwma(0.03, 10.0)
    )
    assert isinstance(forwarded.backend.dispatcher, Forward)
    assert forwarded.backend.dispatcher.addr == SocketAddr.parse("10.0.0.1:80")
    assert policy.backends() == {balanced.backend, forwarded.backend}


def test_translate_other_protocols_and_invalid() -> None:
    grpc = o.OutboundPolicy(
        metadata=m.Metadata(default="grpc"),
        protocol=o.ProxyProtocol(
            grpc=o.ProxyProtocolGrpc(
                routes=[
                    o.GrpcRoute(
                        metadata=meta("g", "GRPCRoute"),
                        rules=[
                            o.GrpcRouteRule(
                                matches=[
                                    api.grpc_route.GrpcRouteMatch(
                                        rpc=api.grpc_route.GrpcRpcMatch("pkg.Svc", "Get")
                                    )
                                ],
                                backends=o.GrpcRouteDistribution(
                                    first_available=o.GrpcRouteDistributionFirstAvailable(
                                        [o.GrpcRouteRouteBackend(backend=balancer("g:80"))]
                                    )
                                ),
                                retry=o.GrpcRouteRetry(
                                    max_retries=1,
                                    conditions=o.GrpcRouteRetryConditions(unavailable=True),
                                ),
                            )
                        ],
                    )
                ]
            )
        ),
    )
    policy = policy_from_proto(grpc)
    assert policy.meta.is_default and policy.meta.name == "grpc"
    rule = policy.protocol.routes[0].rules[0]  # type: ignore[union-attr]
    assert rule.matches[0].service == "pkg.Svc"  # type: ignore[union-attr]
    assert rule.retry is not None and rule.retry.grpc_codes == {Code.UNAVAILABLE}
    assert rule.distribution.kind == "first_available"
    opaque = policy_from_proto(
        o.OutboundPolicy(
            metadata=m.Metadata(default="x"),
            protocol=o.ProxyProtocol(opaque=o.ProxyProtocolOpaque()),
        )
    )
    assert opaque.protocol.kind == "opaque"  # type: ignore[union-attr]
    for broken in [
        o.OutboundPolicy(metadata=m.Metadata(default="x")),  # no protocol
        o.OutboundPolicy(protocol=o.ProxyProtocol(opaque=o.ProxyProtocolOpaque())),  # no metadata
        o.OutboundPolicy(
            metadata=m.Metadata(default="x"),
            protocol=o.ProxyProtocol(detect=o.ProxyProtocolDetect()),
        ),
    ]:
        with pytest.raises(InvalidPolicy):
            policy_from_proto(broken)
    no_queue = http_policy()
    assert no_queue.protocol and no_queue.protocol.detect and no_queue.protocol.detect.http1
    no_queue.protocol.detect.http1.routes[0].rules[0].backends.random_available.backends[
        0
    ].backend.backend.queue = None  # type: ignore[union-attr]
    with pytest.raises(InvalidPolicy, match="queue"):
        policy_from_proto(no_queue)


def test_policy_is_fatal() -> None:
    from linkerd_proxy.errors import GrpcError

    assert policy_is_fatal(GrpcError(Code.NOT_FOUND)) and policy_is_fatal(
        GrpcError(Code.UNIMPLEMENTED)
    )
    assert policy_is_fatal(GrpcError(Code.INVALID_ARGUMENT))
    assert not policy_is_fatal(GrpcError(Code.UNAVAILABLE))


async def test_watch_policy_and_invalid(bridge: Bridge, servers: Servers) -> None:
    server = FakePolicies(
        [Script([http_policy(), o.OutboundPolicy(metadata=m.Metadata(default="x"))])]
    )
    client = client_for(bridge, await servers.start(server), is_fatal=policy_is_fatal)
    target = SocketAddr.parse("10.0.0.1:8080")
    async with open_policy(
        client, '{"ns":"test","pod":"test"}', target, detect_timeout=3.0
    ) as watch:
        with trio.fail_after(5):
            first = await watch.receive()
            invalid = await watch.receive()
    assert first.meta.name == "web"
    assert isinstance(invalid.protocol, Detect) and invalid.protocol.timeout == 3.0
    assert isinstance(invalid.protocol.http1.routes[0].rules[0].filters[0], InternalError)
    (request,) = server.calls.requests
    assert request.source_workload == '{"ns":"test","pod":"test"}'
    assert request.addr == addr_to_proto(target) and request.authority is None


@pytest.mark.parametrize("status", [Status.NOT_FOUND, Status.UNIMPLEMENTED])
async def test_policy_not_found(bridge: Bridge, servers: Servers, status: Status) -> None:
    server = FakePolicies([Script([], status), Script([http_policy()])])
    client = client_for(bridge, await servers.start(server), is_fatal=policy_is_fatal)
    async with open_policy(client, "w", NameAddr("web.ns.svc.cluster.local", 80)) as watch:
        with trio.fail_after(5), pytest.raises(PolicyNotFound):
            await watch.receive()
    (request,) = server.calls.requests
    assert request.authority == "web.ns.svc.cluster.local:80"


async def test_policy_rejected(bridge: Bridge, servers: Servers) -> None:
    server = FakePolicies([Script([], Status.FAILED_PRECONDITION)])
    client = client_for(bridge, await servers.start(server), is_fatal=policy_is_fatal)
    async with open_policy(client, "w", SocketAddr.parse("10.0.0.1:80")) as watch:
        with trio.fail_after(5), pytest.raises(DiscoveryRejected):
            await watch.receive()
