"""Balancers: a Service that sends each request (or connection) to one endpoint.

The concrete level of the outbound stacks: below a ``Queue`` (which gives the
fail-fast 504 when no endpoint is ready), above the per-endpoint stacks built by
the :class:`~linkerd_proxy.balance.pool.EndpointPool`. Both balancers implement
the ``Readiness`` protocol of :mod:`linkerd_proxy.http.loadshed`.

- :class:`Balancer` (HTTP) picks an endpoint per request with P2C over PeakEWMA.
  The latency sample runs from the call to the first frame of the response body
  (or the response head when the body is empty): the reference's
  ``PendingUntilFirstData``. The endpoint counts as in use until the body ends or
  is closed, so a removed endpoint is closed only after its last response.
- :class:`TcpBalancer` picks an endpoint per connection. Its sample is the whole
  call (the reference's ``CompleteOnResponse``): with a connection-level service
  that is the connection's lifetime, so the load is PeakEWMA of connection
  durations x (open connections + 1), as the reference balances opaque traffic.

A request whose connect fails never reached the endpoint: that endpoint backs off
and the request goes to another available one; when none is left the connect
error is raised. Neither balancer spawns tasks.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import trio

from linkerd_proxy.balance.pool import EndpointPool, Lease
from linkerd_proxy.http.body import Body
from linkerd_proxy.http.model import Request, Response
from linkerd_proxy.stack import Service

__all__ = ["Balancer", "TcpBalancer", "default_is_failure"]

log = logging.getLogger("linkerd.proxy.balance")

M = TypeVar("M")
Req = TypeVar("Req")
Rsp = TypeVar("Rsp")


def default_is_failure(rsp: Response) -> bool:
    """A response counts as a failure for failure accrual when it is a 5xx."""
    return rsp.status >= 500


async def _dispatch(
    pool: EndpointPool[M, Service[Req, Rsp]], req: Req
) -> tuple[Lease[M, Service[Req, Rsp]], Rsp]:
    """Call one endpoint; move on to another after a connect failure.

    Returns the lease (not yet reported or released) and the response.
    """
    last: BaseException | None = None
    attempts = 0
    while True:
        if pool.closed:
            raise trio.ClosedResourceError("the balancer is closed")
        lease = pool.pick()
        if lease is None:
            if last is not None:
                raise last
            await pool.ready()
            continue
        attempts += 1
        try:
            rsp = await lease.service(req)
        except Exception as exc:
            lease.complete_load()
            if pool.is_connect_failure(exc):
                pool.connect_failed(lease, exc)
                await pool.release(lease)
                # Each endpoint is tried at most about once per request.
                if attempts > len(pool):
                    raise
                last = exc
                continue
            pool.responded(lease, failure=True)
            await pool.release(lease)
            raise
        except BaseException:
            await pool.release(lease)
            raise
        return lease, rsp


class _Base(Generic[M, Req, Rsp]):
    def __init__(self, pool: EndpointPool[M, Service[Req, Rsp]]) -> None:
        self.pool = pool

    def is_ready(self) -> bool:
        """True when some endpoint can take a request now."""
        return self.pool.is_ready()

    async def ready(self) -> None:
        """Wait until an endpoint can take a request (no timeout: a Queue bounds it)."""
        await self.pool.ready()

    async def aclose(self) -> None:
        """Close every endpoint's service (on cache eviction)."""
        await self.pool.aclose()


class Balancer(_Base[M, Request, Response]):
    """``Service[Request, Response]`` balancing HTTP requests over a pool.

    Args:
        pool: the endpoint set; its services are ``Service[Request, Response]``.
        is_failure: classifies a response head for failure accrual.
    """

    def __init__(
        self,
        pool: EndpointPool[M, Service[Request, Response]],
        *,
        is_failure: Callable[[Response], bool] = default_is_failure,
    ) -> None:
        super().__init__(pool)
        self._is_failure = is_failure

    async def __call__(self, req: Request, /) -> Response:
        """Send ``req`` to the endpoint P2C picks; waits while none is available.

        Raises:
          ConnectError: every endpoint tried failed to connect.
          trio.ClosedResourceError: the balancer was closed.
          Whatever the endpoint raised otherwise.

        Cancellation: safe; the endpoint is released.
        """
        lease, rsp = await _dispatch(self.pool, req)
        self.pool.responded(lease, failure=self._is_failure(rsp))
        if rsp.body.is_end_stream:
            await self.pool.release(lease)
        else:
            rsp.body = _TrackedBody(rsp.body, lease, self.pool.release)
        return rsp


class _TrackedBody(Body):
    """A response body that ends its endpoint's load sample at the first frame
    and releases the endpoint when it ends or is closed."""

    def __init__(
        self,
        inner: Body,
        lease: Lease[M, Service[Request, Response]],
        release: Callable[[Lease[M, Service[Request, Response]]], Awaitable[None]],
    ) -> None:
        self._inner = inner
        self._lease: Lease[M, Service[Request, Response]] = lease
        self._release = release
        self.content_length = inner.content_length

    @property
    def is_end_stream(self) -> bool:
        return self._inner.is_end_stream

    @property
    def buffered(self) -> int:
        return self._inner.buffered

    async def read(self) -> bytes:
        try:
            chunk = await self._inner.read()
        except trio.Cancelled:
            raise
        except BaseException:
            await self._release(self._lease)
            raise
        self._lease.complete_load()
        if not chunk:
            self.trailers = self._inner.trailers
            await self._release(self._lease)
        return chunk

    async def aclose(self) -> None:
        await self._release(self._lease)
        await self._inner.aclose()


class TcpBalancer(_Base[M, Req, Rsp]):
    """``Service[Req, Rsp]`` balancing whole calls (connections) over a pool.

    Args:
        pool: the endpoint set; for opaque TCP its services are
            ``Service[trio.abc.Stream, None]``, called once per connection.
    """

    async def __call__(self, req: Req, /) -> Rsp:
        """Run ``req`` on the endpoint P2C picks; waits while none is available.

        Raises:
          ConnectError: every endpoint tried failed to connect.
          trio.ClosedResourceError: the balancer was closed.

        Cancellation: safe; the endpoint is released.
        """
        lease, rsp = await _dispatch(self.pool, req)
        self.pool.responded(lease, failure=False)
        await self.pool.release(lease)
        return rsp
