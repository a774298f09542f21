"""HTTP through the real binary behind linkerd-init's rules, with real clients.

Client applications in pod A (curl, h2load, grpcio, a WebSocket client) talk to real
servers in pod B (hypercorn, grpcio); every request goes app -> proxy A outbound ->
proxy B inbound -> app, and both proxies' metrics are checked.
"""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from linkerd_proxy.testing.apps import pattern
from linkerd_proxy.testing.mesh import GRPC_PORT, HTTP_PORT, Mesh, apps
from linkerd_proxy.testing.netns import system_tests_required

pytestmark = [pytest.mark.system]

MIB = 1024 * 1024


def _url(mesh: Mesh, path: str) -> str:
    return f"http://{mesh.b.ip}:{HTTP_PORT}{path}"


def _target(mesh: Mesh, port: int = HTTP_PORT) -> dict[str, str]:
    return {"target_addr": f"{mesh.b.ip}:{port}"}


def test_http1_get_counts_on_both_proxies(mesh: Mesh) -> None:
    proc = mesh.curl("-i", _url(mesh, "/ok"))
    assert proc.returncode == 0, (proc.stderr, mesh.logs())
    head, _, body = proc.stdout.partition("\n\n")  # text mode: CRLF read as LF
    assert head.startswith("HTTP/1.1 200"), head
    assert body == "ok"
    assert "x-served-proto: HTTP/1.1" in head

    out = mesh.pa.scrape()
    t = _target(mesh)
    assert out.duplicates() == []
    assert out.value("request_total", direction="outbound", **t) == 1
    assert (
        out.value(
            "response_total",
            direction="outbound",
            status_code="200",
            classification="success",
            **t,
        )
        == 1
    )
    assert out.value("response_latency_ms_count", direction="outbound", **t) == 1
    inb = mesh.pb.scrape()
    assert inb.value("request_total", direction="inbound", **t) == 1
    assert inb.value("response_total", direction="inbound", classification="success", **t) == 1


def test_http1_chunked_post_and_large_download(mesh: Mesh) -> None:
    body = pattern(300_000, seed=3).hex()
    proc = mesh.a.run(
        ["sh", "-c", f"printf %s '{body[:20000]}' > /tmp/post.$$ && "
         f"curl -sS -m 30 -H 'Transfer-Encoding: chunked' --data-binary @/tmp/post.$$ "
         f"{_url(mesh, '/echo')}; rm -f /tmp/post.$$"],
        timeout=40,
        check=False,
    )  # fmt: skip
    assert proc.stdout == body[:20000], (proc.stderr, mesh.logs())

    size = 10 * MIB
    proc = mesh.a.run(
        ["sh", "-c", f"curl -sS -m 60 {_url(mesh, f'/bytes/{size}')} | sha256sum"],
        timeout=70,
        check=False,
    )
    assert proc.stdout.split()[0] == hashlib.sha256(pattern(size)).hexdigest(), mesh.logs()


def test_http10_with_and_without_host(mesh: Mesh) -> None:
    with_host = mesh.curl("--http1.0", "-i", _url(mesh, "/ok"))
    assert with_host.stdout.startswith("HTTP/1.0 200"), (with_host.stdout, mesh.logs())
    assert with_host.stdout.endswith("ok")
    without = mesh.curl("--http1.0", "-H", "Host:", "-i", _url(mesh, "/ok"))
    assert without.stdout.startswith("HTTP/1.0 200"), (without.stdout, mesh.logs())
    assert without.stdout.endswith("ok")


def test_hop_by_hop_headers_are_stripped_and_orig_proto_never_leaks(mesh: Mesh) -> None:
    proc = mesh.curl(
        "-H", "Connection: keep-alive, x-hop",
        "-H", "x-hop: secret",
        "-H", "Proxy-Connection: keep-alive",
        "-H", "x-end-to-end: kept",
        _url(mesh, "/headers"),
    )  # fmt: skip
    seen = {k for k, _ in json.loads(proc.stdout)["headers"]}
    assert "x-end-to-end" in seen
    assert not seen & {"x-hop", "proxy-connection", "connection", "l5d-orig-proto"}, seen


def test_http2_prior_knowledge(mesh: Mesh) -> None:
    proc = mesh.curl("--http2-prior-knowledge", "-i", _url(mesh, "/ok"))
    assert proc.returncode == 0, (proc.stderr, mesh.logs())
    assert proc.stdout.startswith("HTTP/2 200"), proc.stdout
    assert "x-served-proto: HTTP/2" in proc.stdout
    assert proc.stdout.endswith("ok")
    out = mesh.pa.scrape()
    assert out.value("request_total", direction="outbound", **_target(mesh)) == 1


def test_h2load_100_streams_on_10_connections(mesh: Mesh) -> None:
    if shutil.which("h2load") is None:
        if system_tests_required():
            pytest.fail("h2load (nghttp2-client) is required")
        pytest.skip("h2load (nghttp2-client) is not installed")
    proc = mesh.a.run(
        ["h2load", "-n", "2000", "-c", "10", "-m", "10", _url(mesh, "/ok")],
        timeout=120,
        check=False,
    )
    assert "2000 succeeded, 0 failed, 0 errored" in proc.stdout, (proc.stdout, mesh.logs())
    out = mesh.pa.scrape()
    assert out.value("request_total", direction="outbound", **_target(mesh)) == 2000
    assert (
        out.value("response_total", direction="outbound", status_code="200", **_target(mesh))
        == 2000
    )


def test_grpc_unary_streaming_and_failure(mesh: Mesh) -> None:
    addr = f"{mesh.b.ip}:{GRPC_PORT}"
    unary = mesh.run_json(apps("grpc-call", "--addr", addr, "--method", "Unary", "--message", "hi"))
    assert unary == {"ok": True, "code": "OK", "replies": ["hi"]}, (unary, mesh.logs())
    stream = mesh.run_json(
        apps("grpc-call", "--addr", addr, "--method", "Stream", "--message", "5")
    )
    assert stream["replies"] == [f"message {i}" for i in range(5)], stream
    fail = mesh.run_json(apps("grpc-call", "--addr", addr, "--method", "Fail"))
    assert fail["code"] == "UNAVAILABLE", fail

    out = mesh.pa.scrape()
    t = _target(mesh, GRPC_PORT)
    ok = out.value("response_total", direction="outbound", grpc_status="0", **t)
    failed = out.value(
        "response_total",
        direction="outbound",
        grpc_status="14",
        classification="failure",
        **t,
    )
    assert (ok, failed) == (2, 1), [s.line for s in out.find("response_total")]


def test_websocket_echo(mesh: Mesh) -> None:
    result = mesh.run_json(
        apps("ws-echo", "--url", f"ws://{mesh.b.ip}:{HTTP_PORT}/ws", "--count", "20")
    )
    assert result == {"ok": True, "count": 20}, (result, mesh.logs())
