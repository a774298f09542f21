"""Transport: the layer that touches sockets.

Listening and the accept loop (``listen``), the original destination of
redirected connections (``orig_dst``), socket options (``sockopt``), dialling
endpoints with a bounded wait (``connect``) and backoff (``backoff``, pure), and
the opaque TCP forwarder (``duplex``, with the ``splice`` fast path). Everything
above this package sees ``trio.SocketStream``/``trio.abc.Stream`` objects and the
project's error types.
"""

from .backoff import BackoffSeries, ExponentialBackoff
from .connect import connect, connect_with_backoff
from .duplex import DuplexResult, proxy_streams
from .listen import TcpListener, configure_accepted, open_listener, serve_listener
from .orig_dst import (
    OrigDstLookup,
    fixed_orig_dst,
    local_addr,
    local_addr_as_orig_dst,
    orig_dst_addr,
    peer_addr,
)

__all__ = [
    "BackoffSeries",
    "DuplexResult",
    "ExponentialBackoff",
    "OrigDstLookup",
    "TcpListener",
    "configure_accepted",
    "connect",
    "connect_with_backoff",
    "fixed_orig_dst",
    "local_addr",
    "local_addr_as_orig_dst",
    "open_listener",
    "orig_dst_addr",
    "peer_addr",
    "proxy_streams",
    "serve_listener",
]
