"""The metrics layer: typed label sets, a registry that cannot duplicate, exposition.

- ``labels``: the :class:`LabelSet` protocol and the shared label classes (target
  address, server/client TLS, ``srv_*``, ``route_*``, ``authz_*``, ``dst_*`` ...).
- ``registry``: typed families (:class:`CounterFamily`, :class:`GaugeFamily`,
  :class:`HistogramFamily`) keyed by rendered label text, with retain-idle eviction.
- ``tcp``: the TCP transport metrics; ``errors``: the proxy error counters.
- ``process``: ``process_*`` and ``proxy_build_info`` on a prometheus-client registry.
- ``expose``: the ``/metrics`` body and gzip.

The process-wide :class:`Registry` is the one global the proxy keeps; it is created
by the app and passed explicitly. See docs/metrics.md for every family and label.
"""

from linkerd_proxy.metrics.labels import (
    NO_LABELS,
    AuthorityLabels,
    AuthzLabels,
    ClientTlsEstablished,
    ClientTlsLabels,
    Direction,
    DstLabels,
    LabelSet,
    NoClientTls,
    NoLabels,
    NoServerTls,
    Peer,
    RouteLabels,
    RtLabels,
    ServerLabels,
    ServerTlsEstablished,
    ServerTlsLabels,
    ServerTlsPassthru,
    TargetAddrLabels,
    escape_label_value,
)
from linkerd_proxy.metrics.registry import (
    LATENCY_MS_BUCKETS,
    Counter,
    CounterFamily,
    Gauge,
    GaugeFamily,
    Histogram,
    HistogramFamily,
    Registry,
)
from linkerd_proxy.metrics.tcp import (
    InboundConnectLabels,
    OutboundConnectLabels,
    TcpAcceptLabels,
    TcpCloseLabels,
    TcpConnectLabels,
    TcpConnMetrics,
    TcpMetrics,
    errno_name,
)

__all__ = [
    "LATENCY_MS_BUCKETS",
    "NO_LABELS",
    "AuthorityLabels",
    "AuthzLabels",
    "ClientTlsEstablished",
    "ClientTlsLabels",
    "Counter",
    "CounterFamily",
    "Direction",
    "DstLabels",
    "Gauge",
    "GaugeFamily",
    "Histogram",
    "HistogramFamily",
    "InboundConnectLabels",
    "LabelSet",
    "NoClientTls",
    "NoLabels",
    "NoServerTls",
    "OutboundConnectLabels",
    "Peer",
    "Registry",
    "RouteLabels",
    "RtLabels",
    "ServerLabels",
    "ServerTlsEstablished",
    "ServerTlsLabels",
    "ServerTlsPassthru",
    "TargetAddrLabels",
    "TcpAcceptLabels",
    "TcpCloseLabels",
    "TcpConnMetrics",
    "TcpConnectLabels",
    "TcpMetrics",
    "errno_name",
    "escape_label_value",
]
