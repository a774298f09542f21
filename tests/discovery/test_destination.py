"""Destination.Get: update translation, Reset after reconnect, NoEndpoints, fatal codes.

The watch tests run a real grpclib Destination server (the generated base class)
on loopback through the bridge; real time with small backoffs, every wait bounded.
"""

from __future__ import annotations

import pytest
import trio
from grpclib.const import Status

import linkerd_proxy.api as api
from linkerd_proxy.addrs import SocketAddr
from linkerd_proxy.discovery.destination import open_resolution, update_from_proto
from linkerd_proxy.discovery.endpoint import addr_to_proto
from linkerd_proxy.discovery.updates import Add, DoesNotExist, Remove, Reset, apply
from linkerd_proxy.errors import DiscoveryRejected
from linkerd_proxy.grpc.bridge import Bridge

from .conftest import FakeDestination, Script, Servers, client_for

d = api.destination


def sa(text: str) -> SocketAddr:
    return SocketAddr.parse(text)


def add(*addrs: str, set_labels: dict[str, str] | None = None) -> d.Update:
    weighted = [
        d.WeightedAddr(addr=addr_to_proto(sa(a)), weight=1, metric_labels={"pod": a}) for a in addrs
    ]
    return d.Update(add=d.WeightedAddrSet(addrs=weighted, metric_labels=set_labels or {}))


def remove(*addrs: str) -> d.Update:
    return d.Update(remove=d.AddrSet(addrs=[addr_to_proto(sa(a)) for a in addrs]))


def no_endpoints(exists: bool) -> d.Update:
    return d.Update(no_endpoints=d.NoEndpoints(exists=exists))


def test_translate_updates() -> None:
    up = update_from_proto(add("10.0.0.1:80", "10.0.0.2:80", set_labels={"service": "web"}))
    assert isinstance(up, Add)
    assert set(up.endpoints) == {sa("10.0.0.1:80"), sa("10.0.0.2:80")}
    assert up.endpoints[sa("10.0.0.1:80")].label_dict() == {"service": "web", "pod": "10.0.0.1:80"}
    assert update_from_proto(remove("10.0.0.1:80")) == Remove(frozenset({sa("10.0.0.1:80")}))
    assert update_from_proto(no_endpoints(True)) == Reset({})
    assert update_from_proto(no_endpoints(False)) == DoesNotExist()
    # Empty or unusable adds/removes, and empty updates, carry nothing.
    assert update_from_proto(d.Update(add=d.WeightedAddrSet(addrs=[d.WeightedAddr()]))) is None
    assert update_from_proto(d.Update(remove=d.AddrSet())) is None
    assert update_from_proto(d.Update()) is None


async def collect(resolution: object, n: int) -> list[object]:
    out = []
    with trio.fail_after(5):
        for _ in range(n):
            out.append(await resolution.receive())  # type: ignore[attr-defined]
    return out


async def test_reset_after_reconnect(bridge: Bridge, servers: Servers) -> None:
    server = FakeDestination(
        get=[
            Script(
                [add("10.0.0.1:80", "10.0.0.2:80"), add("10.0.0.3:80"), remove("10.0.0.1:80")],
                Status.UNAVAILABLE,
            ),
            # After the reconnect the server's snapshot is just .2 and .4.
            Script([add("10.0.0.2:80", "10.0.0.4:80"), remove("10.0.0.4:80")], "eos"),
            Script([remove("10.0.0.2:80")]),
        ]
    )
    client = client_for(bridge, await servers.start(server))
    async with open_resolution(client, "web.ns.svc.cluster.local:80", "ctx-token") as resolution:
        updates = await collect(resolution, 6)
    first, second, third, after_reconnect, removal, after_eos = updates
    assert isinstance(first, Reset) and set(first.endpoints) == {
        sa("10.0.0.1:80"),
        sa("10.0.0.2:80"),
    }
    assert isinstance(second, Add) and isinstance(third, Remove)
    state: dict[SocketAddr, object] = {}
    for up in updates[:3]:
        state = apply(state, up)  # type: ignore[arg-type]
    assert set(state) == {sa("10.0.0.2:80"), sa("10.0.0.3:80")}
    # The first update of the new stream replaces the set: .3 is gone.
    assert isinstance(after_reconnect, Reset)
    assert set(apply(state, after_reconnect)) == {sa("10.0.0.2:80"), sa("10.0.0.4:80")}
    assert removal == Remove(frozenset({sa("10.0.0.4:80")}))
    # A stream that starts with a removal knows of no endpoints at all.
    assert after_eos == Reset({})
    requests = server.get_calls.requests
    assert len(requests) == 3
    assert all(
        r.path == "web.ns.svc.cluster.local:80" and r.context_token == "ctx-token" for r in requests
    )


async def test_no_endpoints_exists_and_not(bridge: Bridge, servers: Servers) -> None:
    server = FakeDestination(
        get=[
            Script(
                [no_endpoints(False), add("10.0.0.1:80"), no_endpoints(True), add("10.0.0.5:80")]
            )
        ]
    )
    client = client_for(bridge, await servers.start(server))
    async with open_resolution(client, "web:80", "") as resolution:
        updates = await collect(resolution, 4)
    assert updates[0] == DoesNotExist()
    assert isinstance(updates[1], Add)  # not the first any more: a plain Add
    assert updates[2] == Reset({})
    assert isinstance(updates[3], Add) and set(updates[3].endpoints) == {sa("10.0.0.5:80")}


@pytest.mark.parametrize("status", [Status.INVALID_ARGUMENT, Status.FAILED_PRECONDITION])
async def test_fatal_status_rejects_lookup(
    bridge: Bridge, servers: Servers, status: Status
) -> None:
    server = FakeDestination(get=[Script([], status), Script([add("10.0.0.1:80")])])
    client = client_for(bridge, await servers.start(server))
    async with open_resolution(client, "10.1.1.1:80", "") as resolution:
        with trio.fail_after(5), pytest.raises(DiscoveryRejected) as info:
            await resolution.receive()
    assert info.value.status == status.value and info.value.target == "10.1.1.1:80"
    assert len(server.get_calls.requests) == 1  # not asked again


async def test_other_errors_are_retried(bridge: Bridge, servers: Servers) -> None:
    server = FakeDestination(
        get=[
            Script([], Status.UNAVAILABLE),
            Script([], Status.INTERNAL),
            Script([add("10.0.0.9:80")]),
        ]
    )
    client = client_for(bridge, await servers.start(server))
    async with open_resolution(client, "web:80", "") as resolution:
        (update,) = await collect(resolution, 1)
    assert isinstance(update, Reset) and set(update.endpoints) == {sa("10.0.0.9:80")}
    assert len(server.get_calls.requests) == 3
