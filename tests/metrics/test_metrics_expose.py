"""Tests for linkerd_proxy.metrics.expose and linkerd_proxy.metrics.process."""

from __future__ import annotations

import gzip
import os
import re
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

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


def test_small_exposition_golden(tmp_path: Path) -> None:
    # An empty procfs: no process_* series, build info only.
    prom = process.ProcessMetrics(BUILD, proc=tmp_path)
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
    body = expose.render(small_registry(), process.ProcessMetrics(BUILD))
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
    body = expose.render(small_registry(), process.ProcessMetrics(BUILD))
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


def _fake_proc(root: Path) -> None:
    """A procfs with known values: pid 42, clock ticks as sysconf says."""
    (root / "stat").write_text("cpu  1 2 3\nbtime 1700000000\nprocesses 9\n")
    pid = root / "42"
    for sub in ("fd", "task"):
        (pid / sub).mkdir(parents=True)
    for i in range(5):
        (pid / "fd" / str(i)).touch()
    for i in range(3):
        (pid / "task" / str(100 + i)).touch()
    ticks = os.sysconf("SC_CLK_TCK")
    fields = ["S"] + ["0"] * 49
    fields[11] = str(3 * ticks)  # utime (field 14, the 12th after ")")
    fields[12] = str(ticks // 2)  # stime
    fields[19] = str(250 * ticks)  # starttime
    fields[20] = "123456789"  # vsize, bytes
    fields[21] = "2500"  # rss, pages
    (pid / "stat").write_text(f"42 (a (weird) name) {' '.join(fields)}\n")
    (pid / "limits").write_text(
        "Limit                     Soft Limit           Hard Limit           Units\n"
        "Max open files            1024                 4096                 files\n"
    )


def test_process_metrics_from_proc(tmp_path: Path) -> None:
    _fake_proc(tmp_path)
    body = process.ProcessMetrics(BUILD, proc=tmp_path, pid="42").render()
    page = os.sysconf("SC_PAGE_SIZE")
    assert body == (
        "# HELP process_virtual_memory_bytes Virtual memory size in bytes.\n"
        "# TYPE process_virtual_memory_bytes gauge\n"
        "process_virtual_memory_bytes 1.23456789e+08\n"
        "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
        "# TYPE process_resident_memory_bytes gauge\n"
        f"process_resident_memory_bytes {process.go_float(2500.0 * page)}\n"
        "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.\n"
        "# TYPE process_start_time_seconds gauge\n"
        "process_start_time_seconds 1.70000025e+09\n"
        "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n"
        "# TYPE process_cpu_seconds_total counter\n"
        "process_cpu_seconds_total 3.5\n"
        "# HELP process_open_fds Number of open file descriptors.\n"
        "# TYPE process_open_fds gauge\n"
        "process_open_fds 5.0\n"
        "# HELP process_max_fds Maximum number of open file descriptors.\n"
        "# TYPE process_max_fds gauge\n"
        "process_max_fds 1024.0\n"
        "# HELP process_threads Number of OS threads in the process.\n"
        "# TYPE process_threads gauge\n"
        "process_threads 3.0\n"
        "# HELP proxy_build_info Proxy build info\n"
        "# TYPE proxy_build_info gauge\n"
        'proxy_build_info{date="2025-01-02T03:04:05Z",git_sha="abc",profile="release",'
        'vendor="linkerd-proxy-py",version="0.1.0"} 1.0\n'
    )


def test_process_metrics_of_this_process_are_live() -> None:
    body = process.ProcessMetrics(BUILD).render()
    rss = float(re.search(r"^process_resident_memory_bytes (\S+)$", body, re.M)[1])  # type: ignore[index]
    fds = float(re.search(r"^process_open_fds (\S+)$", body, re.M)[1])  # type: ignore[index]
    assert 5 * 2**20 < rss < 2**32
    with open("/dev/null") as _held:
        again = process.ProcessMetrics(BUILD).render()
        assert float(re.search(r"^process_open_fds (\S+)$", again, re.M)[1]) == fds + 1  # type: ignore[index]


@given(st.floats(allow_nan=True) | st.integers(min_value=0, max_value=2**63))
def test_go_float_matches_go_formatting_rules(value: float) -> None:
    text = process.go_float(value)
    if value != value:
        assert text == "NaN"
    elif value in (float("inf"), float("-inf")):
        assert text == ("+Inf" if value > 0 else "-Inf")
    else:
        assert float(text) == float(value)
        # Go's 'g' format: an exponent once the integer part has more than 6 digits.
        digits_before_point = len(repr(float(abs(value))).split(".")[0].split("e")[0])
        assert ("e" in text) == (
            "e" in repr(float(value)) or (value > 0 and digits_before_point > 6)
        )


def test_go_float_examples() -> None:
    assert process.go_float(6) == "6.0"
    assert process.go_float(0.44) == "0.44"
    assert process.go_float(123456.0) == "123456.0"
    assert process.go_float(1234567.0) == "1.234567e+06"
    assert process.go_float(32030720.0) == "3.203072e+07"
    assert process.go_float(1.79538201868e09) == "1.79538201868e+09"
    assert process.go_float(float("inf")) == "+Inf"
