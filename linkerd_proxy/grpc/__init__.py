"""The control-plane gRPC clients' foundation: the bridge to grpclib, DNS, stream limits.

Layers, bottom up: ``status`` (gRPC codes, pure), ``bridge`` (the only module that
touches asyncio: grpclib under trio-asyncio), ``dns`` (control addresses to socket
addresses, with TTLs), ``client`` (one control service: balancing, TLS rule,
reconnecting watches with the ``CONTROL_STREAM_*`` limits). Discovery and identity
build on :class:`~linkerd_proxy.grpc.client.ControlClient`.
"""

from linkerd_proxy.grpc.bridge import RAW, Bridge, Codec, Endpoint, open_bridge
from linkerd_proxy.grpc.client import (
    ControlClient,
    ControlStream,
    Received,
    StreamLimits,
    fatal_for_watch,
)
from linkerd_proxy.grpc.dns import DnsResolver, DnsSettings, Resolution
from linkerd_proxy.grpc.status import Code

__all__ = [
    "RAW",
    "Bridge",
    "Code",
    "Codec",
    "ControlClient",
    "ControlStream",
    "DnsResolver",
    "DnsSettings",
    "Endpoint",
    "Received",
    "Resolution",
    "StreamLimits",
    "fatal_for_watch",
    "open_bridge",
]
