"""Opening TCP connections to endpoints, with a bounded wait.

Sits at the bottom of every client stack: the endpoint layer of the outbound
and inbound stacks calls :func:`connect` with an IP address (discovery and the
original destination have already resolved names), so there is no DNS and no
happy eyeballs here. OS errors are mapped to :class:`~linkerd_proxy.errors.ConnectError`
at this boundary, with the errno kept for metrics.

On retrying: the data path must not redial in a background loop. A connection
is attempted only for a request or connection in hand; if that attempt fails,
the caller fails or retries *that* work. A service that kept redialling a
removed endpoint on its own is the bug linkerd2-proxy fixed in d10ed8f (stale
endpoints dialled forever after scale-down). :func:`connect_with_backoff` is for
loops that are meant to persist (control-plane clients, a probe with work
waiting), and it takes an explicit attempt budget.
"""

from __future__ import annotations

import errno as errno_mod
import logging
import os
import socket

import trio

from ..addrs import SocketAddr
from ..errors import ConnectError, ConnectTimeout
from .backoff import BackoffSeries, ExponentialBackoff
from .sockopt import configure_tcp

log = logging.getLogger(__name__)


def _reason(exc: OSError) -> str:
    if exc.errno is None:
        return str(exc)
    name = errno_mod.errorcode.get(exc.errno, str(exc.errno))
    return f"{os.strerror(exc.errno)} ({name})"


async def connect(
    addr: SocketAddr,
    *,
    timeout: float,  # noqa: ASYNC109 (expiry is a ConnectTimeout, not Cancelled)
    keepalive: float | None = None,
    user_timeout: float | None = None,
) -> trio.SocketStream:
    """Open a TCP connection to ``addr`` within ``timeout`` seconds.

    The returned stream has ``TCP_NODELAY``, ``SO_KEEPALIVE`` (idle time
    ``keepalive`` if set) and ``TCP_USER_TIMEOUT`` (if set).

    Args:
        addr: the endpoint's IP address and port.
        timeout: seconds allowed for the TCP handshake.
        keepalive: keepalive idle seconds, or ``None`` for the kernel default.
        user_timeout: ``TCP_USER_TIMEOUT`` seconds, or ``None``.

    Returns:
        The connected stream; the caller owns it.

    Raises:
        ConnectTimeout: the handshake did not finish in time (``errno`` None).
        ConnectError: the OS refused (``errno`` set, e.g. ``ECONNREFUSED``).

    Cancellation:
        The half-open socket is closed and ``Cancelled`` propagates.
    """
    sock = trio.socket.socket(addr.family, socket.SOCK_STREAM)
    try:
        with trio.move_on_after(timeout) as scope:
            await sock.connect(addr.to_sockaddr())
        if scope.cancelled_caught:
            raise ConnectTimeout(addr, f"timed out after {timeout:g}s")
        configure_tcp(sock, keepalive=keepalive, user_timeout=user_timeout)
        stream = trio.SocketStream(sock)
    except OSError as exc:
        sock.close()
        raise ConnectError(addr, _reason(exc), exc.errno) from exc
    except BaseException:
        sock.close()
        raise
    log.debug("connected to %s", addr)
    return stream


async def connect_with_backoff(
    addr: SocketAddr,
    *,
    timeout: float,  # noqa: ASYNC109 (per attempt)
    backoff: ExponentialBackoff | BackoffSeries,
    attempts: int | None,
    keepalive: float | None = None,
    user_timeout: float | None = None,
) -> trio.SocketStream:
    """Dial ``addr`` until it answers, sleeping per ``backoff`` between tries.

    Not for the data path's background: see the module docstring.

    Args:
        addr: the endpoint.
        timeout: per-attempt connect timeout, seconds.
        backoff: a policy (a new series is started) or a series to continue,
            so that a caller's failures accumulate across calls. A series is
            reset on success.
        attempts: the most attempts to make (>= 1), or ``None`` for no limit.
        keepalive: as for :func:`connect`.
        user_timeout: as for :func:`connect`.

    Returns:
        The connected stream.

    Raises:
        ConnectError: the last attempt's error once ``attempts`` are used up.
        ValueError: if ``attempts`` is less than 1.

    Cancellation:
        Safe at any point; nothing is left open.
    """
    if attempts is not None and attempts < 1:
        raise ValueError(f"attempts must be at least 1, not {attempts}")
    series = backoff.series() if isinstance(backoff, ExponentialBackoff) else backoff
    tried = 0
    while True:
        tried += 1
        try:
            stream = await connect(
                addr, timeout=timeout, keepalive=keepalive, user_timeout=user_timeout
            )
        except ConnectError as exc:
            if attempts is not None and tried >= attempts:
                raise
            delay = next(series)
            log.debug("connect to %s failed (%s); retrying in %.3fs", addr, exc, delay)
            await trio.sleep(delay)
        else:
            series.reset()
            return stream
