"""Flow-control memory through the real binary: 100 MiB past a slow reader.

Curl in pod A sends (or fetches) 100 MiB through proxy A (outbound) and proxy B
(inbound) to hypercorn in pod B, while the far end reads slowly: the ``/sink``
endpoint sleeps 8 ms after each 64 KiB it reads (at most ~7.8 MiB/s), and the
download's client is curl with ``--limit-rate 8M``. Unthrottled, the same paths move
100 MiB in ~6.7 s over HTTP/2 and under 1 s over HTTP/1.1 on this 2-core machine, so
the sender is clearly faster than the reader and a proxy that buffered instead of
applying back-pressure would hold tens of MiB (a 100 MiB upload at those speeds
leaves more than 50 MiB unread when the sender finishes). The acceptance bound: each
proxy's RSS growth (its peak during the transfer, ``VmHWM`` reset just before, minus
its RSS before) stays under 32 MiB, and the body arrives intact (sha256).

Measured here: the transfers take 12.6 s (download), 15 s (HTTP/1.1 upload) and
16 s (HTTP/2 upload); RSS growth stays under 1 MiB on both proxies. With proxy A's
HTTP/2 server windows raised to 2^31-1 (flow control defeated), the HTTP/2 upload
grew proxy A by 113 MiB: the bound does catch a proxy that buffers.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable

import pytest

from linkerd_proxy.testing.apps import pattern
from linkerd_proxy.testing.mesh import HTTP_PORT, Mesh

pytestmark = [pytest.mark.system]

MIB = 1024 * 1024
SIZE = 100 * MIB
MAX_GROWTH = 32 * MIB
#: The sink's pace: 8 ms of sleep per 64 KiB read.
SINK = "/sink?delay=0.008&every=65536"
#: The slow client's pace for the download.
CLIENT_RATE = "8M"
#: Generous bounds on one transfer (measured 12.6-16 s).
MAX_SECONDS = 45
CURL_TIMEOUT = 90


def _url(mesh: Mesh, path: str) -> str:
    return f"http://{mesh.b.ip}:{HTTP_PORT}{path}"


def _measured(mesh: Mesh, transfer: Callable[[], str]) -> tuple[str, float, dict[str, int]]:
    """Run ``transfer``; return its output, its duration and each proxy's RSS growth."""
    baseline = {}
    for name, proxy in (("A", mesh.pa), ("B", mesh.pb)):
        proxy.reset_peak_rss()
        baseline[name] = proxy.rss()
    start = time.monotonic()
    out = transfer()
    seconds = time.monotonic() - start
    growth = {
        "A": mesh.pa.peak_rss() - baseline["A"],
        "B": mesh.pb.peak_rss() - baseline["B"],
    }
    return out, seconds, growth


def _upload(mesh: Mesh, *http: str) -> None:
    data = pattern(SIZE, seed=5)
    want = hashlib.sha256(data).hexdigest()
    with tempfile.TemporaryDirectory(prefix="flow-control-") as tmp:
        path = os.path.join(tmp, "upload.bin")
        with open(path, "wb") as f:
            f.write(data)
        del data

        def transfer() -> str:
            proc = mesh.curl(
                *http, "-T", path, "-X", "POST", _url(mesh, SINK), timeout=CURL_TIMEOUT
            )
            assert proc.returncode == 0, (proc.stderr, mesh.logs())
            return proc.stdout

        out, seconds, growth = _measured(mesh, transfer)
    result = json.loads(out)
    assert result["bytes"] == SIZE, result
    assert result["sha256"] == want, result
    # The reader really was slow: it slept 8 ms per 64 KiB, 12.8 s in all.
    assert result["seconds"] >= 12.8, result
    assert seconds < MAX_SECONDS, seconds
    assert growth["A"] < MAX_GROWTH and growth["B"] < MAX_GROWTH, (growth, seconds)


def test_http2_upload_to_a_slow_server_keeps_rss_bounded(mesh: Mesh) -> None:
    _upload(mesh, "--http2-prior-knowledge")


def test_http1_upload_to_a_slow_server_keeps_rss_bounded(mesh: Mesh) -> None:
    _upload(mesh, "--http1.1")


def test_http2_download_to_a_slow_client_keeps_rss_bounded(mesh: Mesh) -> None:
    want = hashlib.sha256(pattern(SIZE)).hexdigest()
    script = (
        f"curl -sS -m {CURL_TIMEOUT} --http2-prior-knowledge --limit-rate {CLIENT_RATE} "
        f"{_url(mesh, f'/bytes/{SIZE}')} | sha256sum"
    )

    def transfer() -> str:
        proc = mesh.a.run(["sh", "-c", script], timeout=CURL_TIMEOUT + 5, check=False)
        assert proc.stderr == "", (proc.stderr, mesh.logs())
        return proc.stdout

    out, seconds, growth = _measured(mesh, transfer)
    assert out.split()[0] == want, mesh.logs()
    # --limit-rate 8M paces 100 MiB over 12.5 s.
    assert 12 <= seconds < MAX_SECONDS, seconds
    assert growth["A"] < MAX_GROWTH and growth["B"] < MAX_GROWTH, (growth, seconds)
