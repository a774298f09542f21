"""What the benchmark measures: the systems under test and the cases (BENCH.md).

The pure description shared by the runner (``bench/run.py``, ``bench/cases.py``) and
the report (``bench/report.py``). Changing a case here changes both what runs and
how the table reads.
"""

from __future__ import annotations

from typing import Literal

import attrs

Tool = Literal["wrk", "h2load", "bulk"]

#: Systems in table order, with their row labels.
SYSTEMS: dict[str, str] = {
    "direct": "direct (no proxy)",
    "nginx": "nginx reverse proxy",
    "haproxy": "haproxy mode http",
    "nginx-stream": "nginx stream (TCP)",
    "haproxy-tcp": "haproxy mode tcp",
    "proxy": "linkerd-proxy (outbound)",
    "proxy-mesh": "linkerd-proxy x2 (outbound -> inbound)",
    "floor-relay": "Python floor: minimal trio TCP relay",
    "floor-http1": "Python floor: minimal trio + httptools HTTP/1 proxy",
    "nginx-grpc": "nginx x2, gRPC over mTLS (grpc_pass grpcs://)",
    "proxy-mtls": "linkerd-proxy x2, mTLS (identity, discovery)",
}

#: The systems that are this project's proxy (their failures are recorded, not fatal).
PROXY_SYSTEMS = ("proxy", "proxy-mesh", "proxy-mtls")
#: The systems whose traffic between the pods is mTLS (only the mTLS cases use them).
MTLS_SYSTEMS = ("nginx-grpc", "proxy-mtls")
#: The proxies whose memory is measured (idle RSS, RSS per 1,000 idle connections;
#: for ``proxy-mtls``, which carries no plain HTTP/1, the idle RSS only).
MEMORY_SYSTEMS = ("nginx", "haproxy", "nginx-stream", "haproxy-tcp", "proxy", "proxy-mtls")
#: The Python floor (``bench/floor.py``): the least one CPython process on trio does
#: for the same traffic, measured in the same run; only in the cases it informs.
FLOOR_SYSTEMS = ("floor-relay", "floor-http1")

_ALL = tuple(s for s in SYSTEMS if s not in MTLS_SYSTEMS and s not in FLOOR_SYSTEMS)


@attrs.frozen
class Case:
    """One benchmark case.

    Attributes:
        id: the key in ``latest.json``.
        title: what the table calls it.
        tool: the load generator.
        path: the request path (``/ok`` = 2 bytes, ``/64k`` = 64 KiB).
        connections: concurrent connections (h2load: clients).
        streams: concurrent streams per connection (h2load ``-m``).
        systems: the systems it runs against, in order.
        grpc: an h2load case that POSTs a gRPC request frame to ``path``
            (``content-type: application/grpc``, ``te: trailers``) instead of a GET.
    """

    id: str
    title: str
    tool: Tool
    path: str = "/ok"
    connections: int = 16
    streams: int = 1
    systems: tuple[str, ...] = _ALL
    grpc: bool = False

    @property
    def is_http2(self) -> bool:
        return self.tool == "h2load"


CASES: tuple[Case, ...] = (
    Case("h1_small_c16", "HTTP/1 /ok c16", "wrk", systems=(*_ALL, *FLOOR_SYSTEMS)),
    Case(
        "h1_small_c1",
        "HTTP/1 /ok c1 (latency)",
        "wrk",
        connections=1,
        systems=(*_ALL, "floor-http1"),
    ),
    Case("h1_64k_c16", "HTTP/1 64 KiB c16", "wrk", path="/64k", systems=(*_ALL, "floor-http1")),
    Case("h2_small_m1", "HTTP/2 /ok c16 m1", "h2load"),
    Case(
        "h2_small_m10", "HTTP/2 /ok c16 m10", "h2load", streams=10, systems=(*_ALL, "floor-relay")
    ),
    Case("h2_64k_m10", "HTTP/2 64 KiB c16 m10", "h2load", path="/64k", streams=10),
    Case(
        "tcp_bulk",
        "TCP bulk copy",
        "bulk",
        connections=1,
        systems=("direct", "nginx-stream", "haproxy-tcp", "proxy"),
    ),
    Case(
        "tcp_bulk_mtls",
        "TCP bulk copy over mTLS",
        "bulk",
        connections=1,
        systems=("direct", "proxy-mtls"),
    ),
    Case(
        "grpc_unary_mtls",
        "gRPC unary c16 m10, mTLS between the pods",
        "h2load",
        path="/bench.Echo/Unary",
        streams=10,
        systems=("direct", "nginx-grpc", "proxy-mtls"),
        grpc=True,
    ),
)


def case_by_id(case_id: str) -> Case:
    for case in CASES:
        if case.id == case_id:
            return case
    raise KeyError(case_id)
