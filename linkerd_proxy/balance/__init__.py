"""Load balancing: P2C over PeakEWMA for HTTP, P2C for opaque TCP.

The concrete level of the outbound stacks. A resolution's updates
(:mod:`linkerd_proxy.discovery.updates`) feed an :class:`EndpointPool` (through
:func:`serve_updates`); a :class:`Balancer` (HTTP) or :class:`TcpBalancer` picks an
endpoint from it per request or connection; a ``Queue`` in front turns "no
endpoint ready" into fail-fast. Modules: ``ewma`` (the load estimate, pure),
``p2c`` (the choice, pure), ``pool`` (the endpoint set), ``balancer`` (the
services).
"""

from __future__ import annotations

from .balancer import Balancer, TcpBalancer, default_is_failure
from .ewma import DEFAULT_DECAY, DEFAULT_RTT, EwmaConfig, PeakEwma
from .p2c import p2c
from .pool import Endpoint, EndpointPool, FailureAccrual, Lease, is_connect_failure, serve_updates

__all__ = [
    "DEFAULT_DECAY",
    "DEFAULT_RTT",
    "Balancer",
    "Endpoint",
    "EndpointPool",
    "EwmaConfig",
    "FailureAccrual",
    "Lease",
    "PeakEwma",
    "TcpBalancer",
    "default_is_failure",
    "is_connect_failure",
    "p2c",
    "serve_updates",
]
