"""Per-endpoint metadata from discovery, and its translation from the API.

Where it sits: below ``discovery.destination`` (which turns ``Destination.Get``
updates into endpoint sets of :class:`EndpointMeta`), ``discovery.profiles`` (a
profile's pod ``endpoint``) and ``discovery.policy`` (a ``forward`` backend); above
``addrs`` and the generated ``api``. The balancer and the endpoint stack read
:class:`EndpointMeta` to label metrics, pick mTLS, the protocol and the Host.

Pure: no I/O, no trio. Values the control plane gets wrong are dropped the way
the reference drops them (an address without an IP is skipped, an invalid
identity means plaintext, an invalid override is ignored).
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Iterable, Mapping

import attrs

import linkerd_proxy.api as api
from linkerd_proxy.addrs import IpAddr, SocketAddr

Labels = tuple[tuple[str, str], ...]

_DNS_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)\Z")
_URI = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://\S+\Z")
_AUTHORITY = re.compile(r"[^\s/?#@]+\Z")


def labels(items: Mapping[str, str] | Iterable[tuple[str, str]]) -> Labels:
    """Labels as a sorted tuple of pairs (hashable; later keys win on duplicates)."""
    pairs = items.items() if isinstance(items, Mapping) else items
    return tuple(sorted(dict(pairs).items()))


class ProtocolHint(enum.Enum):
    """What the destination's proxy says it speaks."""

    UNKNOWN = "unknown"
    HTTP2 = "h2"
    OPAQUE = "opaque"


@attrs.frozen
class TlsIdentity:
    """The identity to require of the endpoint over mTLS.

    ``server_id`` is a DNS-like name or a URI (``is_uri``); ``server_name`` is the
    SNI to send (the DNS-like identity itself unless the control plane gave one).
    """

    server_id: str
    server_name: str
    is_uri: bool = False


@attrs.frozen
class Http2ClientParams:
    """HTTP/2 client settings the control plane asks for (``None`` = our default)."""

    initial_connection_window_size: int | None = None
    initial_stream_window_size: int | None = None
    adaptive_flow_control: bool = False
    keep_alive_interval: float | None = None
    keep_alive_timeout: float | None = None
    keep_alive_while_idle: bool = False
    max_concurrent_reset_streams: int | None = None
    max_frame_size: int | None = None
    max_send_buf_size: int | None = None


@attrs.frozen
class EndpointMeta:
    """What discovery says about one endpoint.

    ``labels`` are the set's metric labels overlaid by the address's own (sorted
    pairs; see :meth:`label_dict`); ``zone_local`` is the address's
    ``zone_locality`` label (``local``/``remote``, any case) or ``None``.
    ``tls_identity`` ``None`` means plaintext (``not_provided_by_service_discovery``).
    """

    labels: Labels = ()
    tls_identity: TlsIdentity | None = None
    protocol_hint: ProtocolHint = ProtocolHint.UNKNOWN
    opaque_transport_port: int | None = None
    authority_override: str | None = None
    http2: Http2ClientParams = Http2ClientParams()
    weight: int = 1
    zone_local: bool | None = None

    def label_dict(self) -> dict[str, str]:
        return dict(self.labels)


# ------------------------------------------------------------------ addresses


def ip_from_proto(pb: api.net.IpAddress | None) -> IpAddr | None:
    """The IP of ``pb``, or ``None`` if it has none."""
    if pb is None:
        return None
    if pb.ipv4 is not None:
        return ipaddress.IPv4Address(pb.ipv4 & 0xFFFFFFFF)
    if pb.ipv6 is not None:
        value = ((pb.ipv6.first & (2**64 - 1)) << 64) | (pb.ipv6.last & (2**64 - 1))
        return ipaddress.IPv6Address(value)
    return None


def ip_to_proto(ip: IpAddr) -> api.net.IpAddress:
    if ip.version == 4:
        return api.net.IpAddress(ipv4=int(ip))
    value = int(ip)
    return api.net.IpAddress(ipv6=api.net.IPv6(first=value >> 64, last=value & (2**64 - 1)))


def addr_from_proto(pb: api.net.TcpAddress | None) -> SocketAddr | None:
    """The socket address of ``pb``, or ``None`` without an IP or with a bad port."""
    if pb is None:
        return None
    ip = ip_from_proto(pb.ip)
    if ip is None or not 0 <= pb.port <= 65535:
        return None
    return SocketAddr(ip, pb.port)


def addr_to_proto(addr: SocketAddr) -> api.net.TcpAddress:
    return api.net.TcpAddress(ip=ip_to_proto(addr.ip), port=addr.port)


# ------------------------------------------------------------------- metadata


def is_dns_name(name: str) -> bool:
    """A syntactically valid DNS name (a trailing dot is allowed)."""
    name = name.rstrip(".") if name.endswith(".") else name
    if not name or len(name) > 253:
        return False
    return all(_DNS_LABEL.match(label) for label in name.lower().split("."))


def identity_from_proto(pb: api.destination.TlsIdentity | None) -> TlsIdentity | None:
    """The identity to verify, or ``None`` (plaintext) if absent or invalid.

    A URI identity needs an explicit ``server_name``; a DNS one defaults to itself.
    """
    if pb is None:
        return None
    server_name = pb.server_name.name if pb.server_name is not None else None
    if server_name is not None and not is_dns_name(server_name):
        return None
    if pb.dns_like_identity is not None:
        name = pb.dns_like_identity.name
        if not is_dns_name(name):
            return None
        return TlsIdentity(name, server_name or name)
    if pb.uri_like_identity is not None:
        uri = pb.uri_like_identity.uri
        if not _URI.match(uri) or server_name is None:
            return None
        return TlsIdentity(uri, server_name, is_uri=True)
    return None


def _positive(value: int) -> int | None:
    return value if value > 0 else None


def http2_from_proto(pb: api.destination.Http2ClientParams | None) -> Http2ClientParams:
    """HTTP/2 client settings; zero or missing values keep our defaults."""
    if pb is None:
        return Http2ClientParams()
    fc, ka, internals = pb.flow_control, pb.keep_alive, pb.internals
    fixed = fc is not None and not fc.adaptive_flow_control
    conn_window = _positive(fc.initial_connection_window_size) if fc and fixed else None
    stream_window = _positive(fc.initial_stream_window_size) if fc and fixed else None
    if conn_window is None or stream_window is None:
        conn_window = stream_window = None  # fixed windows come as a pair, as upstream
    keep_alive = ka is not None and ka.interval is not None and ka.timeout is not None
    return Http2ClientParams(
        initial_connection_window_size=conn_window,
        initial_stream_window_size=stream_window,
        adaptive_flow_control=fc is not None and fc.adaptive_flow_control,
        keep_alive_interval=ka.interval.total_seconds()
        if keep_alive and ka and ka.interval
        else None,
        keep_alive_timeout=ka.timeout.total_seconds() if keep_alive and ka and ka.timeout else None,
        keep_alive_while_idle=bool(keep_alive and ka and ka.while_idle),
        max_concurrent_reset_streams=_positive(internals.max_concurrent_reset_streams)
        if internals
        else None,
        max_frame_size=_positive(internals.max_frame_size) if internals else None,
        max_send_buf_size=_positive(internals.max_send_buf_size) if internals else None,
    )


def _zone_local(addr_labels: Mapping[str, str]) -> bool | None:
    locality = addr_labels.get("zone_locality", "").lower()
    return {"local": True, "remote": False}.get(locality)


def endpoint_from_proto(
    pb: api.destination.WeightedAddr, set_labels: Mapping[str, str] | None = None
) -> tuple[SocketAddr, EndpointMeta] | None:
    """One endpoint of an ``Add`` (or a profile's/forward backend's endpoint).

    Args:
        pb: the weighted address.
        set_labels: the ``WeightedAddrSet``'s labels, under the address's own.

    Returns:
        The address and its metadata, or ``None`` if the address is unusable.
    """
    addr = addr_from_proto(pb.addr)
    if addr is None:
        return None
    hint, opaque_port = ProtocolHint.UNKNOWN, None
    if pb.protocol_hint is not None:
        if pb.protocol_hint.h2 is not None:
            hint = ProtocolHint.HTTP2
        elif pb.protocol_hint.opaque is not None:
            hint = ProtocolHint.OPAQUE
        transport = pb.protocol_hint.opaque_transport
        if transport is not None and 0 < transport.inbound_port < 65535:
            opaque_port = transport.inbound_port
    override = None
    if pb.authority_override is not None:
        text = pb.authority_override.authority_override
        override = text if _AUTHORITY.match(text) else None
    meta = EndpointMeta(
        labels=labels({**(set_labels or {}), **pb.metric_labels}),
        tls_identity=identity_from_proto(pb.tls_identity),
        protocol_hint=hint,
        opaque_transport_port=opaque_port,
        authority_override=override,
        http2=http2_from_proto(pb.http2),
        weight=pb.weight,
        zone_local=_zone_local(pb.metric_labels),
    )
    return addr, meta
