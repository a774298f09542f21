"""EndpointMeta translation: labels, locality, identity, hints, overrides, HTTP/2."""

from __future__ import annotations

import ipaddress
from datetime import timedelta

import linkerd_proxy.api as api
from linkerd_proxy.addrs import SocketAddr
from linkerd_proxy.discovery.endpoint import (
    Http2ClientParams,
    ProtocolHint,
    TlsIdentity,
    addr_from_proto,
    addr_to_proto,
    endpoint_from_proto,
)

d = api.destination


def tcp(ip: str, port: int) -> api.net.TcpAddress:
    return addr_to_proto(SocketAddr(ipaddress.ip_address(ip), port))


def test_addresses_round_trip_v4_v6_and_reject_bad() -> None:
    for text in ["10.1.2.3:8080", "[fd00::1:2]:80", "[::ffff:1.2.3.4]:1"]:
        addr = SocketAddr.parse(text)
        assert addr_from_proto(addr_to_proto(addr)) == addr
    assert addr_from_proto(api.net.TcpAddress(ip=api.net.IpAddress(ipv4=0x0A000001), port=5)) == (
        SocketAddr.parse("10.0.0.1:5")
    )
    assert addr_from_proto(api.net.TcpAddress(port=80)) is None  # no IP
    assert addr_from_proto(api.net.TcpAddress(ip=api.net.IpAddress(ipv4=1), port=70000)) is None
    assert endpoint_from_proto(d.WeightedAddr(addr=api.net.TcpAddress(port=80))) is None


def test_labels_merge_address_over_set_and_zone_locality() -> None:
    pb = d.WeightedAddr(
        addr=tcp("10.0.0.1", 80),
        weight=10000,
        metric_labels={"pod": "web-1", "zone_locality": "LOCAL", "namespace": "over"},
    )
    entry = endpoint_from_proto(pb, {"namespace": "ns", "service": "web"})
    assert entry is not None
    addr, meta = entry
    assert addr == SocketAddr.parse("10.0.0.1:80")
    assert meta.label_dict() == {
        "namespace": "over",
        "service": "web",
        "pod": "web-1",
        "zone_locality": "LOCAL",
    }
    assert meta.zone_local is True and meta.weight == 10000
    remote = endpoint_from_proto(
        d.WeightedAddr(addr=tcp("10.0.0.1", 80), metric_labels={"zone_locality": "remote"})
    )
    assert remote is not None and remote[1].zone_local is False
    # Only the address's own label counts for locality.
    other = endpoint_from_proto(
        d.WeightedAddr(addr=tcp("10.0.0.1", 80)), {"zone_locality": "local"}
    )
    assert other is not None and other[1].zone_local is None
    assert hash(other[1]) == hash(other[1])  # hashable: fits in stack targets


def ident(**kw: object) -> d.TlsIdentity:
    return d.TlsIdentity(**kw)  # type: ignore[arg-type]


def test_tls_identity_dns_uri_and_invalid() -> None:
    def meta_of(tls: d.TlsIdentity | None) -> TlsIdentity | None:
        entry = endpoint_from_proto(d.WeightedAddr(addr=tcp("10.0.0.1", 80), tls_identity=tls))
        assert entry is not None
        return entry[1].tls_identity

    dns = "web.ns.serviceaccount.identity.linkerd.cluster.local"
    assert meta_of(ident(dns_like_identity=d.TlsIdentityDnsLikeIdentity(dns))) == TlsIdentity(
        dns, dns
    )
    spiffe = "spiffe://cluster.local/ns/ns/sa/web"
    got = meta_of(
        ident(
            uri_like_identity=d.TlsIdentityUriLikeIdentity(spiffe),
            server_name=d.TlsIdentityDnsLikeIdentity("web.ns.svc"),
        )
    )
    assert got == TlsIdentity(spiffe, "web.ns.svc", is_uri=True)
    # A URI identity without a server name, and invalid names, mean plaintext.
    assert meta_of(ident(uri_like_identity=d.TlsIdentityUriLikeIdentity(spiffe))) is None
    assert meta_of(ident(dns_like_identity=d.TlsIdentityDnsLikeIdentity("not a name!"))) is None
    assert (
        meta_of(
            ident(
                uri_like_identity=d.TlsIdentityUriLikeIdentity("nope"),
                server_name=d.TlsIdentityDnsLikeIdentity("a.b"),
            )
        )
        is None
    )
    assert meta_of(None) is None


def test_protocol_hint_opaque_transport_and_authority_override() -> None:
    def meta_of(**kw: object):  # type: ignore[no-untyped-def]
        entry = endpoint_from_proto(d.WeightedAddr(addr=tcp("10.0.0.1", 80), **kw))  # type: ignore[arg-type]
        assert entry is not None
        return entry[1]

    h2 = meta_of(
        protocol_hint=d.ProtocolHint(
            h2=d.ProtocolHintH2(), opaque_transport=d.ProtocolHintOpaqueTransport(4143)
        )
    )
    assert h2.protocol_hint is ProtocolHint.HTTP2 and h2.opaque_transport_port == 4143
    opaque = meta_of(protocol_hint=d.ProtocolHint(opaque=d.ProtocolHintOpaque()))
    assert opaque.protocol_hint is ProtocolHint.OPAQUE and opaque.opaque_transport_port is None
    bad_port = meta_of(
        protocol_hint=d.ProtocolHint(opaque_transport=d.ProtocolHintOpaqueTransport(0))
    )
    assert bad_port.protocol_hint is ProtocolHint.UNKNOWN and bad_port.opaque_transport_port is None
    assert meta_of().protocol_hint is ProtocolHint.UNKNOWN
    over = meta_of(authority_override=d.AuthorityOverride("web.ns.svc.cluster.local:8080"))
    assert over.authority_override == "web.ns.svc.cluster.local:8080"
    assert (
        meta_of(authority_override=d.AuthorityOverride("bad authority")).authority_override is None
    )


def test_http2_params() -> None:
    pb = d.Http2ClientParams(
        flow_control=d.Http2ClientParamsFlowControl(65535, 1024, False),
        keep_alive=d.Http2ClientParamsKeepAlive(timedelta(seconds=10), timedelta(seconds=3), True),
        internals=d.Http2ClientParamsInternals(max_concurrent_reset_streams=5, max_frame_size=0),
    )
    entry = endpoint_from_proto(d.WeightedAddr(addr=tcp("10.0.0.1", 80), http2=pb))
    assert entry is not None
    assert entry[1].http2 == Http2ClientParams(
        initial_connection_window_size=65535,
        initial_stream_window_size=1024,
        keep_alive_interval=10.0,
        keep_alive_timeout=3.0,
        keep_alive_while_idle=True,
        max_concurrent_reset_streams=5,
    )
    adaptive = d.Http2ClientParams(flow_control=d.Http2ClientParamsFlowControl(1, 1, True))
    entry = endpoint_from_proto(d.WeightedAddr(addr=tcp("10.0.0.1", 80), http2=adaptive))
    assert entry is not None and entry[1].http2 == Http2ClientParams(adaptive_flow_control=True)
