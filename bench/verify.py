"""Checks that an mTLS round measured what it claims: pure, on captured text.

The benchmark's runner (``bench/cases.py``) captures pod B's proxy metrics
(``/metrics``) around every ``proxy-mtls`` round and the verbose output of one
gRPC call before every gRPC round; these functions say what is wrong with them,
or ``None``. A round with a problem is rejected, like one in which a proxy used
no CPU. Nothing here does I/O.
"""

from __future__ import annotations

import re

from linkerd_proxy.testing.scrape import Scrape


def _delta(before: Scrape, after: Scrape, name: str, **labels: str) -> float:
    return after.value(name, **labels) - before.value(name, **labels)


def mtls_problem(
    before: str,
    after: str,
    *,
    client_id: str,
    min_conns: int = 0,
    min_requests: int = 0,
) -> str | None:
    """Why pod B's inbound metrics do not show an all-mTLS round, or ``None``.

    Args:
        before: pod B's proxy ``/metrics`` text before the round.
        after: the same after the round.
        client_id: the identity pod A's proxy must have presented.
        min_conns: inbound connections from pod A that must have opened, with
            ``tls="true"`` and ``client_id`` (a bulk copy opens one).
        min_requests: inbound requests that must have been counted with
            ``tls="true"`` and ``client_id`` (HTTP/2 connections outlive rounds,
            so a gRPC round is checked by its requests).

    Every inbound connection and request of the round must be mTLS from
    ``client_id``: one that is not means traffic crossed in plaintext.
    """
    try:
        b, a = Scrape.parse(before), Scrape.parse(after)
    except ValueError as exc:
        return f"unreadable metrics: {exc}"
    inbound = {"direction": "inbound", "peer": "src"}
    mtls = {"tls": "true", "client_id": client_id}
    conns = _delta(b, a, "tcp_open_total", **inbound, **mtls)
    all_conns = _delta(b, a, "tcp_open_total", **inbound)
    reqs = _delta(b, a, "request_total", direction="inbound", **mtls)
    all_reqs = _delta(b, a, "request_total", direction="inbound")
    if conns < min_conns:
        return f"pod B counted {conns:g} mTLS connections from {client_id}, not >= {min_conns}"
    if reqs < min_requests:
        return f"pod B counted {reqs:g} mTLS requests from {client_id}, not >= {min_requests}"
    if all_conns > conns:
        return f"{all_conns - conns:g} inbound connections to pod B were not mTLS from {client_id}"
    if all_reqs > reqs:
        return f"{all_reqs - reqs:g} inbound requests to pod B were not mTLS from {client_id}"
    return None


_STATUS = re.compile(rb"recv \(stream_id=\d+\) :status: (\d+)")
_GRPC_STATUS = re.compile(rb"recv \(stream_id=\d+\) grpc-status: (\S*)")
_DATA = b"recv DATA frame"


def grpc_reply_problem(output: bytes, expected: bytes) -> str | None:
    """Why one gRPC call (``nghttp -v``, its standard output) did not succeed, or ``None``.

    It succeeded if the response had status 200, carried ``expected`` (the
    backend's gRPC frame) and then ``grpc-status: 0`` in its trailers (after the
    data, not in the headers).

    Args:
        output: what ``nghttp -v`` printed: frames, fields and the body, interleaved.
        expected: the gRPC frame the backend answers with.
    """
    tail = output[-800:].decode(errors="replace")
    status = _STATUS.findall(output)
    if status != [b"200"]:
        return f"HTTP/2 status {[s.decode() for s in status] or 'missing'}: {tail}"
    grpc = list(_GRPC_STATUS.finditer(output))
    if [m.group(1) for m in grpc] != [b"0"]:
        return f"grpc-status {[m.group(1).decode() for m in grpc] or 'missing'}, not 0: {tail}"
    data = output.find(_DATA)
    if data < 0 or grpc[0].start() < data:
        return f"grpc-status came before any data, not as a trailer: {tail}"
    if expected not in output[:data]:
        return f"the response did not carry the expected gRPC frame {expected!r}: {tail}"
    return None
