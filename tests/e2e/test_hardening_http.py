"""HARDENING.md section 6, the HTTP items, through the real binary in the mesh.

Attack clients run in pod A (``python -m linkerd_proxy.testing.peers`` modes from
``testing/http_peers.py``; curl where it can express the case) and go through proxy
A's outbound side (and proxy B's inbound side when a request is forwarded) to
applications in pod B. Each case is scaled down to run in a few seconds, and each
has a measurable pass condition:

- item 6, slowloris: 200 connections trickle one header byte per 2 s against a
  header-read deadline of 3 s (the outbound detect timeout) → every one is closed
  by the proxy between 2.5 s and 5 s; proxy A's fd count rises by at least 150
  during the attack and is back to its baseline within 5 s; an idle keep-alive
  HTTP/1 connection pausing 4.5 s between two requests is not cut;
- item 7, oversized headers: a 17 KiB HTTP/2 header list → 431 on that stream
  while the next stream on the connection gets 200; a 500 KiB HTTP/1 head → 431
  and close; 101 header fields → 431 (100 pass);
- item 8, smuggling corpus → each is 400 and closed (CL+TE may instead be
  forwarded once without Content-Length), and a recording backend that frames
  requests itself never sees a request the client did not send as one;
- item 11: 1,000 streams at once on one HTTP/2 connection to a stalled upstream →
  MAX_CONCURRENT_STREAMS 100 advertised, 900 refused, exactly 100 reach the
  backend, proxy RSS < 200 MiB;
- item 13: ``OUTBOUND_MAX_IN_FLIGHT=5`` with 5 requests stalled → further
  requests get 503 with ``l5d-proxy-error`` at once (< 0.5 s each; ~2 ms measured),
  and requests succeed again once the stalled ones finish.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator

import pytest

from linkerd_proxy.testing.mesh import HTTP_PORT, Mesh, peers, start_mesh

pytestmark = [pytest.mark.system]

MIB = 1024 * 1024
DETECT_TIMEOUT = 3.0
RECORD_PORT = 8081


@pytest.fixture
def hmesh() -> Iterator[Mesh]:
    """The mesh with a 3 s outbound detect timeout (so a 3 s header-read deadline)."""
    yield from start_mesh({"LINKERD2_PROXY_OUTBOUND_DETECT_TIMEOUT": f"{DETECT_TIMEOUT:g}s"})


def _addr(mesh: Mesh, port: int = HTTP_PORT) -> str:
    return f"{mesh.b.ip}:{port}"


def _app_in_b(mesh: Mesh, path: str) -> str:
    """GET ``path`` from the HTTP app directly in pod B (loopback: no proxy)."""
    return mesh.b.run(["curl", "-sS", "-m", "5", f"http://127.0.0.1:{HTTP_PORT}{path}"]).stdout


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _raw(mesh: Mesh, tmp: str, name: str, data: bytes, addr: str) -> dict[str, object]:
    path = os.path.join(tmp, name)
    with open(path, "wb") as f:
        f.write(data)
    return mesh.run_json(peers("raw", "--addr", addr, "--file", path, "--timeout", "5"), timeout=20)


# --- item 6 -------------------------------------------------------------------------


def test_slowloris_is_cut_at_the_header_deadline_but_idle_keep_alive_is_not(
    hmesh: Mesh,
) -> None:
    mesh = hmesh
    base_a, base_b = mesh.pa.fd_count(), mesh.pb.fd_count()
    attack = mesh.a.popen(
        peers("slowloris", "--addr", _addr(mesh), "--conns", "200", "--interval", "2",
              "--duration", "15", "--prefix", "GET /ok HTTP/1.1\\r\\nHost: b\\r\\nX-Slow: ")
    )  # fmt: skip
    peak = base_a
    try:
        deadline = time.monotonic() + 25
        while attack.poll() is None and time.monotonic() < deadline:
            peak = max(peak, mesh.pa.fd_count())
            time.sleep(0.1)
        out, err = attack.communicate(timeout=5)
    finally:
        if attack.poll() is None:
            attack.kill()
            attack.wait(5)
    result = json.loads(out.decode().strip().splitlines()[-1])
    assert result["closed"] == 200 and result["still_open"] == 0, (result, err)
    # Closed by the deadline, not at once and not much later.
    assert result["min_close"] >= DETECT_TIMEOUT - 0.5, result
    assert result["max_close"] <= DETECT_TIMEOUT + 2.0, result
    assert peak >= base_a + 150, (peak, base_a)  # the attack did reach the proxy
    _wait_for(lambda: mesh.pa.fd_count() <= base_a, 5, "proxy A's fds back to baseline")
    assert mesh.pb.fd_count() <= base_b + 2  # nothing was forwarded

    # An idle keep-alive connection outlives the deadline between two requests.
    keep = mesh.run_json(peers("keepalive", "--addr", _addr(mesh), "--pause", "4.5"))
    assert keep == {"statuses": [200, 200], "error": "", "pause": 4.5}, (keep, mesh.logs())


# --- item 7 -------------------------------------------------------------------------


def test_oversized_headers_are_rejected(hmesh: Mesh) -> None:
    mesh = hmesh
    addr = _addr(mesh)
    h2 = mesh.run_json(
        peers("h2-streams", "--addr", addr, "--header-bytes", str(17 * 1024), "--then-path", "/ok")
    )
    # 431 (or a reset) on that stream only: the connection serves the next one.
    assert h2["goaway"] is None, h2
    [(outcome, count)] = dict(h2["first"]).items()  # type: ignore[call-overload]
    assert count == 1 and (outcome == "status 431" or outcome.startswith("reset")), h2
    assert h2["then"] == "status 200", h2
    small = mesh.run_json(peers("h2-streams", "--addr", addr, "--header-bytes", str(8 * 1024)))
    assert small["first"] == {"status 200": 1}, small

    start = b"GET /ok HTTP/1.1\r\nHost: b\r\n"
    with tempfile.TemporaryDirectory(prefix="hardening-") as tmp:
        big = start + b"".join(b"X-Big-%d: %s\r\n" % (i, b"v" * 10240) for i in range(50))
        assert len(big) > 500 * 1024
        r = _raw(mesh, tmp, "big", big + b"\r\n", addr)
        assert r["statuses"] == [431] and r["closed"], r
        # Host and 100 more fields is 101: rejected; Host and 99 more pass.
        fields = b"".join(b"X-H-%d: v\r\n" % i for i in range(100))
        r = _raw(mesh, tmp, "101", start + fields + b"\r\n", addr)
        assert r["statuses"] == [431] and r["closed"], r
        fields = b"".join(b"X-H-%d: v\r\n" % i for i in range(98))
        r = _raw(mesh, tmp, "100", start + fields + b"Connection: close\r\n\r\n", addr)
        assert r["statuses"] == [200], r


# --- item 8 -------------------------------------------------------------------------

_HOST = b"Host: b\r\n"
_SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: b\r\n\r\n"
#: name -> request bytes; each path is /case-<name>, and each hides /smuggled.
SMUGGLING = {
    "cl-te": b"POST /case-cl-te HTTP/1.1\r\n" + _HOST
    + b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + _SMUGGLED,
    "te-cl": b"POST /case-te-cl HTTP/1.1\r\n" + _HOST
    + b"Transfer-Encoding: chunked\r\nContent-Length: 48\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    + _SMUGGLED,
    "gzip-chunked-cl": b"POST /case-gzip-chunked-cl HTTP/1.1\r\n" + _HOST
    + b"Transfer-Encoding: gzip, chunked\r\nContent-Length: 6\r\n\r\n0\r\n\r\n" + _SMUGGLED,
    "duplicate-cl": b"POST /case-duplicate-cl HTTP/1.1\r\n" + _HOST
    + b"Content-Length: 5\r\nContent-Length: 40\r\n\r\nhello" + _SMUGGLED,
    "chunked-gzip": b"POST /case-chunked-gzip HTTP/1.1\r\n" + _HOST
    + b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n" + _SMUGGLED,
    "te-http10": b"POST /case-te-http10 HTTP/1.0\r\n" + _HOST
    + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + _SMUGGLED,
    "obs-fold": b"GET /case-obs-fold HTTP/1.1\r\n" + _HOST
    + b"X-Folded: a\r\n b\r\n\r\n" + _SMUGGLED,
    "bare-lf": b"GET /case-bare-lf HTTP/1.1\nHost: b\nX-A: b\n\n" + _SMUGGLED,
    "bare-lf-header": b"GET /case-bare-lf-header HTTP/1.1\r\nHost: b\nX-A: b\r\n\r\n"
    + _SMUGGLED,
    "chunk-size-overflow": b"POST /case-chunk-size-overflow HTTP/1.1\r\n" + _HOST
    + b"Transfer-Encoding: chunked\r\n\r\n1" + b"0" * 16 + b"5\r\nhello\r\n0\r\n\r\n"
    + _SMUGGLED,
}  # fmt: skip
#: Cases a proxy may instead forward once, Transfer-Encoding winning, then close.
MAY_FORWARD = {"cl-te", "te-cl", "gzip-chunked-cl"}


def test_smuggling_corpus_never_reaches_the_backend_as_two_requests(hmesh: Mesh) -> None:
    mesh = hmesh
    addr = _addr(mesh, RECORD_PORT)
    with tempfile.TemporaryDirectory(prefix="smuggling-") as tmp:
        log_path = os.path.join(tmp, "backend.jsonl")
        backend = mesh.b.popen(
            peers("record-server", "--port", str(RECORD_PORT), "--log", log_path)
        )
        try:
            assert backend.stdout is not None
            assert b"listening" in backend.stdout.readline()
            # Controls: the backend sees a plain request, and sees pipelined ones as two.
            ok = _raw(mesh, tmp, "ok", b"POST /case-ok HTTP/1.1\r\n" + _HOST
                      + b"Content-Length: 5\r\nConnection: close\r\n\r\nhello", addr)  # fmt: skip
            assert ok["statuses"] == [200] and ok["closed"], ok
            two = _raw(mesh, tmp, "two", b"GET /case-two HTTP/1.1\r\n" + _HOST + b"\r\n"
                       + b"GET /case-two HTTP/1.1\r\n" + _HOST + b"Connection: close\r\n\r\n",
                       addr)  # fmt: skip
            assert two["statuses"] == [200, 200] and two["closed"], two
            results = {name: _raw(mesh, tmp, name, data, addr) for name, data in SMUGGLING.items()}
            with open(log_path) as f:
                seen = [json.loads(line) for line in f]
        finally:
            backend.kill()
            backend.wait(5)

    paths = [entry.get("request_line", "").split(" ")[1:2] for entry in seen]
    by_case: dict[str, list[dict[str, object]]] = {}
    for entry, path in zip(seen, paths, strict=True):
        assert "error" not in entry, entry  # the proxy's framing was always sound
        by_case.setdefault(path[0].removeprefix("/case-") if path else "", []).append(entry)
    assert not any(p == ["/smuggled"] for p in paths), seen
    assert len(by_case.pop("ok")) == 1 and len(by_case.pop("two")) == 2, seen
    assert by_case.get("ok") is None
    ok_entry = next(e for e in seen if e["request_line"].startswith("POST /case-ok"))
    assert ok_entry["body_len"] == 5  # the body forwarded byte for byte

    for name, result in results.items():
        forwarded = by_case.pop(name, [])
        if result["statuses"] == [400]:
            assert result["closed"] and forwarded == [], (name, result, forwarded)
        else:
            # Forwarded once, framed by Transfer-Encoding alone, and the
            # connection closed so the rest is never read as a request.
            assert name in MAY_FORWARD, (name, result)
            assert result["statuses"] == [200] and result["closed"], (name, result)
            assert len(forwarded) == 1, (name, forwarded)
            names = {k.lower() for k, _ in forwarded[0]["headers"]}  # type: ignore[attr-defined]
            assert "content-length" not in names or "transfer-encoding" not in names
    assert by_case == {}, by_case


# --- item 11 ------------------------------------------------------------------------


def test_a_thousand_streams_on_one_connection_are_bounded(hmesh: Mesh) -> None:
    mesh = hmesh
    mesh.pa.reset_peak_rss()
    client = mesh.a.popen(
        peers("h2-streams", "--addr", _addr(mesh), "--streams", "1000",
              "--path", "/stall?seconds=30", "--timeout", "4")
    )  # fmt: skip
    held = 0
    try:
        deadline = time.monotonic() + 15
        while client.poll() is None and time.monotonic() < deadline:
            held = max(held, int(_app_in_b(mesh, "/stalled") or 0))
            time.sleep(0.05)
        out, err = client.communicate(timeout=10)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait(5)
        _app_in_b(mesh, "/release")
    result = json.loads(out.decode().strip().splitlines()[-1])
    assert result["max_concurrent_streams"] == 100, (result, err)
    assert result["first"] == {"pending": 100, "reset REFUSED_STREAM": 900}, result
    assert result["goaway"] is None, result
    assert held == 100, held  # exactly the accepted streams reached the backend
    assert mesh.pa.peak_rss() < 200 * MIB, mesh.pa.peak_rss()


# --- item 13 ------------------------------------------------------------------------


@pytest.fixture
def shedding_mesh() -> Iterator[Mesh]:
    yield from start_mesh({"LINKERD2_PROXY_OUTBOUND_MAX_IN_FLIGHT": "5"})


def test_requests_over_max_in_flight_are_shed_at_once(shedding_mesh: Mesh) -> None:
    mesh = shedding_mesh
    url = f"http://{_addr(mesh)}"
    stalled: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(5):
            stalled.append(
                mesh.a.popen(["curl", "-sS", "-m", "30", "-o", "/dev/null",
                              "-w", "%{http_code}", f"{url}/stall?seconds=30"])
            )  # fmt: skip
        _wait_for(lambda: _app_in_b(mesh, "/stalled") == "5", 10, "5 stalled requests")

        n = 20
        proc = mesh.curl(
            "-o", "/dev/null", "-D", "-", "-w", "RESULT %{http_code} %{time_total}\n",
            *[f"{url}/ok"] * n, timeout=20,
        )  # fmt: skip
        results = [
            line.split()[1:] for line in proc.stdout.splitlines() if line.startswith("RESULT")
        ]
        assert [code for code, _ in results] == ["503"] * n, (proc.stdout, mesh.logs())
        assert proc.stdout.lower().count("l5d-proxy-error:") == n, proc.stdout
        times = sorted(float(t) for _, t in results)
        assert times[-1] < 0.5, times
        h2 = mesh.curl("--http2-prior-knowledge", "-i", f"{url}/ok")
        assert h2.stdout.startswith("HTTP/2 503"), h2.stdout
        assert "l5d-proxy-error:" in h2.stdout.lower(), h2.stdout
    finally:
        _app_in_b(mesh, "/release")
        codes = [p.communicate(timeout=15)[0] for p in stalled]
    assert codes == [b"200"] * 5, codes
    after = mesh.curl("-o", "/dev/null", "-w", "%{http_code}", f"{url}/ok")
    assert after.stdout == "200", after.stdout
