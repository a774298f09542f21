"""Value types and message builders of the fake Destination service.

Part of the fake control plane (:mod:`linkerd_proxy.testing.control`): how a test
describes an endpoint (:class:`Endpoint`) and the parts of a profile (:func:`route`,
:func:`retry_budget`, :func:`dst_override`), and their API messages. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Literal

import attrs

import linkerd_proxy.api as api
from linkerd_proxy.addrs import SocketAddr

dst = api.destination
Hint = Literal["h2", "opaque"]

#: The weight the real controller gives every endpoint.
DEFAULT_WEIGHT = 10000


def to_socket_addr(value: SocketAddr | str) -> SocketAddr:
    return value if isinstance(value, SocketAddr) else SocketAddr.parse(value)


def _labels(value: Mapping[str, str] | None) -> dict[str, str]:
    return dict(value or {})


@attrs.frozen
class Endpoint:
    """One endpoint of a destination, as a test describes it.

    Attributes:
        addr: the endpoint's ``ip:port`` (a :class:`SocketAddr` or its text).
        labels: per-endpoint metric labels (merged over the set's by the proxy).
        tls_identity: the endpoint's identity (a DNS-like name), or ``None`` for a
            plaintext endpoint.
        protocol_hint: ``"h2"``, ``"opaque"`` or ``None`` (unknown).
        opaque_port: the inbound port that accepts the transport header, if any.
        weight: the endpoint's weight.
        authority_override: the authority to send (gateway endpoints), if any.
    """

    addr: SocketAddr = attrs.field(converter=to_socket_addr)
    labels: dict[str, str] = attrs.field(factory=dict, converter=_labels, hash=False)
    tls_identity: str | None = None
    protocol_hint: Hint | None = None
    opaque_port: int | None = None
    weight: int = DEFAULT_WEIGHT
    authority_override: str | None = None

    def to_proto(self) -> api.destination.WeightedAddr:
        """The ``WeightedAddr`` the destination service sends for this endpoint."""
        msg = dst.WeightedAddr(
            addr=tcp_address(self.addr), weight=self.weight, metric_labels=dict(self.labels)
        )
        if self.tls_identity is not None:
            name = dst.TlsIdentityDnsLikeIdentity(name=self.tls_identity)
            msg.tls_identity = dst.TlsIdentity(
                dns_like_identity=name,
                server_name=dst.TlsIdentityDnsLikeIdentity(name=self.tls_identity),
            )
        if self.protocol_hint is not None or self.opaque_port is not None:
            hint = dst.ProtocolHint()
            if self.protocol_hint == "h2":
                hint.h2 = dst.ProtocolHintH2()
            elif self.protocol_hint == "opaque":
                hint.opaque = dst.ProtocolHintOpaque()
            if self.opaque_port is not None:
                hint.opaque_transport = dst.ProtocolHintOpaqueTransport(
                    inbound_port=self.opaque_port
                )
            msg.protocol_hint = hint
        if self.authority_override is not None:
            msg.authority_override = dst.AuthorityOverride(
                authority_override=self.authority_override
            )
        return msg


def tcp_address(addr: SocketAddr) -> api.net.TcpAddress:
    """``addr`` as the API's ``TcpAddress``."""
    value = int(addr.ip)
    if addr.ip.version == 4:
        ip = api.net.IpAddress(ipv4=value)
    else:
        ip = api.net.IpAddress(ipv6=api.net.IPv6(first=value >> 64, last=value & (2**64 - 1)))
    return api.net.TcpAddress(ip=ip, port=addr.port)


def normalize_path(path: str) -> str:
    """A lookup path with its port: ``web.ns.svc.cluster.local`` gets ``:80``, as upstream."""
    if path.startswith("["):
        return path if "]:" in path else f"{path}:80"
    return path if ":" in path else f"{path}:80"


def retry_budget(
    ttl: float = 10.0, retry_ratio: float = 0.2, min_retries_per_second: int = 10
) -> api.destination.RetryBudget:
    """A profile retry budget (defaults are the controller's)."""
    return dst.RetryBudget(
        retry_ratio=retry_ratio,
        min_retries_per_second=min_retries_per_second,
        ttl=timedelta(seconds=ttl),
    )


def dst_override(authority: str, weight: int) -> api.destination.WeightedDst:
    """A traffic-split backend of a profile."""
    return dst.WeightedDst(authority=authority, weight=weight)


def route(
    path_regex: str = ".*",
    *,
    failure_statuses: tuple[int, int] | None = None,
    retryable: bool = False,
    timeout: float | None = None,
    labels: Mapping[str, str] | None = None,
) -> api.destination.Route:
    """A profile route matching a path regex.

    Args:
        failure_statuses: an inclusive HTTP status range classified as failure.
        retryable: whether failures may be retried (needs a retry budget).
        timeout: the route's timeout in seconds.
        labels: metric labels (``rt_*``).
    """
    classes = []
    if failure_statuses is not None:
        low, high = failure_statuses
        status = dst.HttpStatusRange(min=low, max=high)
        classes.append(
            dst.ResponseClass(condition=dst.ResponseMatch(status=status), is_failure=True)
        )
    return dst.Route(
        condition=dst.RequestMatch(path=dst.PathMatch(regex=path_regex)),
        response_classes=classes,
        metrics_labels=dict(labels or {}),
        is_retryable=retryable,
        timeout=timedelta(seconds=timeout) if timeout is not None else None,
    )


__all__ = [
    "DEFAULT_WEIGHT",
    "Endpoint",
    "dst_override",
    "normalize_path",
    "retry_budget",
    "route",
    "tcp_address",
    "to_socket_addr",
]
