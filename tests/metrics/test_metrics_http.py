"""Tests for linkerd_proxy.metrics.http and linkerd_proxy.http.metrics_layer.

Golden renderings of the legacy HTTP families, the "same text iff same series"
property over this module's label classes (driven by the strategies of
``test_metrics_labels.py``), and the layer's behaviour: counts at the call,
latency at the first body frame, classes at the end of the body or on errors.
"""

from __future__ import annotations

import importlib.util
import pathlib
import re
import sys
from types import ModuleType
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from linkerd_proxy.addrs import SocketAddr
from linkerd_proxy.errors import ConnectError, ResponseTimeout
from linkerd_proxy.http.body import BytesBody, EmptyBody, PipeBody, StreamReset
from linkerd_proxy.http.metrics_layer import HttpMetricsService, NewHttpMetrics
from linkerd_proxy.http.model import Request, Response
from linkerd_proxy.metrics import http as http_metrics
from linkerd_proxy.metrics.http import (
    HttpMetrics,
    InboundHttpLabels,
    OutboundHttpLabels,
)
from linkerd_proxy.metrics.labels import (
    ClientTlsEstablished,
    DstLabels,
    NoServerTls,
    ServerTlsEstablished,
    TargetAddrLabels,
)
from linkerd_proxy.metrics.registry import CounterFamily, Registry


def _load_label_tests() -> ModuleType:
    path = pathlib.Path(__file__).with_name("test_metrics_labels.py")
    spec = importlib.util.spec_from_file_location("_metrics_label_props", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


props = _load_label_tests()

V4 = TargetAddrLabels(SocketAddr.parse("10.1.2.3:8080"))
TARGET = 'target_addr="10.1.2.3:8080",target_ip="10.1.2.3",target_port="8080"'
INBOUND_T = (
    f'direction="inbound",{TARGET},tls="no_identity",no_tls_reason="no_tls_from_remote",'
    'srv_group="",srv_kind="default",srv_name="all-unauthenticated",srv_port="8080",'
    'route_group="",route_kind="default",route_name="default",'
    'authz_group="",authz_kind="default",authz_name="all-unauthenticated"'
)
GRPC = [(b"content-type", b"application/grpc")]


def http_label_classes() -> list[type]:
    return [
        obj
        for obj in vars(http_metrics).values()
        if isinstance(obj, type)
        and obj.__module__ == http_metrics.__name__
        and callable(getattr(obj, "render", None))
    ]


def test_label_classes_are_found() -> None:
    names = {c.__name__ for c in http_label_classes()}
    assert {
        "InboundHttpLabels", "OutboundHttpLabels", "Classification", "HttpClassLabels",
        "HttpStatusLabels", "HttpResponseLabels",
    } <= names  # fmt: skip


@pytest.mark.parametrize("cls", http_label_classes(), ids=lambda c: c.__name__)
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_same_text_iff_same_series(cls: type, data: st.DataObject) -> None:
    a, b = data.draw(props.pair_of(cls))
    text_a, text_b = a.render(), b.render()
    assert (a == b) == (text_a == text_b), (a, b, text_a, text_b)
    props.parse_labels(text_a)
    props.parse_labels(text_b)
    family: CounterFamily[Any] = CounterFamily("x_total", "x")
    family.get(a).inc()
    family.get(b).inc()
    assert len(family) == (1 if text_a == text_b else 2)


def test_inbound_target_golden() -> None:
    assert InboundHttpLabels.default_policy(V4).render() == INBOUND_T
    mtls = InboundHttpLabels.default_policy(
        V4, ServerTlsEstablished("a.ns.serviceaccount.identity.linkerd.cluster.local"),
        authority="web.ns.svc.cluster.local:8080",
    )  # fmt: skip
    assert mtls.render().startswith(
        'direction="inbound",authority="web.ns.svc.cluster.local:8080",'
        f'{TARGET},tls="true",client_id="a.ns.serviceaccount.identity.linkerd.cluster.local",'
        'srv_group=""'
    )


def test_outbound_target_golden() -> None:
    assert OutboundHttpLabels(V4).render() == (
        f'direction="outbound",{TARGET},'
        'tls="no_identity",no_tls_reason="not_provided_by_service_discovery"'
    )
    full = OutboundHttpLabels(
        V4, ClientTlsEstablished("s.id"), "web.ns.svc.cluster.local:8080",
        DstLabels.of({"service": "web", "namespace": "ns"}),
    )  # fmt: skip
    assert full.render() == (
        f'direction="outbound",authority="web.ns.svc.cluster.local:8080",{TARGET},'
        'tls="true",server_id="s.id",dst_namespace="ns",dst_service="web"'
    )


def series(text: str, name: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            key, _, value = line.rpartition(" ")
            out[key] = value
    return out


def make(handler: Any) -> tuple[Registry, HttpMetricsService]:
    registry = Registry()
    metrics = HttpMetrics(registry)
    svc = HttpMetricsService(handler, metrics.target(InboundHttpLabels.default_policy(V4)))
    return registry, svc


async def drain(rsp: Response) -> bytes:
    return await rsp.body.read_all(1 << 20)


async def test_request_and_response_totals(autojump_clock: trio.testing.MockClock) -> None:
    async def handler(req: Request) -> Response:
        await trio.sleep(0.0305)
        status = 200 if req.path == "/ok" else 503
        return Response(status, body=BytesBody(b"hello"))

    registry, svc = make(handler)
    for path in ("/ok", "/ok", "/bad"):
        rsp = await svc(Request("GET", "http", "a", path, "HTTP/1.1"))
        assert await drain(rsp) == b"hello"
    text = registry.render()
    assert series(text, "request_total") == {f"request_total{{{INBOUND_T}}}": "3"}
    assert series(text, "response_total") == {
        f'response_total{{{INBOUND_T},status_code="200",classification="success",'
        'grpc_status="",error=""}': "2",
        f'response_total{{{INBOUND_T},status_code="503",classification="failure",'
        'grpc_status="",error=""}': "1",
    }
    # 30 ms: counted in le=30? no, 30.5ms truncates to 30 -> le="30" bucket.
    assert f'response_latency_ms_bucket{{{INBOUND_T},status_code="200",le="20"}} 0' in text
    assert f'response_latency_ms_bucket{{{INBOUND_T},status_code="200",le="30"}} 2' in text
    assert f'response_latency_ms_bucket{{{INBOUND_T},status_code="200",le="+Inf"}} 2' in text
    assert f'response_latency_ms_count{{{INBOUND_T},status_code="503"}} 1' in text
    assert f'response_latency_ms_sum{{{INBOUND_T},status_code="200"}} 60' in text
    order = [m.group(1) for m in re.finditer(r"^# TYPE (\S+)", text, re.M)]
    assert order == ["request_total", "response_latency_ms", "response_total"]
    assert ",," not in text


async def test_latency_is_taken_at_first_body_frame(
    autojump_clock: trio.testing.MockClock,
) -> None:
    body = PipeBody()

    async def handler(req: Request) -> Response:
        return Response(200, body=body)

    registry, svc = make(handler)
    start = trio.current_time()
    rsp = await svc(Request("GET", None, "a", "/", "HTTP/1.1"))
    async with trio.open_nursery() as nursery:

        async def produce() -> None:
            await trio.sleep(0.045)
            await body.send(b"x")
            await trio.sleep(5)
            body.finish()

        nursery.start_soon(produce)
        assert await rsp.body.read() == b"x"
        text = registry.render()
        # Not classified yet: the body is still open.
        assert series(text, "response_total") == {}
        assert 'status_code="200",le="50"} 1' in text
        assert await rsp.body.read() == b""
    assert trio.current_time() - start == pytest.approx(5.045)
    text = registry.render()
    assert 'status_code="200",le="50"} 1' in text  # still the first-frame latency
    assert f'response_latency_ms_count{{{INBOUND_T},status_code="200"}} 1' in text
    assert len(series(text, "response_total")) == 1


async def test_grpc_status_from_trailers() -> None:
    async def handler(req: Request) -> Response:
        return Response(200, GRPC, BytesBody(b"m", trailers=[(b"grpc-status", b"14")]), "HTTP/2")

    registry, svc = make(handler)
    rsp = await svc(Request("POST", "http", "a", "/s/M", "HTTP/2", list(GRPC)))
    await drain(rsp)
    assert rsp.body.trailers == [(b"grpc-status", b"14")]
    assert 'status_code="200",classification="failure",grpc_status="14",error=""} 1' in (
        registry.render()
    )


async def test_call_error_has_no_status_code() -> None:
    async def handler(req: Request) -> Response:
        raise ResponseTimeout(1)

    registry, svc = make(handler)
    with pytest.raises(ResponseTimeout):
        await svc(Request("GET", None, "a", "/", "HTTP/1.1"))

    async def refused(req: Request) -> Response:
        raise ConnectError("x", "refused")

    svc2 = attrs.evolve(svc, inner=refused)
    with pytest.raises(ConnectError):
        await svc2(Request("GET", None, "a", "/", "HTTP/1.1"))
    text = registry.render()
    assert series(text, "response_total") == {
        f'response_total{{{INBOUND_T},classification="failure",grpc_status="",'
        'error="timeout"}': "1",
        f'response_total{{{INBOUND_T},classification="failure",grpc_status="",'
        'error="unclassified"}': "1",
    }
    assert "response_latency_ms" not in text
    assert series(text, "request_total") == {f"request_total{{{INBOUND_T}}}": "2"}


async def test_body_error_and_early_close() -> None:
    body = PipeBody()

    async def handler(req: Request) -> Response:
        return Response(200, body=body)

    registry, svc = make(handler)
    rsp = await svc(Request("GET", None, "a", "/", "HTTP/1.1"))
    body.fail(StreamReset(2))
    with pytest.raises(StreamReset):
        await rsp.body.read()
    await rsp.body.aclose()  # does not count twice
    await svc(Request("GET", None, "a", "/", "HTTP/1.1"))  # body neither read nor closed
    body2 = PipeBody()
    rsp3 = await attrs.evolve(svc, inner=lambda req: _const(Response(500, body=body2)))(
        Request("GET", None, "a", "/", "HTTP/1.1")
    )
    await rsp3.body.aclose()
    assert body2.abandoned
    got = series(registry.render(), "response_total")
    assert (
        got[
            f'response_total{{{INBOUND_T},status_code="200",classification="failure",'
            'grpc_status="",error="h2(INTERNAL_ERROR)"}'
        ]
        == "1"
    )
    assert (
        got[
            f'response_total{{{INBOUND_T},status_code="500",classification="failure",'
            'grpc_status="",error=""}'
        ]
        == "1"
    )
    assert len(got) == 2  # rsp2 was neither read nor closed


async def _const(rsp: Response) -> Response:
    return rsp


async def test_empty_body_recorded_at_head() -> None:
    async def handler(req: Request) -> Response:
        return Response(204, body=EmptyBody())

    registry, svc = make(handler)
    await svc(Request("HEAD", None, "a", "/", "HTTP/1.1"))  # body never read
    text = registry.render()
    assert 'status_code="204",classification="success"' in text
    assert f'response_latency_ms_count{{{INBOUND_T},status_code="204"}} 1' in text


async def test_new_service_layer_per_target() -> None:
    registry = Registry()
    metrics = HttpMetrics(registry)

    def new_inner(target: SocketAddr) -> Any:
        async def svc(req: Request) -> Response:
            return Response(200, body=EmptyBody())

        return svc

    def labels_of(target: SocketAddr) -> OutboundHttpLabels:
        return OutboundHttpLabels(TargetAddrLabels(target))

    layer = NewHttpMetrics.layer(metrics, labels_of)
    new = layer(new_inner)
    for addr in ("10.0.0.1:80", "10.0.0.2:80", "10.0.0.1:80"):
        await new(SocketAddr.parse(addr))(Request("GET", None, "a", "/", "HTTP/1.1"))
    got = series(registry.render(), "request_total")
    assert sorted(got.values()) == ["1", "2"]
    assert all('direction="outbound"' in k for k in got)
    assert NoServerTls.NO_CLIENT_HELLO.render() in INBOUND_T
