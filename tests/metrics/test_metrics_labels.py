"""Tests for linkerd_proxy.metrics.labels (and the label sets of tcp.py, errors.py).

The acceptance property of "metrics that cannot duplicate": for every label-set
class, two values render the same label text exactly when they are equal, i.e.
exactly when they are the same series; a registry holding both ends with one
series iff they render alike. Strategies are derived from each class's attrs
fields, so a field added later is varied automatically (a field that is not
rendered then breaks the property).
"""

from __future__ import annotations

import enum
import errno
import ipaddress
import re
import types
import typing
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from linkerd_proxy.addrs import SocketAddr
from linkerd_proxy.metrics import errors as error_metrics
from linkerd_proxy.metrics import http as http_metrics
from linkerd_proxy.metrics import labels, tcp
from linkerd_proxy.metrics.labels import (
    DstLabels,
    NoServerTls,
    RtLabels,
    ServerLabels,
    TargetAddrLabels,
    escape_label_value,
)
from linkerd_proxy.metrics.registry import CounterFamily
from linkerd_proxy.metrics.tcp import (
    InboundConnectLabels,
    OutboundConnectLabels,
    TcpAcceptLabels,
    TcpCloseLabels,
    errno_name,
)

LABEL_MODULES = (labels, tcp, error_metrics, http_metrics)

# --- a strict parser for rendered label text -------------------------------------

_PAIR = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\\\|\\"|\\n)*)"')


def unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), value)


def parse_labels(text: str) -> list[tuple[str, str]]:
    """Parse ``k="v",...``; raise on anything not well formed (``,,``, empty names...)."""
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        if out:
            assert text[pos] == ",", f"expected ',' at {pos} in {text!r}"
            pos += 1
        m = _PAIR.match(text, pos)
        assert m is not None, f"malformed label at {pos} in {text!r}"
        out.append((m.group(1), unescape(m.group(2))))
        pos = m.end()
    names = [k for k, _ in out]
    assert len(names) == len(set(names)), f"duplicate label name in {text!r}"
    return out


# --- strategies derived from attrs fields ----------------------------------------

SMALL_TEXT = st.text(alphabet='ab"\\\n,=_-', max_size=3)
SOCKET_ADDRS = st.builds(
    SocketAddr,
    st.sampled_from(["10.0.0.1", "10.0.0.2", "::1", "fe80::1"]).map(ipaddress.ip_address),
    st.sampled_from([0, 80, 8080]),
)
PAIRS = st.lists(st.tuples(SMALL_TEXT, SMALL_TEXT), max_size=3)
OVERRIDES: dict[tuple[type, str], st.SearchStrategy[Any]] = {
    (DstLabels, "pairs"): PAIRS,
    (RtLabels, "pairs"): PAIRS,
    (ServerLabels, "port"): st.sampled_from([0, 80, 8080]),
}


def strategy_for_type(tp: Any) -> st.SearchStrategy[Any]:
    if tp is type(None):
        return st.none()
    if tp is str:
        return SMALL_TEXT
    if tp is int:
        return st.integers(0, 3)
    if tp is SocketAddr:
        return SOCKET_ADDRS
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*(strategy_for_type(a) for a in typing.get_args(tp)))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return st.sampled_from(list(tp))
    if isinstance(tp, type) and attrs.has(tp):
        return strategy_for_class(tp)
    raise AssertionError(f"no strategy for field type {tp!r}")


def field_strategies(cls: type) -> dict[str, st.SearchStrategy[Any]]:
    attrs.resolve_types(cls)
    return {
        f.name: OVERRIDES[cls, f.name] if (cls, f.name) in OVERRIDES else strategy_for_type(f.type)
        for f in attrs.fields(cls)
    }


def strategy_for_class(cls: type) -> st.SearchStrategy[Any]:
    if issubclass(cls, enum.Enum):
        return st.sampled_from(list(cls))
    return st.builds(cls, **field_strategies(cls))


def label_set_classes() -> list[type]:
    found: list[type] = []
    for module in LABEL_MODULES:
        for obj in vars(module).values():
            if (
                isinstance(obj, type)
                and obj.__module__ == module.__name__
                and callable(getattr(obj, "render", None))
                and (attrs.has(obj) or issubclass(obj, enum.Enum))
            ):
                found.append(obj)
    return found


ALL_CLASSES = label_set_classes()


def test_every_known_label_class_is_discovered() -> None:
    names = {c.__name__ for c in ALL_CLASSES}
    expected = {
        "NoLabels", "Direction", "Peer", "TargetAddrLabels", "AuthorityLabels",
        "ServerTlsEstablished", "ServerTlsPassthru", "NoServerTls", "ClientTlsEstablished",
        "NoClientTls", "ServerLabels", "RouteLabels", "AuthzLabels", "DstLabels", "RtLabels",
        "TcpAcceptLabels", "OutboundConnectLabels", "InboundConnectLabels", "TcpCloseLabels",
        "InboundErrorKind", "OutboundErrorKind", "InboundTcpErrorLabels",
        "OutboundTcpErrorLabels", "InboundHttpErrorLabels", "OutboundHttpErrorLabels",
    }  # fmt: skip
    assert expected <= names


@st.composite
def pair_of(draw: st.DrawFn, cls: type) -> tuple[Any, Any]:
    """Two values of ``cls``: independent, or the first with one field redrawn."""
    a = draw(strategy_for_class(cls))
    fields = {} if issubclass(cls, enum.Enum) else field_strategies(cls)
    if not fields or draw(st.booleans()):
        return a, draw(strategy_for_class(cls))
    name = draw(st.sampled_from(sorted(fields)))
    return a, attrs.evolve(a, **{name: draw(fields[name])})


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_same_text_iff_same_series(cls: type, data: st.DataObject) -> None:
    a, b = data.draw(pair_of(cls))
    text_a, text_b = a.render(), b.render()
    assert (a == b) == (text_a == text_b), (a, b, text_a, text_b)
    if a == b:
        assert hash(a) == hash(b)
    parse_labels(text_a)
    parse_labels(text_b)
    family: CounterFamily[Any] = CounterFamily("x_total", "x")
    family.get(a).inc()
    family.get(b).inc()
    assert len(family) == (1 if text_a == text_b else 2)
    assert sum(s.value for s in family) == 2


@pytest.mark.parametrize("cls", [c for c in ALL_CLASSES if attrs.has(c)], ids=lambda c: c.__name__)
@settings(max_examples=5, deadline=None)
@given(data=st.data())
def test_label_sets_are_frozen(cls: type, data: st.DataObject) -> None:
    value = data.draw(strategy_for_class(cls))
    for f in attrs.fields(cls):
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            setattr(value, f.name, None)


@given(st.text())
def test_escape_round_trip(value: str) -> None:
    assert parse_labels(labels.label("k", value)) == [("k", value)]
    assert unescape(escape_label_value(value)) == value
    assert "\n" not in escape_label_value(value)


def test_escape_examples() -> None:
    assert escape_label_value('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
    assert escape_label_value("plain.value-1:80") == "plain.value-1:80"


def test_no_labels_renders_nothing() -> None:
    assert labels.NO_LABELS.render() == ""
    assert labels.join("", 'a="1"', "", 'b="2"', "") == 'a="1",b="2"'


def test_prefixed_labels_normalize() -> None:
    a = DstLabels.of({"pod": "p", "namespace": "ns", "": "x", "a-b": "1", "a_b": "2"})
    assert a.render() == 'dst_a_b="1",dst_namespace="ns",dst_pod="p"'
    assert a == DstLabels([("namespace", "ns"), ("pod", "p"), ("a-b", "1")])
    assert DstLabels().render() == ""
    assert RtLabels.of({"route": "get /x"}).render() == 'rt_route="get /x"'


# --- golden renderings (checked against the reference; see docs/metrics.md) -------

V4 = TargetAddrLabels(SocketAddr.parse("10.1.2.3:8080"))
V6 = TargetAddrLabels(SocketAddr.parse("[fd00::1]:80"))
TARGET_V4 = 'target_addr="10.1.2.3:8080",target_ip="10.1.2.3",target_port="8080"'


def test_target_addr_labels() -> None:
    assert V4.render() == TARGET_V4
    assert V6.render() == 'target_addr="[fd00::1]:80",target_ip="fd00::1",target_port="80"'


def test_tls_labels() -> None:
    assert labels.ServerTlsEstablished("a.b").render() == 'tls="true",client_id="a.b"'
    assert labels.ServerTlsEstablished(None).render() == 'tls="true",client_id=""'
    assert labels.ServerTlsEstablished(None) == labels.ServerTlsEstablished("")
    assert labels.ServerTlsPassthru("x.y").render() == 'tls="opaque",sni="x.y"'
    assert NoServerTls.DISABLED.render() == 'tls="disabled"'
    assert NoServerTls.PORT_SKIPPED.render() == 'tls="no_identity",no_tls_reason="port_skipped"'
    assert labels.ClientTlsEstablished("s.id").render() == 'tls="true",server_id="s.id"'
    assert (
        labels.NoClientTls.INGRESS_WITHOUT_OVERRIDE.render()
        == 'tls="no_identity",no_tls_reason="ingress_without_override"'
    )


def test_inbound_accept_golden() -> None:
    srv = ServerLabels.default_policy("all-unauthenticated", 8080)
    assert TcpAcceptLabels.inbound(V4, srv).render() == (
        f'direction="inbound",peer="src",{TARGET_V4},'
        'tls="no_identity",no_tls_reason="no_tls_from_remote",'
        'srv_group="",srv_kind="default",srv_name="all-unauthenticated",srv_port="8080"'
    )


def test_inbound_accept_mtls_golden() -> None:
    # The reference's own unit test (app/core/src/transport/labels.rs).
    srv = ServerLabels("policy.linkerd.io", "server", "testserver", 40000)
    target = TargetAddrLabels(SocketAddr.parse("192.0.2.4:40000"))
    tls = labels.ServerTlsEstablished("foo.id.example.com")
    assert TcpAcceptLabels.inbound(target, srv, tls).render() == (
        'direction="inbound",peer="src",'
        'target_addr="192.0.2.4:40000",target_ip="192.0.2.4",target_port="40000",'
        'tls="true",client_id="foo.id.example.com",'
        'srv_group="policy.linkerd.io",srv_kind="server",srv_name="testserver",srv_port="40000"'
    )


def test_outbound_accept_golden() -> None:
    assert TcpAcceptLabels.outbound(V4).render() == (
        f'direction="outbound",peer="src",{TARGET_V4},tls="no_identity",no_tls_reason="loopback"'
    )


def test_outbound_connect_golden() -> None:
    assert OutboundConnectLabels(V4).render() == (
        f'direction="outbound",peer="dst",{TARGET_V4},'
        'tls="no_identity",no_tls_reason="not_provided_by_service_discovery"'
    )
    full = OutboundConnectLabels(
        V4,
        labels.ClientTlsEstablished("web.ns.serviceaccount.identity.linkerd.cluster.local"),
        authority="web.ns.svc.cluster.local:8080",
        dst=DstLabels.of({"service": "web", "namespace": "ns"}),
    )
    assert full.render() == (
        'direction="outbound",peer="dst",authority="web.ns.svc.cluster.local:8080",'
        f'{TARGET_V4},tls="true",'
        'server_id="web.ns.serviceaccount.identity.linkerd.cluster.local",'
        'dst_namespace="ns",dst_service="web"'
    )


def test_inbound_connect_golden() -> None:
    assert InboundConnectLabels().render() == (
        'direction="inbound",peer="dst",tls="no_identity",no_tls_reason="loopback"'
    )


def test_close_labels_golden() -> None:
    assert TcpCloseLabels(InboundConnectLabels(), "").render() == (
        'direction="inbound",peer="dst",tls="no_identity",no_tls_reason="loopback",errno=""'
    )


def test_errno_names() -> None:
    assert errno_name(None) == ""
    assert errno_name(errno.ECONNRESET) == "ECONNRESET"
    assert errno_name(errno.ETIMEDOUT) == "ETIMEDOUT"
    assert errno_name(errno.EPIPE) == "EPIPE"
    assert errno_name(99999) == "UNKNOWN_ERRNO"
    assert errno_name(0) == "UNKNOWN_ERRNO"
    if hasattr(errno, "EDEADLK") and errno.EDEADLK == 35:  # Linux numbering
        assert errno_name(35) == "EDEADLK"
        assert errno_name(95) == "EOPNOTSUPP"
        assert errno_name(41) == "UNKNOWN_ERRNO"
