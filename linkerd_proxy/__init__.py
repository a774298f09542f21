"""A Linkerd data-plane proxy on trio.

The library is layered: ``stack`` (the service abstraction) knows nothing of the
proxy; ``transport``, ``metrics``, ``admin`` and ``log`` are the building blocks; and
``app`` wires them into the sidecar the ``linkerd-proxy`` binary runs.
``linkerd_proxy.testing`` is the public harness for running a real proxy in-process.
"""

__version__ = "0.1.0"
