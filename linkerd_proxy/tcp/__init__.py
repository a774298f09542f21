"""Opaque TCP: the connection-level request type and the forwarding service.

Used by both the inbound and the outbound stacks for connections that are not (or
not yet) handled at the HTTP level.
"""

from linkerd_proxy.tcp.accepted import Accepted, ConnInfo, ConnMetrics, NoConnMetrics
from linkerd_proxy.tcp.forward import Connect, Forward, dialer
from linkerd_proxy.tcp.metered import MeteredStream

__all__ = [
    "Accepted",
    "ConnInfo",
    "ConnMetrics",
    "Connect",
    "Forward",
    "MeteredStream",
    "NoConnMetrics",
    "dialer",
]
