"""The innermost opaque-TCP service: connect to one address and copy both ways.

``Forward`` is what a connection reaches when the proxy has nothing to do at the
HTTP level: the inbound proxy forwarding to the application, the outbound proxy
forwarding to an original destination (and, with discovery, to an endpoint the
balancer picked). Byte counts go to both sides' metrics from the copy's
callbacks, so the ``os.splice`` fast path keeps its accounting.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable

import attrs
import trio

from linkerd_proxy.addrs import SocketAddr
from linkerd_proxy.tcp.accepted import Accepted, ConnMetrics
from linkerd_proxy.transport.connect import connect
from linkerd_proxy.transport.duplex import proxy_streams

log = logging.getLogger(__name__)

#: Opens a connection to an address (``transport.connect`` with options bound).
Connect = Callable[[SocketAddr], Awaitable[trio.SocketStream]]


def dialer(
    *, timeout: float, keepalive: float | None = None, user_timeout: float | None = None
) -> Connect:
    """A :data:`Connect` with a direction's connect timeout and socket options bound."""
    return functools.partial(
        connect, timeout=timeout, keepalive=keepalive, user_timeout=user_timeout
    )


@attrs.frozen
class Forward:
    """``Service[Accepted, None]``: connect to ``addr`` and proxy the connection.

    Attributes:
        addr: where to connect.
        connect: how to connect (timeout and socket options bound in).
        new_metrics: opens the connect side's metrics for one connection.

    Raises:
        ConnectError: the connection could not be opened (the caller counts and
            logs it; the accepted stream is left to the caller to close).
    """

    addr: SocketAddr
    connect: Callable[[SocketAddr], Awaitable[trio.abc.Stream]]
    new_metrics: Callable[[], ConnMetrics]

    async def __call__(self, conn: Accepted, /) -> None:
        server = await self.connect(self.addr)
        metrics = self.new_metrics()
        accept = conn.metrics

        def client_read(n: int) -> None:
            accept.add_read(n)
            metrics.add_write(n)

        def server_read(n: int) -> None:
            metrics.add_read(n)
            accept.add_write(n)

        if conn.prefix:
            metrics.add_write(len(conn.prefix))
        errno: int | None = None
        try:
            result = await proxy_streams(
                conn.stream,
                server,
                on_client_read=client_read,
                on_server_read=server_read,
                prefix=conn.prefix,
            )
            errno = result.errno
            if result.error is not None:
                log.debug("connection to %s ended with %r", self.addr, result.error)
        finally:
            metrics.close(errno)
            conn.close_errno = errno
