"""The mTLS round checks of the benchmark (``bench/verify.py``), on recorded text.

Pod B's proxy metrics before and after a round, and ``nghttp -v`` output of one
gRPC call, as the runner captures them; no namespaces or tools are needed here.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/ is a directory of the repository, not part of the installed package.
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from bench.configs import GRPC_FRAME  # noqa: E402
from bench.verify import grpc_reply_problem, mtls_problem  # noqa: E402

A_ID = "a.bench.serviceaccount.identity.linkerd.cluster.local"
_MTLS = f'direction="inbound",peer="src",target_port="5001",tls="true",client_id="{A_ID}"'
_PLAIN = 'direction="inbound",peer="src",target_port="5001",tls="no_identity"'
_LOOPBACK = 'direction="inbound",peer="dst",tls="no_identity",no_tls_reason="loopback"'


def _metrics(mtls_conns: int, plain_conns: int = 0, mtls_reqs: int = 0, plain_reqs: int = 0) -> str:
    return "\n".join(
        [
            "# HELP tcp_open_total Total count of opened connections",
            "# TYPE tcp_open_total counter",
            f"tcp_open_total{{{_MTLS}}} {mtls_conns}",
            f"tcp_open_total{{{_PLAIN}}} {plain_conns}",
            f"tcp_open_total{{{_LOOPBACK}}} 7",
            f'request_total{{direction="inbound",tls="true",client_id="{A_ID}"}} {mtls_reqs}',
            f'request_total{{direction="inbound",tls="no_identity"}} {plain_reqs}',
            'request_total{direction="outbound",tls="no_identity"} 99',
        ]
    )


def test_an_all_mtls_bulk_round_passes() -> None:
    assert mtls_problem(_metrics(2), _metrics(3), client_id=A_ID, min_conns=1) is None


def test_a_round_without_an_mtls_connection_is_rejected() -> None:
    problem = mtls_problem(_metrics(2), _metrics(2), client_id=A_ID, min_conns=1)
    assert problem is not None and "0 mTLS connections" in problem


def test_the_wrong_client_identity_does_not_count() -> None:
    other = "c.bench.serviceaccount.identity.linkerd.cluster.local"
    problem = mtls_problem(_metrics(2), _metrics(3), client_id=other, min_conns=1)
    assert problem is not None and other in problem


def test_a_plaintext_inbound_connection_rejects_the_round() -> None:
    problem = mtls_problem(_metrics(2), _metrics(3, plain_conns=1), client_id=A_ID, min_conns=1)
    assert problem is not None and "1 inbound connections" in problem


def test_grpc_rounds_are_checked_by_their_requests() -> None:
    # HTTP/2 connections outlive rounds: no new connection is fine, requests count.
    before, after = _metrics(1, mtls_reqs=10), _metrics(1, mtls_reqs=1010)
    assert mtls_problem(before, after, client_id=A_ID, min_requests=1000) is None
    problem = mtls_problem(before, after, client_id=A_ID, min_requests=1001)
    assert problem is not None and "1000 mTLS requests" in problem
    after = _metrics(1, mtls_reqs=1010, plain_reqs=3)
    problem = mtls_problem(before, after, client_id=A_ID, min_requests=1000)
    assert problem is not None and "3 inbound requests" in problem


def test_unreadable_or_missing_metrics_reject_the_round() -> None:
    problem = mtls_problem("", "garbage {{{", client_id=A_ID)
    assert problem is not None and "unreadable" in problem
    assert mtls_problem("", "", client_id=A_ID, min_conns=1) is not None


_HEAD = b"""\
[  0.000] send HEADERS frame <length=60, flags=0x24, stream_id=13>
          :method: POST
          content-type: application/grpc
          te: trailers
[  0.000] send DATA frame <length=9, flags=0x01, stream_id=13>
          ; END_STREAM
[  0.000] recv (stream_id=13) :status: {status}
[  0.000] recv (stream_id=13) content-type: application/grpc
{early}[  0.000] recv HEADERS frame <length=108, flags=0x04, stream_id=13>
          ; END_HEADERS
"""
_TRAILER = b"""\
[  0.000] recv DATA frame <length=9, flags=0x00, stream_id=13>
[  0.000] recv (stream_id=13) grpc-status: {grpc}
[  0.000] recv HEADERS frame <length=12, flags=0x05, stream_id=13>
          ; END_STREAM | END_HEADERS
"""


def _nghttp(
    *, status: bytes = b"200", grpc: bytes = b"0", body: bytes = GRPC_FRAME, early: bytes = b""
) -> bytes:
    head = _HEAD.replace(b"{status}", status).replace(b"{early}", early)
    return head + body + _TRAILER.replace(b"{grpc}", grpc)


def test_a_grpc_reply_with_the_frame_and_a_status_0_trailer_passes() -> None:
    assert grpc_reply_problem(_nghttp(), GRPC_FRAME) is None


def test_grpc_reply_failures() -> None:
    bad_status = grpc_reply_problem(_nghttp(status=b"502"), GRPC_FRAME)
    assert bad_status is not None and "502" in bad_status
    bad_grpc = grpc_reply_problem(_nghttp(grpc=b"14"), GRPC_FRAME)
    assert bad_grpc is not None and "14" in bad_grpc
    no_trailer = _nghttp().replace(b"grpc-status: 0", b"x-other: 0")
    missing = grpc_reply_problem(no_trailer, GRPC_FRAME)
    assert missing is not None and "missing" in missing
    wrong_body = grpc_reply_problem(_nghttp(body=b"\x00\x00\x00\x00\x00"), GRPC_FRAME)
    assert wrong_body is not None and "expected" in wrong_body


def test_grpc_status_in_the_headers_is_not_a_trailer() -> None:
    # A trailers-only answer (status in the headers, no data) is not the backend's reply.
    early = b"[  0.000] recv (stream_id=13) grpc-status: 0\n"
    trailer = b"grpc-status: 0\n[  0.000] recv HEADERS frame <length=12"
    text = _nghttp(early=early).replace(trailer, b"x: y\n[  0.000] recv HEADERS frame <length=12")
    problem = grpc_reply_problem(text, GRPC_FRAME)
    assert problem is not None and "trailer" in problem
