"""A standalone proxy loads nothing it does not use (idle RSS, BENCH.md).

A fresh interpreter starts the standalone app in-process (the code the binary
runs), proxies an HTTP/1.1 request, an HTTP/2 request and an opaque TCP exchange
through each of the outbound and inbound listeners to a backend, scrapes
``/metrics``, and reports ``sys.modules``. Each module family below costs 1.5-9 MiB resident.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

_SCRIPT = r"""
import functools, json, sys
import h2.config, h2.connection, h2.events
import trio
from linkerd_proxy.testing.proxy import open_proxy
from linkerd_proxy.addrs import SocketAddr

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"

async def serve_h2(stream, buf):
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    conn.initiate_connection()
    while True:
        for event in conn.receive_data(buf):
            if isinstance(event, h2.events.RequestReceived):
                conn.send_headers(event.stream_id, [(":status", "200"), ("content-length", "2")])
                conn.send_data(event.stream_id, b"ok", end_stream=True)
        await stream.send_all(conn.data_to_send())
        buf = await stream.receive_some(65536)
        if not buf:
            return

async def backend(stream):
    # HTTP/1 gets a response, HTTP/2 (prior knowledge) too, anything else an echo.
    buf = b""
    with trio.fail_after(10):
        while True:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return
            buf += chunk
            if buf.startswith(H2_PREFACE):
                await serve_h2(stream, buf)
                return
            if b"\r\n\r\n" in buf and b"HTTP/1.1" in buf:
                await stream.send_all(RESPONSE)
                await stream.aclose()
                return
            if b"\n" in buf and not H2_PREFACE.startswith(buf[:len(H2_PREFACE)]):
                await stream.send_all(buf)
                buf = b""

async def http1(addr):
    stream = await trio.open_tcp_stream(str(addr.ip), addr.port)
    await stream.send_all(b"GET / HTTP/1.1\r\nhost: backend\r\nconnection: close\r\n\r\n")
    got = b""
    while chunk := await stream.receive_some(65536):
        got += chunk
    assert got.startswith(b"HTTP/1.1 200") and got.endswith(b"ok"), got

async def http2(addr):
    stream = await trio.open_tcp_stream(str(addr.ip), addr.port)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    headers = [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "backend")]
    conn.send_headers(1, headers, end_stream=True)
    await stream.send_all(conn.data_to_send())
    status, body, ended = None, b"", False
    while not ended:
        data = await stream.receive_some(65536)
        assert data, "h2 connection closed early"
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                status = dict(event.headers)[b":status"]
            elif isinstance(event, h2.events.DataReceived):
                body += event.data
            elif isinstance(event, h2.events.StreamEnded):
                ended = True
        await stream.send_all(conn.data_to_send())
    assert (status, body) == (b"200", b"ok"), (status, body)
    await stream.aclose()

async def tcp(addr):
    stream = await trio.open_tcp_stream(str(addr.ip), addr.port)
    await stream.send_all(b"\x00\x01 opaque bytes\n")
    got = b""
    while len(got) < 16:
        chunk = await stream.receive_some(65536)
        assert chunk, got
        got += chunk
    assert got == b"\x00\x01 opaque bytes\n", got
    await stream.aclose()

async def main():
    async with trio.open_nursery() as nursery:
        serve = functools.partial(trio.serve_tcp, backend, 0, host="127.0.0.1")
        listeners = await nursery.start(serve)
        port = listeners[0].socket.getsockname()[1]
        async with open_proxy(orig_dst=SocketAddr.parse(f"127.0.0.1:{port}")) as proxy:
            with trio.fail_after(20):
                out, inb = proxy.addrs.outbound[0], proxy.addrs.inbound
                for addr in (out, inb):
                    await http1(addr)
                    await http2(addr)
                    await tcp(addr)
                scrape = await proxy.scrape()
                for direction in ("outbound", "inbound"):
                    assert scrape.value("request_total", direction=direction) == 2
        nursery.cancel_scope.cancel()
    print(json.dumps(sorted(sys.modules)))

trio.run(main)
"""

#: Loaded by the proxy only with identity or a control plane: identity, the
#: gRPC bridge (asyncio, trio-asyncio, grpclib), the generated API and its
#: protobuf runtime (betterproto2, and pydantic, which it imports opportunistically).
#: The data-path stacks read discovery's models and the transport header codec,
#: which import none of these (``linkerd_proxy.api`` itself is a lazy namespace).
FORBIDDEN = (
    "asyncio",
    "betterproto2",
    "cryptography",
    "grpclib",
    "linkerd_proxy.api.google",
    "linkerd_proxy.api.io",
    "linkerd_proxy.api.message_pool",
    "linkerd_proxy.api.transport",
    "linkerd_proxy.app.control",
    "linkerd_proxy.discovery.policy",
    "linkerd_proxy.grpc",
    "linkerd_proxy.identity.certify",
    "linkerd_proxy.tls.identity_files",
    "linkerd_proxy.tls.verify",
    "prometheus_client",
    "pydantic",
    "pydantic_core",
    "trio_asyncio",
)


@pytest.fixture(scope="module")
def standalone_modules() -> list[str]:
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    modules: list[str] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "linkerd_proxy.app.run" in modules  # the check sees the real app
    return modules


def _loaded(modules: list[str], prefixes: tuple[str, ...]) -> list[str]:
    return [m for m in modules if any(m == p or m.startswith(p + ".") for p in prefixes)]


def test_standalone_loads_no_identity_control_plane_or_protobuf_runtime(
    standalone_modules: list[str],
) -> None:
    assert _loaded(standalone_modules, FORBIDDEN) == []
