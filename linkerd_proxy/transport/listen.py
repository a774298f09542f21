"""Listening sockets and the accept loop.

Sits at the top of every server stack: the app binds the inbound, outbound,
admin and tap listeners with :func:`open_listener` (at startup, before serving,
so that bind errors fail init), then runs :func:`serve_listener` for each. Every
accepted connection runs its handler in its own task in a nursery the caller
owns, so cancelling the accept loop (graceful shutdown: "stop accepting") leaves
in-flight connections running until the caller drains or cancels them.

Binding follows linkerd2-proxy: ``SO_REUSEADDR`` on, and ``IPV6_V6ONLY`` left
at the system default for ``[::]`` (on Linux usually dual-stack; pass
``v6only`` to force either way). Without a configured backlog we ask for the
largest one the kernel allows (``net.core.somaxconn``). A dual listen address
(``127.0.0.1:4140`` plus ``[::1]:4140``) is two listeners, each served by its
own :func:`serve_listener`.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import Awaitable, Callable

import trio

from ..addrs import SocketAddr
from .sockopt import configure_tcp

log = logging.getLogger(__name__)

#: accept(2) errors that mean "the system is overloaded": back off and go on.
ACCEPT_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})

#: How long the accept loop sleeps after one of those errors, seconds.
ACCEPT_CAPACITY_SLEEP = 0.1

# The kernel clamps this to net.core.somaxconn, so it means "as large as allowed".
_MAX_BACKLOG = 0xFFFF

Handler = Callable[[trio.SocketStream], Awaitable[object]]


class TcpListener(trio.abc.Listener[trio.SocketStream]):
    """A bound, listening TCP socket that configures each accepted connection.

    Accepted streams get ``TCP_NODELAY``, ``SO_KEEPALIVE`` (idle ``keepalive``)
    and ``TCP_USER_TIMEOUT``. Routine accept errors (``ECONNABORTED`` ...) are
    skipped; capacity errors (``EMFILE`` ...) are raised for the serve loop.

    Attributes:
        socket_listener: the underlying :class:`trio.SocketListener`.
        local_addr: the bound address (with the real port when 0 was asked).
    """

    def __init__(
        self,
        socket_listener: trio.SocketListener,
        *,
        keepalive: float | None,
        user_timeout: float | None,
    ) -> None:
        self.socket_listener = socket_listener
        self.keepalive = keepalive
        self.user_timeout = user_timeout
        self.local_addr = SocketAddr.from_sockaddr(socket_listener.socket.getsockname())

    async def accept(self) -> trio.SocketStream:
        """Accept one connection and apply the socket options to it.

        Raises:
            OSError: capacity errors (``EMFILE``, ``ENFILE``, ``ENOBUFS``, ``ENOMEM``).
            trio.ClosedResourceError: the listener was closed.
        """
        stream = await self.socket_listener.accept()
        configure_accepted(stream, keepalive=self.keepalive, user_timeout=self.user_timeout)
        return stream

    async def aclose(self) -> None:
        """Stop listening; pending, un-accepted connections are reset by the kernel."""
        await self.socket_listener.aclose()


def configure_accepted(
    stream: trio.SocketStream, *, keepalive: float | None, user_timeout: float | None
) -> None:
    """Apply the accept-side options to an accepted stream (never raises)."""
    configure_tcp(stream.socket, keepalive=keepalive, user_timeout=user_timeout)


async def open_listener(
    addr: SocketAddr,
    *,
    backlog: int | None = None,
    keepalive: float | None = None,
    user_timeout: float | None = None,
    reuse_port: bool = False,
    v6only: bool | None = None,
) -> TcpListener:
    """Bind and listen on ``addr``.

    Args:
        addr: where to listen; port 0 picks a free port (see ``local_addr``).
        backlog: the listen backlog, or ``None`` for the kernel maximum.
        keepalive: keepalive idle seconds for accepted connections.
        user_timeout: ``TCP_USER_TIMEOUT`` seconds for accepted connections.
        reuse_port: set ``SO_REUSEPORT`` (several processes on one port).
        v6only: for IPv6 addresses, force ``IPV6_V6ONLY`` on or off; ``None``
            keeps the system default, as the reference does.

    Returns:
        The listener; the caller owns it (``serve_listener`` closes it).

    Raises:
        OSError: binding failed (e.g. ``EADDRINUSE``).
    """
    sock = trio.socket.socket(addr.family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if addr.family == socket.AF_INET6 and v6only is not None:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
        await sock.bind(addr.to_sockaddr())
        sock.listen(_MAX_BACKLOG if backlog is None else backlog)
    except BaseException:
        sock.close()
        raise
    listener = TcpListener(
        trio.SocketListener(sock), keepalive=keepalive, user_timeout=user_timeout
    )
    log.debug("listening on %s", listener.local_addr)
    return listener


async def _run_handler(handler: Handler, stream: trio.SocketStream) -> None:
    try:
        await handler(stream)
    except Exception:
        # One connection's failure must never reach the accept loop or its
        # siblings; the handler's own layers report errors to metrics.
        log.exception("connection handler failed")
    finally:
        await trio.aclose_forcefully(stream)


async def serve_listener(
    listener: trio.abc.Listener[trio.SocketStream],
    handler: Handler,
    *,
    handler_nursery: trio.Nursery,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept connections forever, running ``handler(stream)`` for each.

    Each handler runs in its own task in ``handler_nursery``. An exception from
    a handler is logged and the stream closed; nothing else is affected. The
    stream is closed when the handler returns.

    Args:
        listener: usually a :class:`TcpListener`; closed when this returns.
        handler: the per-connection entry point of a server stack.
        handler_nursery: where connection tasks run; must outlive the accept
            loop if in-flight connections should survive its cancellation.
        task_status: ``started()`` once the loop is accepting.

    Raises:
        OSError: an accept error other than the capacity ones.

    Cancellation:
        Cancelling this task stops accepting and closes the listener; handler
        tasks are untouched (they belong to ``handler_nursery``). Returns
        normally if the listener is closed by someone else.
    """
    async with listener:
        task_status.started()
        while True:
            try:
                stream = await listener.accept()
            except trio.ClosedResourceError:
                return
            except OSError as exc:
                if exc.errno not in ACCEPT_CAPACITY_ERRNOS:
                    raise
                log.error(
                    "accept failed: %s (%s); retrying in %ss",
                    errno.errorcode[exc.errno],
                    os.strerror(exc.errno),
                    ACCEPT_CAPACITY_SLEEP,
                )
                await trio.sleep(ACCEPT_CAPACITY_SLEEP)
                continue
            handler_nursery.start_soon(_run_handler, handler, stream)
