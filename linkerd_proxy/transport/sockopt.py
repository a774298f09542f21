"""TCP socket options applied to every connection the proxy accepts or opens.

Sits at the bottom of the transport layer: ``listen.py`` calls
:func:`configure_tcp` on each accepted socket and ``connect.py`` on each
connected one. Failures to set an option are logged and ignored, as the
reference does: a connection is more useful without keepalive than not at all.

Behaviour carried over from linkerd2-proxy:

- ``TCP_NODELAY`` is always on.
- ``SO_KEEPALIVE`` is always on; a configured keepalive duration sets the idle
  time before the first probe (``TCP_KEEPIDLE``), otherwise the kernel's
  default idle time applies.
- ``TCP_USER_TIMEOUT`` (Linux only) is set when configured, in milliseconds.
"""

from __future__ import annotations

import logging
import socket
from typing import Protocol

log = logging.getLogger(__name__)


class _SockOpts(Protocol):
    """The part of a (stdlib or trio) socket this module needs."""

    def setsockopt(self, level: int, optname: int, value: int, /) -> None: ...


def _seconds_to_whole(value: float, *, scale: int) -> int:
    # Round up so that a sub-unit value never becomes 0 ("use the default").
    scaled = value * scale
    whole = int(scaled)
    if whole < scaled:
        whole += 1
    return max(whole, 1)


def set_nodelay(sock: _SockOpts) -> None:
    """Turn Nagle's algorithm off (``TCP_NODELAY``).

    Setting it again on a socket that already has it is not a no-op on Linux: it
    pushes out any segment the stack is holding back, which the splice path
    relies on after a partial write (see ``splice.py``).
    """
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as exc:
        log.warning("failed to set nodelay: %s", exc)


def set_keepalive(sock: _SockOpts, keepalive: float | None) -> None:
    """Enable TCP keepalive, with ``keepalive`` seconds of idle before probing.

    Args:
        sock: a TCP socket.
        keepalive: idle seconds before the first probe, or ``None`` for the
            kernel's default. Keepalive is enabled either way.
    """
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if keepalive is not None:
            idle = _seconds_to_whole(keepalive, scale=1)
            if hasattr(socket, "TCP_KEEPIDLE"):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
            elif hasattr(socket, "TCP_KEEPALIVE"):  # macOS spells it this way
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPALIVE, idle)
    except OSError as exc:
        log.warning("failed to set keepalive: %s", exc)


def set_user_timeout(sock: _SockOpts, user_timeout: float | None) -> None:
    """Set ``TCP_USER_TIMEOUT``: how long sent data may stay unacknowledged.

    Args:
        sock: a TCP socket.
        user_timeout: seconds, or ``None`` to leave the kernel default. Ignored
            (with a debug message) where the option does not exist.
    """
    if user_timeout is None:
        return
    if not hasattr(socket, "TCP_USER_TIMEOUT"):
        log.debug("TCP_USER_TIMEOUT is supported on Linux only")
        return
    try:
        millis = _seconds_to_whole(user_timeout, scale=1000)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, millis)
    except OSError as exc:
        log.warning("failed to set user timeout: %s", exc)


def configure_tcp(sock: _SockOpts, *, keepalive: float | None, user_timeout: float | None) -> None:
    """Apply the proxy's per-connection options: nodelay, keepalive, user timeout.

    Never raises: a failure is logged at warning level.
    """
    set_nodelay(sock)
    set_keepalive(sock, keepalive)
    set_user_timeout(sock, user_timeout)
