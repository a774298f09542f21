"""The inbound proxy: connections to the pod, redirected to port 4143.

Today this is the opaque path (accept, original destination, INBOUND_IPS check,
forward to the application); TLS, detection, HTTP and policy slot in as layers
between the accept handler and the forward stack.
"""

from linkerd_proxy.inbound.server import InboundServer, InboundTarget

__all__ = ["InboundServer", "InboundTarget"]
