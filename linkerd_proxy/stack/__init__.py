"""Service/NewService/Layer protocols and the Stack builder.

The bottom layer of the proxy: nothing here knows about the proxy itself. Import
from this package rather than its modules::

    from linkerd_proxy.stack import Service, NewService, stack, MapTarget, Timeout
"""

from __future__ import annotations

from .builder import OnService, Stack, stack
from .idle_cache import Cached, Hold, IdleCache, IdleCacheLayer, NewIdleCached
from .map_target import MapTarget, MapTargetLayer
from .router import Router
from .service import Layer, NewService, Service, ServiceFn, service_fn
from .timeout import Timeout, TimeoutLayer

__all__ = [
    "Cached",
    "Hold",
    "IdleCache",
    "IdleCacheLayer",
    "Layer",
    "MapTarget",
    "MapTargetLayer",
    "NewIdleCached",
    "NewService",
    "OnService",
    "Router",
    "Service",
    "ServiceFn",
    "Stack",
    "Timeout",
    "TimeoutLayer",
    "service_fn",
    "stack",
]
