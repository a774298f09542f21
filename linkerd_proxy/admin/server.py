"""The admin server's trio driver: the accept loop and the per-connection HTTP/1 loop.

Where it sits: ``app`` binds the admin listener (``127.0.0.1:4191`` by default) and
runs :func:`serve_admin` first, before the proxy's own listeners. Each connection is
served by :func:`handle_admin_connection`, which reads requests with the sans-IO
:class:`~linkerd_proxy.http.h1.codec.H1ServerCodec`, answers them with
:func:`~linkerd_proxy.admin.endpoints.handle_request` and writes the responses.

HTTP/1 only for now: the reference also detects TLS and HTTP/2 on this port (with a
1 s detect timeout) and applies the inbound port policy; h2, TLS and policy come
with the HTTP data-path work, which will put this handler behind the detect stack.

Connection rules: HTTP/1.1 keeps the connection open between requests and
serves pipelined requests in order; HTTP/1.0 closes unless it asks for keep-alive.
An idle keep-alive connection is never cut for being idle; once a request has
begun, its head and body must arrive within ``header_read_timeout`` or the
connection is closed. A malformed request gets its 4xx/5xx and the connection is
closed. One connection's failure never reaches another: each runs on its own and
logs its errors.
"""

from __future__ import annotations

import email.utils
import errno
import functools
import logging
import math
from collections import deque
from collections.abc import Callable

import attrs
import trio

from linkerd_proxy.addrs import SocketAddr
from linkerd_proxy.admin.endpoints import (
    AdminRequest,
    AdminResponse,
    handle_request,
    peer_is_loopback,
)
from linkerd_proxy.admin.state import AdminState
from linkerd_proxy.http.h1.codec import (
    Body,
    EndOfMessage,
    Event,
    H1ServerCodec,
    HttpVersion,
    ProtocolError,
    RequestHead,
    expects_continue,
    header_values,
    serialize_response_head,
)

log = logging.getLogger(__name__)

#: accept() errors that mean "out of resources": back off and keep serving.
_ACCEPT_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})

IsLoopback = Callable[[SocketAddr | None], bool]


@attrs.frozen
class AdminServerConfig:
    """Limits and timeouts of the admin server (seconds and bytes).

    Attributes:
        header_read_timeout: from the first byte of a request until the whole
            request (head and body) has been read; past it the connection closes.
        write_timeout: the longest a response may take to be written.
        max_body_bytes: the largest request body read; more is 413.
        max_head_bytes: the largest request head; more is 431.
        max_headers: the most header fields in a request; more is 431.
        read_size: the most bytes read from the socket at once (this bounds what
            the codec buffers ahead of the request being served).
        close_linger: after a response that closes the connection, how long to
            keep reading (and discarding) so that the client receives the response
            instead of a reset.
        accept_backoff: the pause after accept() fails for lack of resources.
    """

    header_read_timeout: float = 10.0
    write_timeout: float = 10.0
    max_body_bytes: int = 64 * 1024
    max_head_bytes: int = 64 * 1024
    max_headers: int = 100
    read_size: int = 64 * 1024
    close_linger: float = 1.0
    accept_backoff: float = 0.1


class _ReadTimeout(Exception):
    """A started request did not arrive in time."""


async def serve_admin(
    listener: trio.abc.Listener[trio.SocketStream],
    state: AdminState,
    *,
    config: AdminServerConfig | None = None,
    is_loopback: IsLoopback = peer_is_loopback,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept connections on ``listener`` and serve the admin API on each.

    The server owns ``listener`` from now on and closes it when it stops.

    Args:
        listener: a bound listener, usually from ``trio.open_tcp_listeners``.
        state: what the endpoints read and change.
        config: limits and timeouts; the defaults suit the sidecar.
        is_loopback: decides from the peer address whether a connection may use
            the localhost-only endpoints (replaceable for tests).
        task_status: ``started()`` once accepting.

    Raises:
        OSError: if accepting fails for a reason other than lack of resources.

    Cancellation: runs until cancelled; cancelling stops accepting and cancels
    every open connection.
    """
    cfg = config or AdminServerConfig()
    handler = functools.partial(
        handle_admin_connection, state=state, config=cfg, is_loopback=is_loopback
    )
    async with trio.open_nursery() as nursery, listener:
        task_status.started()
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in _ACCEPT_CAPACITY_ERRNOS:
                    raise
                log.error("admin server: accept failed, backing off: %s", exc)
                await trio.sleep(cfg.accept_backoff)
                continue
            nursery.start_soon(handler, stream)


async def handle_admin_connection(
    stream: trio.abc.Stream,
    state: AdminState,
    *,
    config: AdminServerConfig | None = None,
    is_loopback: IsLoopback = peer_is_loopback,
    peer: SocketAddr | None = None,
) -> None:
    """Serve admin requests on one connection until it ends, then close it.

    Never raises for anything the peer does or for a failing handler: errors are
    logged and end only this connection.

    Args:
        stream: the accepted connection (a ``trio.SocketStream`` or any stream).
        state: what the endpoints read and change.
        config: limits and timeouts.
        is_loopback: decides whether the peer may use localhost-only endpoints.
        peer: the client's address; read from the socket when not given.

    Cancellation: the connection is closed at once.
    """
    cfg = config or AdminServerConfig()
    if peer is None:
        peer = _peer_of(stream)
    conn = _Connection(stream, cfg, from_loopback=is_loopback(peer))
    graceful = False
    try:
        graceful = await conn.serve(state)
    except _ReadTimeout:
        log.debug("admin: request from %s not read within %ss", peer, cfg.header_read_timeout)
    except trio.TooSlowError:
        log.debug("admin: response to %s not written within %ss", peer, cfg.write_timeout)
    except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError) as exc:
        log.debug("admin: connection from %s lost: %s", peer, exc)
    except Exception:
        log.exception("admin: connection from %s failed", peer)
    finally:
        if graceful:
            await _close_gracefully(stream, cfg.close_linger)
        else:
            await trio.aclose_forcefully(stream)


def _peer_of(stream: trio.abc.Stream) -> SocketAddr | None:
    if not isinstance(stream, trio.SocketStream):
        return None
    try:
        return SocketAddr.from_sockaddr(stream.socket.getpeername())
    except (OSError, ValueError):
        return None


async def _close_gracefully(stream: trio.abc.Stream, linger: float) -> None:
    # Closing with unread input makes the kernel send a reset, which can destroy
    # the response still in flight; so half-close, drain briefly, then close.
    try:
        with trio.move_on_after(linger):
            if isinstance(stream, trio.abc.HalfCloseableStream):
                await stream.send_eof()
            for _ in range(64):
                if not await stream.receive_some(64 * 1024):
                    break
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass
    finally:
        await trio.aclose_forcefully(stream)


class _Connection:
    """One admin connection: reads requests in order and answers each."""

    def __init__(self, stream: trio.abc.Stream, config: AdminServerConfig, *, from_loopback: bool):
        self._stream = stream
        self._config = config
        self._from_loopback = from_loopback
        self._codec = H1ServerCodec(
            max_head_bytes=config.max_head_bytes, max_headers=config.max_headers
        )
        self._events: deque[Event] = deque()
        self._deadline = math.inf

    async def serve(self, state: AdminState) -> bool:
        """Serve requests until the connection should close.

        Returns:
            True if the connection ended after a complete response (close it
            gracefully), False if the peer went away.
        """
        while True:
            event = await self._next_event()
            if event is None:
                return False
            if isinstance(event, ProtocolError):
                log.debug("admin: bad request: %s", event.reason)
                await self._send_error(event.status, "1.1")
                return True
            assert isinstance(event, RequestHead)
            request = await self._read_request(event)
            if request is None:
                return True  # an error response was sent
            keep_alive = event.keep_alive and not event.upgrade
            response = self._respond(request, state)
            await self._send(event.method, event.version, response, keep_alive=keep_alive)
            if not keep_alive:
                return True

    async def _read_request(self, head: RequestHead) -> AdminRequest | None:
        limit = self._config.max_body_bytes
        if any(_declared_length(v) > limit for v in header_values(head.headers, b"content-length")):
            await self._send_error(413, head.version)
            return None
        if expects_continue(head) and not any(isinstance(e, EndOfMessage) for e in self._events):
            await self._send_bytes(b"HTTP/1.1 100 Continue\r\n\r\n")
        parts: list[bytes] = []
        size = 0
        while True:
            event = await self._next_event()
            if event is None:
                raise trio.BrokenResourceError("peer closed in the middle of a request")
            if isinstance(event, ProtocolError):
                await self._send_error(event.status, head.version)
                return None
            if isinstance(event, Body):
                size += len(event.data)
                if size > limit:
                    await self._send_error(413, head.version)
                    return None
                parts.append(event.data)
            elif isinstance(event, EndOfMessage):
                break
        self._deadline = math.inf  # the next request's clock starts with its first byte
        return AdminRequest(
            method=head.method,
            target=head.target,
            headers=head.headers,
            body=b"".join(parts),
            from_loopback=self._from_loopback,
        )

    def _respond(self, request: AdminRequest, state: AdminState) -> AdminResponse:
        try:
            return handle_request(request, state)
        except Exception:
            log.exception("admin: handler for %r failed", request.target)
            return AdminResponse(500)

    async def _next_event(self) -> Event | None:
        """The next codec event, reading as needed; None once the peer has closed
        between requests.

        Raises:
            _ReadTimeout: if a started request is not complete by its deadline.
        """
        while not self._events:
            if self._codec.closed:
                return None
            if self._deadline == math.inf and not self._codec.idle:
                self._deadline = trio.current_time() + self._config.header_read_timeout
            with trio.move_on_at(self._deadline) as scope:
                data = await self._stream.receive_some(self._config.read_size)
            if scope.cancelled_caught:
                raise _ReadTimeout()
            self._events.extend(self._codec.feed(data) if data else self._codec.feed_eof())
        return self._events.popleft()

    async def _send(
        self, method: bytes, version: HttpVersion, response: AdminResponse, *, keep_alive: bool
    ) -> None:
        status = response.status
        headers = list(response.headers)
        if status >= 200 and status not in (204, 304):
            headers.append((b"content-length", b"%d" % len(response.body)))
        headers.append((b"date", email.utils.formatdate(usegmt=True).encode("ascii")))
        if not keep_alive and version == "1.1":
            headers.append((b"connection", b"close"))
        elif keep_alive and version == "1.0":
            headers.append((b"connection", b"keep-alive"))
        data = serialize_response_head(status, headers, version)
        if method != b"HEAD" and status >= 200 and status not in (204, 304):
            data += response.body
        await self._send_bytes(data)

    async def _send_error(self, status: int, version: HttpVersion) -> None:
        await self._send(b"GET", version, AdminResponse(status), keep_alive=False)

    async def _send_bytes(self, data: bytes) -> None:
        with trio.fail_after(self._config.write_timeout):
            await self._stream.send_all(data)


def _declared_length(value: bytes) -> int:
    # llhttp has already rejected a malformed Content-Length; be safe anyway.
    try:
        return int(value.strip())
    except ValueError:
        return 0
