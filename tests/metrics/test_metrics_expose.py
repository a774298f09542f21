"""Tests for linkerd_proxy.metrics.expose and linkerd_proxy.metrics.process."""

from __future__ import annotations

import gzip
import re

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from linkerd_proxy.addrs import SocketAddr
from linkerd_proxy.metrics import expose, process
from linkerd_proxy.metrics.labels import NO_LABELS, NoLabels, ServerLabels, TargetAddrLabels
from linkerd_proxy.metrics.registry import LATENCY_MS_BUCKETS, HistogramFamily, Registry
from linkerd_proxy.metrics.tcp import TcpAcceptLabels, TcpMetrics

BUILD = process.BuildInfo(
    date="2025-01-02T03:04:05Z",
    git_sha="abc",
    profile="release",
    vendor="linkerd-proxy-py",
    version="0.1.0",
)


def small_registry() -> Registry:
    reg = Registry()
    tcp = TcpMetrics(reg)
    target = TargetAddrLabels(SocketAddr.parse("127.0.0.1:4191"))
    tcp.accept(TcpAcceptLabels.inbound(target, ServerLabels.default_policy("default", 4191)))
    hist = reg.register(HistogramFamily[NoLabels]("latency_ms", "L", LATENCY_MS_BUCKETS[:3]))
    hist.get(NO_LABELS).observe(2)
    return reg


def test_small_exposition_golden() -> None:
    prom = CollectorRegistry()
    process.register_build_info(prom, BUILD)
    body = expose.render(small_registry(), prom)
    labels = (
        'direction="inbound",peer="src",target_addr="127.0.0.1:4191",target_ip="127.0.0.1",'
        'target_port="4191",tls="no_identity",no_tls_reason="no_tls_from_remote",'
        'srv_group="",srv_kind="default",srv_name="default",srv_port="4191"'
    )
    assert body == (
        "# HELP tcp_open_total Total count of opened connections\n"
        "# TYPE tcp_open_total counter\n"
        f"tcp_open_total{{{labels}}} 1\n"
        "# HELP tcp_open_connections Number of currently-open connections\n"
        "# TYPE tcp_open_connections gauge\n"
        f"tcp_open_connections{{{labels}}} 1\n"
        "# HELP tcp_read_bytes_total Total count of bytes read from peers\n"
        "# TYPE tcp_read_bytes_total counter\n"
        f"tcp_read_bytes_total{{{labels}}} 0\n"
        "# HELP tcp_write_bytes_total Total count of bytes written to peers\n"
        "# TYPE tcp_write_bytes_total counter\n"
        f"tcp_write_bytes_total{{{labels}}} 0\n"
        "# HELP latency_ms L\n"
        "# TYPE latency_ms histogram\n"
        'latency_ms_bucket{le="1"} 0\n'
        'latency_ms_bucket{le="2"} 1\n'
        'latency_ms_bucket{le="3"} 1\n'
        'latency_ms_bucket{le="+Inf"} 1\n'
        "latency_ms_count 1\n"
        "latency_ms_sum 2\n"
        "# HELP proxy_build_info Proxy build info\n"
        "# TYPE proxy_build_info gauge\n"
        'proxy_build_info{date="2025-01-02T03:04:05Z",git_sha="abc",profile="release",'
        'vendor="linkerd-proxy-py",version="0.1.0"} 1.0\n'
        "# EOF\n"
    )


def test_every_family_has_help_and_type_once_and_ends_with_eof() -> None:
    body = expose.render(small_registry(), process.new_prom_registry(BUILD))
    assert body.endswith("# EOF\n")
    assert body.count("# EOF") == 1
    helps = re.findall(r"^# HELP (\S+) ", body, re.M)
    types = re.findall(r"^# TYPE (\S+) ", body, re.M)
    assert helps == types
    assert len(helps) == len(set(helps))
    for name in (
        "process_start_time_seconds",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_max_fds",
        "process_virtual_memory_bytes",
        "process_resident_memory_bytes",
        "process_threads",
        "proxy_build_info",
    ):
        assert name in helps, name
    assert re.search(r"^process_threads [1-9]", body, re.M)


def test_every_sample_is_typed_under_its_own_name() -> None:
    # Served as text/plain, the body is read with the Prometheus text format, where
    # a TYPE line must name the samples it types (only histogram/summary samples add
    # _bucket/_sum/_count). OpenMetrics' `# TYPE process_cpu_seconds counter` over
    # `process_cpu_seconds_total` leaves that sample untyped (promtool: "no help text").
    body = expose.render(small_registry(), process.new_prom_registry(BUILD))
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", body, re.M))
    helps = set(re.findall(r"^# HELP (\S+) ", body, re.M))
    names = re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", body, re.M)
    assert "process_cpu_seconds_total" in names
    for name in names:
        family = name
        if name not in types:
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            assert types.get(base) in ("histogram", "summary"), name
            family = base
        assert family in helps, name


def test_render_without_prom_registry_ends_with_eof() -> None:
    assert expose.render(Registry()) == "# EOF\n"


def test_build_info_current() -> None:
    info = process.BuildInfo.current()
    assert info.version == "0.1.0"
    assert info.profile == "release"
    assert info.vendor == "linkerd-proxy-py"
    assert re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}|unknown", info.git_sha)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ|unknown", info.date)


@given(st.binary(max_size=2048))
def test_gzip_round_trip(body: bytes) -> None:
    out, encoding = expose.maybe_gzip(body, "deflate, gzip;q=1.0")
    assert encoding == "gzip"
    assert gzip.decompress(out) == body


def test_gzip_only_when_asked() -> None:
    body = expose.render(small_registry()).encode()
    assert expose.maybe_gzip(body, None) == (body, None)
    assert expose.maybe_gzip(body, "identity") == (body, None)
    out, encoding = expose.maybe_gzip(body, "gzip")
    assert encoding == "gzip"
    assert out[:2] == b"\x1f\x8b"
    assert gzip.decompress(out) == body
