"""The outbound proxy: connections from the application, redirected to port 4140.

Today this is the opaque path (accept, original destination, loop check, forward
to the original destination). Discovery, detection, HTTP routing and balancing
slot in between the accept handler and the forward stack: the per-destination
cache below is where the discovery lookups will live.
"""

from linkerd_proxy.outbound.server import OutboundServer, OutboundTarget

__all__ = ["OutboundServer", "OutboundTarget"]
