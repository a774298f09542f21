"""The control-plane gRPC clients' foundation: the bridge to grpclib, DNS, stream limits.

Layers, bottom up: ``status`` (gRPC codes, pure), ``bridge`` (the only module that
touches asyncio: grpclib under trio-asyncio), ``dns`` (control addresses to socket
addresses, with TTLs), ``client`` (one control service: balancing, TLS rule,
reconnecting watches with the ``CONTROL_STREAM_*`` limits). Discovery and identity
build on :class:`~linkerd_proxy.grpc.client.ControlClient`.

The names below are loaded on first use: importing this package, or the pure
``grpc.status``, does not import the bridge (and with it asyncio, trio-asyncio
and grpclib), which a proxy without a control plane never needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_MODULE_OF: dict[str, str] = {
    **dict.fromkeys(("RAW", "Bridge", "Codec", "Endpoint", "open_bridge"), ".bridge"),
    **dict.fromkeys(
        ("ControlClient", "ControlStream", "Received", "StreamLimits", "fatal_for_watch"),
        ".client",
    ),
    **dict.fromkeys(("DnsResolver", "DnsSettings", "Resolution"), ".dns"),
    "Code": ".status",
}


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
