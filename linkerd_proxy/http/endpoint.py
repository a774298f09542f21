"""One endpoint's HTTP client: an HTTP/1 pool and a lazily opened HTTP/2 connection.

The innermost HTTP service of both stacks. A request goes out in the version it
has when it gets here (after orig-proto rewrote it, if it did): HTTP/2 requests
share one multiplexed connection, HTTP/1 requests use the keep-alive pool.

Connections are opened only when a request needs one (never by a background
loop: the lesson of linkerd2-proxy d10ed8f), and an HTTP/2 connection that the
server closed or sent GOAWAY on is replaced by the next request that needs it.

Reconnect: opening the HTTP/2 connection is the endpoint becoming *ready* (the
reference's ``Reconnect`` around the h2 handshake), so a refused connect is tried
again with ``connect_backoff`` for the requests waiting, for at most
``failfast_timeout``; then they fail with :class:`~linkerd_proxy.errors.FailFast`
(504). HTTP/1 connects are not retried (the reference's hyper client fails the
request: 502).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio

from linkerd_proxy.addrs import SocketAddr
from linkerd_proxy.errors import ConnectError, FailFast, H2Refused
from linkerd_proxy.http.h1.pool import H1Pool
from linkerd_proxy.http.h2.client import H2Connection
from linkerd_proxy.http.h2.settings import H2ClientSettings
from linkerd_proxy.http.model import Request, Response
from linkerd_proxy.transport.backoff import ExponentialBackoff

log = logging.getLogger(__name__)

#: How often a request the server refused unprocessed is sent again.
MAX_REFUSED_RETRIES = 2

#: Opens a (metered) connection to the endpoint.
ConnectStream = Callable[[], Awaitable[trio.abc.Stream]]


class HttpEndpoint:
    """``Service[Request, Response]`` for one endpoint address.

    Args:
        addr: the endpoint (for logs).
        connect: opens a new connection to it.
        max_idle: HTTP/1 connections kept idle.
        idle_timeout: how long an idle HTTP/1 connection is kept.
        h2: HTTP/2 client settings.
        background: where connection tasks run; must outlive the endpoint.
        connect_backoff: pauses between HTTP/2 connect attempts (``None``: one
            attempt, its error raised).
        failfast_timeout: how long HTTP/2 connects are retried before
            :class:`~linkerd_proxy.errors.FailFast`.
    """

    def __init__(
        self,
        addr: SocketAddr,
        connect: ConnectStream,
        *,
        max_idle: int,
        idle_timeout: float,
        h2: H2ClientSettings,
        background: trio.Nursery,
        connect_backoff: ExponentialBackoff | None = None,
        failfast_timeout: float = 0.0,
        connect_h2: ConnectStream | None = None,
    ) -> None:
        self.addr = addr
        self._connect_h2 = connect_h2 or connect
        self._connect_backoff = connect_backoff
        self._failfast_timeout = failfast_timeout
        self._connect = connect
        self._h2_settings = h2
        self._background = background
        self._h1 = H1Pool(
            connect, max_idle=max_idle, idle_timeout=idle_timeout, background=background
        )
        self._h2: H2Connection | None = None
        self._h2_lock = trio.Lock()
        self._closed = False

    async def __call__(self, req: Request, /) -> Response:
        if req.version != "HTTP/2":
            return await self._h1(req)
        attempts = 0
        while True:
            conn = await self._h2_connection()
            try:
                return await conn(req)
            except H2Refused:
                # The server did not process the stream (GOAWAY above it, or
                # REFUSED_STREAM): safe to send again when the body can be
                # replayed, i.e. there is none. A GOAWAY'd connection is
                # replaced by the next lookup.
                attempts += 1
                if attempts > MAX_REFUSED_RETRIES or not req.body.is_end_stream:
                    raise
                log.debug("h2 stream to %s refused; retrying", self.addr)

    async def _h2_connection(self) -> H2Connection:
        conn = self._h2
        if conn is not None and conn.is_usable:
            # The hot path: no lock (taking a trio.Lock yields while holding it,
            # which parks every other request to this endpoint behind it).
            await trio.lowlevel.checkpoint_if_cancelled()
            return conn
        async with self._h2_lock:
            conn = self._h2
            if conn is None or not conn.is_usable:
                if conn is not None:
                    conn.drain()  # let its streams finish; new requests go elsewhere
                stream = await self._reconnect()
                conn = await H2Connection.open(stream, self._h2_settings, self._background)
                self._h2 = conn
                log.debug("h2 connection to %s opened", self.addr)
            return conn

    async def _reconnect(self) -> trio.abc.Stream:
        if self._connect_backoff is None:
            return await self._connect_h2()
        deadline = trio.current_time() + self._failfast_timeout
        series = self._connect_backoff.series()
        for _ in range(10_000):
            try:
                return await self._connect_h2()
            except ConnectError as exc:
                delay = next(series)
                if trio.current_time() + delay > deadline:
                    raise FailFast(f"endpoint {self.addr} unreachable: {exc}") from exc
                log.debug("connect to %s failed (%s); retrying in %.3fs", self.addr, exc, delay)
                await trio.sleep(delay)
        raise AssertionError("unreachable: the deadline ends the loop")

    async def aclose(self) -> None:
        """Close the pool and the HTTP/2 connection (on cache eviction)."""
        if self._closed:
            return
        self._closed = True
        await self._h1.aclose()
        if self._h2 is not None:
            await self._h2.aclose()
