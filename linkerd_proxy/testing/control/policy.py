"""The fake policy service: ``OutboundPolicies.Watch`` and ``InboundServerPolicies.WatchPort``.

Part of the fake control plane (:mod:`linkerd_proxy.testing.control`), on its
asyncio loop. A test sets the policy of an outbound target (``ip:port`` or an
authority) or an inbound port; watchers get the whole policy on every change. A
target with no policy is answered ``NOT_FOUND``, as the policy controller answers
addresses it does not manage: the proxy then synthesizes a default policy.

Builders for the usual policies are here too: :func:`outbound_default` (detect
HTTP, one default route to one balanced backend, as the controller sends for a
Service) and :func:`all_unauthenticated` (an inbound server open to everyone).
"""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from datetime import timedelta

import linkerd_proxy.api as api
from linkerd_proxy.addrs import SocketAddr
from linkerd_proxy.grpc.status import Code
from linkerd_proxy.testing.control.streams import Streams, grpc_error

out = api.outbound


def _meta(name: str) -> api.meta.Metadata:
    return api.meta.Metadata(default=name)


def balanced_backend(path: str, *, queue_capacity: int = 100, failfast: float = 3.0) -> out.Backend:
    """A backend balancing (P2C, PeakEWMA 30 ms / 10 s) over ``Destination.Get(path)``."""
    discovery = out.BackendEndpointDiscovery(
        dst=out.BackendEndpointDiscoveryDestinationGet(path=path)
    )
    ewma = out.BackendBalanceP2CPeakEwma(
        default_rtt=timedelta(milliseconds=30), decay=timedelta(seconds=10)
    )
    return out.Backend(
        metadata=_meta("default"),
        queue=out.Queue(capacity=queue_capacity, failfast_timeout=timedelta(seconds=failfast)),
        balancer=out.BackendBalanceP2C(discovery=discovery, peak_ewma=ewma),
    )


def default_http_route(backend: out.Backend) -> out.HttpRoute:
    """One rule matching every path (prefix ``/``), sending to ``backend``."""
    match = api.http_route.HttpRouteMatch(path=api.http_route.PathMatch(prefix="/"))
    dist = out.HttpRouteDistribution(
        first_available=out.HttpRouteDistributionFirstAvailable(
            backends=[out.HttpRouteRouteBackend(backend=backend)]
        )
    )
    return out.HttpRoute(
        metadata=_meta("default"), rules=[out.HttpRouteRule(matches=[match], backends=dist)]
    )


def default_opaque_route(backend: out.Backend) -> out.OpaqueRoute:
    """One opaque rule sending to ``backend``."""
    dist = out.OpaqueRouteDistribution(
        first_available=out.OpaqueRouteDistributionFirstAvailable(
            backends=[out.OpaqueRouteRouteBackend(backend=backend)]
        )
    )
    return out.OpaqueRoute(metadata=_meta("default"), rules=[out.OpaqueRouteRule(backends=dist)])


def outbound_default(dst_path: str, *, detect_timeout: float = 10.0) -> out.OutboundPolicy:
    """The policy the controller sends for a Service: detect HTTP, route all to ``dst_path``.

    Args:
        dst_path: the ``Destination.Get`` path of the backend (``name:port``).
        detect_timeout: the protocol detection timeout in seconds.
    """
    backend = balanced_backend(dst_path)
    route = default_http_route(backend)
    detect = out.ProxyProtocolDetect(
        timeout=timedelta(seconds=detect_timeout),
        http1=out.ProxyProtocolHttp1(routes=[route]),
        http2=out.ProxyProtocolHttp2(routes=[route]),
        opaque=out.ProxyProtocolOpaque(routes=[default_opaque_route(backend)]),
    )
    return out.OutboundPolicy(metadata=_meta("default"), protocol=out.ProxyProtocol(detect=detect))


def outbound_opaque(dst_path: str) -> out.OutboundPolicy:
    """An opaque policy (no detection) balancing over ``dst_path``."""
    route = default_opaque_route(balanced_backend(dst_path))
    protocol = out.ProxyProtocol(opaque=out.ProxyProtocolOpaque(routes=[route]))
    return out.OutboundPolicy(metadata=_meta("default"), protocol=protocol)


def all_unauthenticated(*, detect_timeout: float = 10.0) -> api.inbound.Server:
    """An inbound server that detects the protocol and authorizes every client."""
    inb = api.inbound
    everywhere = [
        inb.Network(net=api.net.IpNetwork(ip=api.net.IpAddress(ipv4=0), prefix_len=0)),
        inb.Network(
            net=api.net.IpNetwork(
                ip=api.net.IpAddress(ipv6=api.net.IPv6(first=0, last=0)), prefix_len=0
            )
        ),
    ]
    authz = inb.Authz(
        networks=everywhere,
        authentication=inb.Authn(unauthenticated=inb.AuthnPermitUnauthenticated()),
        metadata=_meta("all-unauthenticated"),
    )
    protocol = inb.ProxyProtocol(
        detect=inb.ProxyProtocolDetect(timeout=timedelta(seconds=detect_timeout))
    )
    return inb.Server(
        protocol=protocol,
        authorizations=[authz],
        labels={"name": "all-unauthenticated", "kind": "default"},
    )


def target_key(target: str | SocketAddr) -> str:
    """The key of an outbound target: ``ip:port`` as ``SocketAddr`` renders it, or the authority."""
    if isinstance(target, SocketAddr):
        return str(target)
    try:
        return str(SocketAddr.parse(target))
    except ValueError:
        return target


def _spec_key(spec: api.outbound.TrafficSpec) -> str | None:
    if spec.addr is not None and spec.addr.ip is not None:
        ip_msg = spec.addr.ip
        if ip_msg.ipv4 is not None:
            ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv4Address(ip_msg.ipv4)
        elif ip_msg.ipv6 is not None:
            ip = ipaddress.IPv6Address((ip_msg.ipv6.first << 64) | ip_msg.ipv6.last)
        else:
            return None
        return str(SocketAddr(ip, spec.addr.port))
    if spec.authority is not None:
        return spec.authority
    return None


class FakeOutboundPolicies(api.outbound.OutboundPoliciesBase):
    """Outbound policy state and the ``Watch`` handler (asyncio side)."""

    def __init__(self) -> None:
        self._policies: dict[str, api.outbound.OutboundPolicy] = {}
        self.watches: Streams[str, api.outbound.OutboundPolicy] = Streams()
        self.workloads: list[str] = []

    def set(self, target: str | SocketAddr, policy: api.outbound.OutboundPolicy) -> None:
        """Set ``target``'s policy; its watchers get it."""
        key = target_key(target)
        self._policies[key] = policy
        self.watches.push(key, policy)

    def not_found(self, target: str | SocketAddr | None = None) -> int:
        """Forget ``target``'s policy (``None``: every one); its streams end ``NOT_FOUND``."""
        key = None if target is None else target_key(target)
        if key is None:
            self._policies.clear()
        else:
            self._policies.pop(key, None)
        return self.watches.end(key, Code.NOT_FOUND, "fake policy controller: no policy")

    def fail_streams(
        self, target: str | SocketAddr | None = None, code: int = Code.UNAVAILABLE
    ) -> int:
        """End the open watches of ``target`` (``None``: all) with ``code``."""
        key = None if target is None else target_key(target)
        return self.watches.end(key, int(code), "fake policy controller: stream failed")

    def count(self, target: str | SocketAddr) -> int:
        """How many watches were opened for ``target``."""
        return self.watches.opened[target_key(target)]

    async def get(self, message: api.outbound.TrafficSpec) -> api.outbound.OutboundPolicy:
        raise grpc_error(Code.UNIMPLEMENTED, "the proxy only watches outbound policies")

    async def watch(
        self, message: api.outbound.TrafficSpec
    ) -> AsyncIterator[api.outbound.OutboundPolicy]:
        key = _spec_key(message)
        if key is None:
            raise grpc_error(Code.INVALID_ARGUMENT, "target is required")
        self.workloads.append(message.source_workload)
        stream = self.watches.open(key)
        try:
            policy = self._policies.get(key)
            if policy is None:
                raise grpc_error(Code.NOT_FOUND, f"fake policy controller: no policy for {key}")
            yield policy
            async for update in stream.messages():
                yield update
        finally:
            self.watches.close(key, stream)


class FakeInboundPolicies(api.inbound.InboundServerPoliciesBase):
    """Inbound server policy state and the ``WatchPort`` handler (asyncio side)."""

    def __init__(self) -> None:
        self._servers: dict[int, api.inbound.Server] = {}
        self.watches: Streams[int, api.inbound.Server] = Streams()

    def set(self, port: int, server: api.inbound.Server | None = None) -> None:
        """Set the policy of ``port`` (default :func:`all_unauthenticated`); watchers get it."""
        server = server if server is not None else all_unauthenticated()
        self._servers[port] = server
        self.watches.push(port, server)

    def not_found(self, port: int | None = None) -> int:
        """Forget ``port``'s policy (``None``: all); its streams end ``NOT_FOUND``."""
        if port is None:
            self._servers.clear()
        else:
            self._servers.pop(port, None)
        return self.watches.end(port, Code.NOT_FOUND, "fake policy controller: no policy")

    def count(self, port: int) -> int:
        """How many watches were opened for ``port``."""
        return self.watches.opened[port]

    async def get_port(self, message: api.inbound.PortSpec) -> api.inbound.Server:
        raise grpc_error(Code.UNIMPLEMENTED, "the proxy only watches inbound policies")

    async def watch_port(self, message: api.inbound.PortSpec) -> AsyncIterator[api.inbound.Server]:
        port = message.port
        stream = self.watches.open(port)
        try:
            server = self._servers.get(port)
            if server is None:
                raise grpc_error(Code.NOT_FOUND, f"fake policy controller: no policy for {port}")
            yield server
            async for update in stream.messages():
                yield update
        finally:
            self.watches.close(port, stream)


__all__ = [
    "FakeInboundPolicies",
    "FakeOutboundPolicies",
    "all_unauthenticated",
    "balanced_backend",
    "default_http_route",
    "default_opaque_route",
    "outbound_default",
    "outbound_opaque",
    "target_key",
]
