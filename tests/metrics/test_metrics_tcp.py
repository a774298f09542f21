"""Tests for linkerd_proxy.metrics.tcp and linkerd_proxy.metrics.errors."""

from __future__ import annotations

import socket
import struct

import pytest
import trio

from linkerd_proxy.addrs import SocketAddr
from linkerd_proxy.metrics.errors import (
    InboundErrorKind,
    InboundHttpErrorMetrics,
    OutboundHttpErrorMetrics,
    TcpErrorMetrics,
)
from linkerd_proxy.metrics.labels import Direction, ServerLabels, TargetAddrLabels
from linkerd_proxy.metrics.registry import Registry
from linkerd_proxy.metrics.tcp import (
    InboundConnectLabels,
    OutboundConnectLabels,
    TcpAcceptLabels,
    TcpMetrics,
)

TARGET = TargetAddrLabels(SocketAddr.parse("10.1.2.3:8080"))
T = 'target_addr="10.1.2.3:8080",target_ip="10.1.2.3",target_port="8080"'
SRV = ServerLabels.default_policy("all-unauthenticated", 8080)
ACCEPT = TcpAcceptLabels.inbound(TARGET, SRV)
A = (
    f'direction="inbound",peer="src",{T},tls="no_identity",no_tls_reason="no_tls_from_remote",'
    'srv_group="",srv_kind="default",srv_name="all-unauthenticated",srv_port="8080"'
)
INB = 'direction="inbound",peer="dst",tls="no_identity",no_tls_reason="loopback"'


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def lines(reg: Registry) -> list[str]:
    return reg.render().splitlines()


def test_tcp_lifecycle_golden() -> None:
    reg = Registry()
    tcp = TcpMetrics(reg)
    conn = tcp.accept(ACCEPT)
    app = tcp.connect(InboundConnectLabels())
    conn.add_read(5)
    conn.add_read(7)
    conn.add_write(3)
    app.add_write(12)
    conn.close(104)  # ECONNRESET on Linux
    conn.close(None)  # idempotent
    assert reg.render() == (
        "# HELP tcp_open_total Total count of opened connections\n"
        "# TYPE tcp_open_total counter\n"
        f"tcp_open_total{{{A}}} 1\n"
        f"tcp_open_total{{{INB}}} 1\n"
        "# HELP tcp_open_connections Number of currently-open connections\n"
        "# TYPE tcp_open_connections gauge\n"
        f"tcp_open_connections{{{A}}} 0\n"
        f"tcp_open_connections{{{INB}}} 1\n"
        "# HELP tcp_read_bytes_total Total count of bytes read from peers\n"
        "# TYPE tcp_read_bytes_total counter\n"
        f"tcp_read_bytes_total{{{A}}} 12\n"
        f"tcp_read_bytes_total{{{INB}}} 0\n"
        "# HELP tcp_write_bytes_total Total count of bytes written to peers\n"
        "# TYPE tcp_write_bytes_total counter\n"
        f"tcp_write_bytes_total{{{A}}} 3\n"
        f"tcp_write_bytes_total{{{INB}}} 12\n"
        "# HELP tcp_close_total Total count of closed connections\n"
        "# TYPE tcp_close_total counter\n"
        f'tcp_close_total{{{A},errno="ECONNRESET"}} 1\n'
    )


def test_connections_with_same_labels_share_series() -> None:
    reg = Registry()
    tcp = TcpMetrics(reg)
    conns = [tcp.connect(OutboundConnectLabels(TARGET)) for _ in range(3)]
    conns[0].close(None)
    with conns[1]:
        pass
    text = reg.render()
    assert text.count("tcp_open_total{") == 1
    assert 'tcp_open_total{direction="outbound",peer="dst",' in text
    assert "} 3\n" in text.split("# TYPE tcp_open_total counter\n")[1]
    gauge = next(ln for ln in text.splitlines() if ln.startswith("tcp_open_connections{"))
    assert gauge.endswith(" 1")
    close = next(ln for ln in text.splitlines() if ln.startswith("tcp_close_total{"))
    assert close.endswith(',errno=""} 2')
    conns[2].close(None)


def test_open_connection_survives_retain_idle() -> None:
    clock = FakeClock()
    reg = Registry(retain_idle=600, clock=clock)
    tcp = TcpMetrics(reg)
    long_lived = tcp.accept(ACCEPT)
    short = tcp.accept(TcpAcceptLabels.outbound(TARGET))
    short.close(None)
    for _ in range(5):
        reg.render()
        clock.now += 300
    text = reg.render()
    assert f"tcp_open_connections{{{A}}} 1" in text
    assert f"tcp_open_total{{{A}}} 1" in text
    assert 'direction="outbound"' not in text
    long_lived.close(None)
    clock.now += 300
    reg.render()
    clock.now += 600
    reg.render()
    assert reg.render() == ""


async def test_reset_connection_reports_econnreset() -> None:
    """A real RST on 127.0.0.1: the errno the OS reports renders as ECONNRESET."""
    reg = Registry()
    tcp = TcpMetrics(reg)
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    client = trio.socket.socket()
    with listener, client:
        await client.connect(listener.getsockname())
        server, _ = await listener.accept()
        conn = tcp.accept(ACCEPT)
        with server:
            # SO_LINGER 0 makes close() send RST instead of FIN.
            server.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with trio.fail_after(5), pytest.raises(OSError) as exc_info:
            for _ in range(100):
                await client.send(b"x")
                await client.recv(1)
        conn.close(exc_info.value.errno)
    assert f'tcp_close_total{{{A},errno="ECONNRESET"}} 1' in lines(reg)


def test_tcp_errors_inbound_and_outbound_label_order() -> None:
    reg = Registry()
    inbound = TcpErrorMetrics(reg, Direction.INBOUND)
    outbound = TcpErrorMetrics(reg, Direction.OUTBOUND)
    inbound.record("tls detection timeout", TARGET)
    inbound.record(InboundErrorKind.TLS_DETECT_TIMEOUT, TARGET)
    outbound.record("i/o", TARGET)
    assert reg.render() == (
        "# HELP inbound_tcp_errors_total The total number of inbound TCP connections that "
        "could not be processed due to a proxy error.\n"
        "# TYPE inbound_tcp_errors_total counter\n"
        f'inbound_tcp_errors_total{{error="tls detection timeout",{T}}} 2\n'
        "# HELP outbound_tcp_errors_total The total number of outbound TCP connections that "
        "could not be processed due to a proxy error.\n"
        "# TYPE outbound_tcp_errors_total counter\n"
        f'outbound_tcp_errors_total{{{T},error="i/o"}} 1\n'
    )
    with pytest.raises(ValueError):
        outbound.record("tls detection timeout", TARGET)
    with pytest.raises(ValueError):
        inbound.record("identity required", TARGET)


def test_http_errors() -> None:
    reg = Registry()
    inbound = InboundHttpErrorMetrics(reg)
    outbound = OutboundHttpErrorMetrics(reg)
    inbound.record("loadshed", TARGET, SRV)
    outbound.record("response timeout")
    outbound.record("response timeout")
    text = lines(reg)
    assert (
        f'inbound_http_errors_total{{error="loadshed",{T},srv_group="",srv_kind="default",'
        'srv_name="all-unauthenticated",srv_port="8080"} 1'
    ) in text
    assert 'outbound_http_errors_total{error="response timeout"} 2' in text
    TcpMetrics(reg)
    with pytest.raises(ValueError, match="already registered"):
        TcpMetrics(reg)
