"""A per-endpoint pool of HTTP/1 client connections, as an HTTP service.

Where it sits: the outbound and inbound endpoint stacks make one
:class:`H1Pool` per endpoint (the analogue of the reference's hyper client with
``pool_max_idle_per_host``/``pool_idle_timeout``); above it are the endpoint
layers (metrics, tap), below it :class:`~linkerd_proxy.http.h1.client.H1Connection`.

Reuse: the most recently used idle connection first (keeps the rest cold, so they
expire). Before a connection idle for :data:`PEEK_AFTER` or more is reused it is
checked, without waiting, for EOF or stray bytes from the server (BENCH.md lesson
3: a backend that closed an idle keep-alive connection must not cause a
client-visible error). If a reused
connection still fails before any byte of the response came back, a request
whose body was not consumed and that was either never written or is idempotent
is sent again, once, on a fresh connection.

Not pooled (one connection per request, as the reference's one-off client):
HTTP/1.0 requests, requests without an authority of their own (no Host: none,
or the default :class:`~linkerd_proxy.http.normalize.DefaultAuthority`), ``CONNECT`` and
upgrades (their connection becomes a tunnel).

Background work: one sweeper task, started in ``background`` on the first
check-in, closes connections idle for ``idle_timeout`` or closed by the server;
request bodies are written by tasks in the same nursery. :meth:`H1Pool.aclose`
stops the sweeper and closes the idle connections.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import attrs
import trio

from linkerd_proxy.errors import H1ConnectionClosed
from linkerd_proxy.http.h1.client import H1ClientSettings, H1Connection
from linkerd_proxy.http.model import Request, Response
from linkerd_proxy.http.normalize import DefaultAuthority
from linkerd_proxy.http.upgrade import DownstreamUpgrade

log = logging.getLogger(__name__)

Connect = Callable[[], Awaitable[trio.abc.Stream]]


#: A connection idle for less than this is reused without the EOF check (a
#: system call on the hot path); a server closing it so soon is covered by the
#: retry of requests that were never answered.
PEEK_AFTER = 0.005


@attrs.define
class _Idle:
    conn: H1Connection
    since: float
    expires: float


class H1Pool:
    """An HTTP service that sends each request to one endpoint over HTTP/1.1.

    Args:
        connect: opens a new connection to the endpoint (raises ``ConnectError``
            etc., which propagate to the caller).
        max_idle: the most idle connections kept (0 disables reuse).
        idle_timeout: seconds an idle connection is kept.
        background: the nursery for the sweeper and request-body writers; it
            must outlive the pool's use.
        settings: per-connection limits.
    """

    def __init__(
        self,
        connect: Connect,
        *,
        max_idle: int,
        idle_timeout: float,
        background: trio.Nursery,
        settings: H1ClientSettings | None = None,
    ) -> None:
        self._connect = connect
        self._max_idle = max_idle
        self._idle_timeout = idle_timeout
        self._background = background
        self._settings = settings or H1ClientSettings()
        self._idle: list[_Idle] = []
        self._wake = trio.Event()
        self._sweeper: trio.CancelScope | None = None
        self._closed = False
        self.connects = 0  # connections opened, for tests and debugging

    @property
    def idle_count(self) -> int:
        return len(self._idle)

    async def __call__(self, request: Request, /) -> Response:
        """Send ``request`` on an idle connection, or a new one.

        Raises:
            ConnectError: connecting failed.
            H1ConnectionClosed, H1ProtocolError, BodyError, OSError: see
                :meth:`H1Connection.send`.

        Cancellation: the connection in use is closed; the pool stays usable.
        """
        pooled = not (
            request.version == "HTTP/1.0"
            or request.authority is None
            or DefaultAuthority in request.extensions
            or request.method == "CONNECT"
            or DownstreamUpgrade in request.extensions
            or self._closed
        )
        conn = await self._checkout() if pooled else None
        if conn is not None:
            try:
                return await conn.send(request)
            except H1ConnectionClosed as exc:
                if not exc.retryable:
                    raise
                log.debug("h1 pool: reused connection was closed; retrying on a new one")
        conn = await self._new_connection(pooled)
        return await conn.send(request)

    async def aclose(self) -> None:
        """Stop the sweeper and close the idle connections (those in use close
        when their responses end)."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        idle, self._idle = self._idle, []
        for entry in idle:
            await entry.conn.aclose()

    async def _new_connection(self, pooled: bool) -> H1Connection:
        stream = await self._connect()
        self.connects += 1
        return H1Connection(
            stream,
            settings=self._settings,
            background=self._background,
            on_idle=self._checkin if pooled else None,
        )

    async def _checkout(self) -> H1Connection | None:
        while self._idle:
            entry = self._idle.pop()
            now = trio.current_time()
            conn = entry.conn
            if (
                entry.expires <= now
                or conn.is_closed
                or (now - entry.since >= PEEK_AFTER and conn.peer_closed())
            ):
                await entry.conn.aclose()
                continue
            return entry.conn
        return None

    async def _checkin(self, conn: H1Connection) -> None:
        if self._closed or len(self._idle) >= self._max_idle:
            await conn.aclose()
            return
        now = trio.current_time()
        self._idle.append(_Idle(conn, now, now + self._idle_timeout))
        if self._sweeper is None:
            self._sweeper = trio.CancelScope()
            self._background.start_soon(self._sweep, self._sweeper)
        self._wake.set()

    async def _sweep(self, scope: trio.CancelScope) -> None:
        with scope:
            while True:
                if not self._idle:
                    self._wake = trio.Event()
                    await self._wake.wait()
                    continue
                await trio.sleep_until(min(e.expires for e in self._idle))
                now = trio.current_time()
                keep: list[_Idle] = []
                drop: list[_Idle] = []
                for entry in self._idle:
                    gone = entry.expires <= now or entry.conn.peer_closed()
                    (drop if gone else keep).append(entry)
                self._idle = keep
                for entry in drop:
                    await entry.conn.aclose()
