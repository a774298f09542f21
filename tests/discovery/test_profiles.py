"""GetProfile: the lookup predicate, profile translation, and the watch."""

from __future__ import annotations

import ipaddress
from datetime import timedelta

import pytest
import trio
from grpclib.const import Status

import linkerd_proxy.api as api
from linkerd_proxy.addrs import NameAddr, SocketAddr
from linkerd_proxy.discovery.endpoint import addr_to_proto
from linkerd_proxy.discovery.profiles import (
    RetryBudget,
    Target,
    open_profile,
    profile_from_proto,
    should_lookup_profile,
)
from linkerd_proxy.errors import DiscoveryRejected
from linkerd_proxy.grpc.bridge import Bridge

from .conftest import FakeDestination, Script, Servers, client_for

d = api.destination
GET = api.http_types.HttpMethod(registered=api.http_types.HttpMethodRegistered.GET)


def test_should_lookup_profile() -> None:
    sfx = ["svc.cluster.local."]
    nets = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8")]
    assert should_lookup_profile(NameAddr("web.ns.svc.cluster.local", 80), sfx, nets)
    assert should_lookup_profile(NameAddr("WEB.ns.svc.cluster.local.", 80), sfx, nets)
    assert should_lookup_profile(NameAddr("svc.cluster.local", 80), sfx, nets)
    assert not should_lookup_profile(NameAddr("web.ns.xsvc.cluster.local", 80), sfx, nets)
    assert not should_lookup_profile(NameAddr("example.com", 80), sfx, nets)
    assert should_lookup_profile(NameAddr("example.com", 80), ["."], [])
    assert should_lookup_profile(SocketAddr.parse("10.1.2.3:80"), sfx, nets)
    assert should_lookup_profile(SocketAddr.parse("[fd00::1]:80"), sfx, nets)
    assert not should_lookup_profile(SocketAddr.parse("192.168.1.1:80"), sfx, nets)
    assert not should_lookup_profile(SocketAddr.parse("10.1.2.3:80"), sfx, [])


def full_profile() -> d.DestinationProfile:
    get_books = d.RequestMatch(
        all=d.RequestMatchSeq(
            [d.RequestMatch(method=GET), d.RequestMatch(path=d.PathMatch("/books/[^/]+"))]
        )
    )
    not_admin = d.RequestMatch(not_=d.RequestMatch(path=d.PathMatch("^/admin.*$")))
    five_xx = d.ResponseClass(
        condition=d.ResponseMatch(status=d.HttpStatusRange(500, 599)), is_failure=True
    )
    four_oh_four = d.ResponseClass(
        condition=d.ResponseMatch(
            any=d.ResponseMatchSeq([d.ResponseMatch(status=d.HttpStatusRange(404, 404))])
        ),
        is_failure=False,
    )
    return d.DestinationProfile(
        fully_qualified_name="web.ns.svc.cluster.local",
        opaque_protocol=False,
        routes=[
            d.Route(
                condition=get_books,
                response_classes=[five_xx, four_oh_four],
                metrics_labels={"route": "get-books"},
                is_retryable=True,
                timeout=timedelta(milliseconds=250),
            ),
            d.Route(condition=not_admin, metrics_labels={"route": "other"}),
            d.Route(condition=d.RequestMatch(path=d.PathMatch("(unclosed"))),  # invalid: dropped
            d.Route(),  # no condition: dropped
        ],
        retry_budget=d.RetryBudget(
            retry_ratio=0.2, min_retries_per_second=10, ttl=timedelta(seconds=10)
        ),
        dst_overrides=[
            d.WeightedDst(authority="web-v1.ns.svc.cluster.local:8080", weight=900),
            d.WeightedDst(authority="web-v2.ns.svc.cluster.local:8080", weight=100),
            d.WeightedDst(authority="web-v3.ns.svc.cluster.local:8080", weight=0),
        ],
        endpoint=d.WeightedAddr(
            addr=addr_to_proto(SocketAddr.parse("10.0.0.7:8080")),
            weight=1,
            protocol_hint=d.ProtocolHint(h2=d.ProtocolHintH2()),
        ),
    )


def test_profile_translation() -> None:
    profile = profile_from_proto(full_profile(), 8080)
    assert profile.addr == NameAddr("web.ns.svc.cluster.local", 8080)
    assert profile.retry_budget == RetryBudget(0.2, 10, 10.0)
    assert [r.labels for r in profile.routes] == [(("route", "get-books"),), (("route", "other"),)]
    books, other = profile.routes
    assert (
        books.is_retryable and books.timeout == 0.25 and books.retry_budget == profile.retry_budget
    )
    assert other.retry_budget is None and other.timeout is None
    assert books.metric_labels() == {"rt_route": "get-books"}
    assert profile.route_for("GET", "/books/1") is books
    assert profile.route_for("POST", "/books/1") is other  # method differs
    assert profile.route_for("GET", "/books/1/x") is other  # the regex is anchored
    assert profile.route_for("GET", "/admin/x") is None
    classes = books.response_classes
    assert [c.is_failure for c in classes] == [True, False]
    assert classes[0].condition.matches(503) and not classes[0].condition.matches(404)
    assert classes[1].condition.matches(404)
    assert profile.targets == (
        Target(NameAddr("web-v1.ns.svc.cluster.local", 8080), 900),
        Target(NameAddr("web-v2.ns.svc.cluster.local", 8080), 100),
    )
    assert profile.endpoint is not None and profile.endpoint[0] == SocketAddr.parse("10.0.0.7:8080")
    assert profile.endpoint[1].protocol_hint.value == "h2"


def test_profile_edge_cases() -> None:
    empty = profile_from_proto(d.DestinationProfile(opaque_protocol=True), 80)
    assert (
        empty.addr is None
        and empty.opaque_protocol
        and empty.routes == ()
        and empty.endpoint is None
    )
    for budget in [
        d.RetryBudget(retry_ratio=1001.0, min_retries_per_second=1, ttl=timedelta(seconds=10)),
        d.RetryBudget(retry_ratio=0.2, min_retries_per_second=1, ttl=timedelta(seconds=61)),
        d.RetryBudget(retry_ratio=0.2, min_retries_per_second=1, ttl=timedelta(milliseconds=500)),
        d.RetryBudget(retry_ratio=0.2, min_retries_per_second=1),
    ]:
        pb = full_profile()
        pb.retry_budget = budget
        profile = profile_from_proto(pb, 80)
        assert profile.retry_budget is None and profile.routes[0].retry_budget is None


async def test_watch_profile_updates(bridge: Bridge, servers: Servers) -> None:
    second = full_profile()
    second.dst_overrides = [d.WeightedDst(authority="web-v2.ns.svc.cluster.local:8080", weight=1)]
    server = FakeDestination(profile=[Script([full_profile(), second])])
    client = client_for(bridge, await servers.start(server))
    target = NameAddr("web.ns.svc.cluster.local", 8080)
    async with open_profile(client, target, "ctx") as watch:
        with trio.fail_after(5):
            first = await watch.receive()
            then = await watch.receive()
    assert len(first.targets) == 2 and len(first.routes) == 2
    assert then.targets == (Target(NameAddr("web-v2.ns.svc.cluster.local", 8080), 1),)
    (request,) = server.profile_calls.requests
    assert request.path == "web.ns.svc.cluster.local:8080" and request.context_token == "ctx"


async def test_rejected_profile(bridge: Bridge, servers: Servers) -> None:
    server = FakeDestination(profile=[Script([], Status.INVALID_ARGUMENT)])
    client = client_for(bridge, await servers.start(server))
    async with open_profile(client, SocketAddr.parse("10.0.0.1:80"), "") as watch:
        with trio.fail_after(5), pytest.raises(DiscoveryRejected):
            await watch.receive()
