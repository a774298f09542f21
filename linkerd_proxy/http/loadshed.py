"""Load shedding and fail-fast queues in front of a service.

Request-level layers of the HTTP server stacks (``MaxInFlight``, the reference's
``ConcurrencyLimit`` + ``LoadShed`` with ``*_MAX_IN_FLIGHT``) and of the logical
and concrete stacks (``Queue``, the reference's buffer + ``FailFast`` with
``*_HTTP_QUEUE_CAPACITY`` and ``*_HTTP_FAILFAST_TIMEOUT``). Both fail at once
instead of letting requests pile up: :class:`~linkerd_proxy.errors.LoadShed`
(503) and :class:`~linkerd_proxy.errors.FailFast` (504).

Readiness: a service that can be unready (a balancer with no endpoints) offers
``is_ready()`` and ``async ready()`` (:class:`Readiness`); any other service is
always ready. The fail-fast state machine is the reference's
(``linkerd/stack/src/failfast.rs``):

- ready: requests go straight through;
- unready: requests wait in the queue (at most ``capacity`` of them, beyond
  that :class:`LoadShed`); the failfast timer starts when the first of them
  finds the service unready and is shared by all;
- the timer expires: every waiting request fails with :class:`FailFast`, and
  so does every new one, at once, until the service is ready again. The
  reference polls the service in a background task to notice; here each new
  request checks ``is_ready()`` (no task to own), so recovery is noticed by the
  first request after it.

Neither layer spawns tasks.
"""

from __future__ import annotations

import logging
import math
from typing import Generic, Protocol, TypeVar, runtime_checkable

import attrs
import trio

from ..errors import FailFast, LoadShed
from ..stack import Service

__all__ = ["MaxInFlight", "MaxInFlightLayer", "Queue", "QueueLayer", "Readiness"]

log = logging.getLogger("linkerd.proxy.http.loadshed")

Req = TypeVar("Req")
Rsp = TypeVar("Rsp")


@runtime_checkable
class Readiness(Protocol):
    """A service that may be unable to take requests for a while."""

    def is_ready(self) -> bool:
        """True when a request would be served now."""
        ...

    async def ready(self) -> None:
        """Wait until :meth:`is_ready` holds."""
        ...


class MaxInFlight(Generic[Req, Rsp]):
    """Refuse requests beyond ``limit`` concurrent calls, at once, with :class:`LoadShed`.

    A call counts from when it starts until ``inner`` returns (the response head),
    as the reference's concurrency limit does.

    Args:
      inner: the service to protect.
      limit: the most calls in flight (``*_MAX_IN_FLIGHT``, default 100000).
    """

    def __init__(self, inner: Service[Req, Rsp], limit: int) -> None:
        if limit < 0:
            raise ValueError("limit must be >= 0")
        self.inner = inner
        self.limit = limit
        self.in_flight = 0

    async def __call__(self, req: Req, /) -> Rsp:
        """Call ``inner`` unless ``limit`` calls are in flight.

        Raises:
          LoadShed: at the limit (no waiting).
        """
        if self.in_flight >= self.limit:
            raise LoadShed()
        self.in_flight += 1
        try:
            return await self.inner(req)
        finally:
            self.in_flight -= 1

    @staticmethod
    def layer(limit: int) -> MaxInFlightLayer:
        """A service layer; each service it wraps gets its own limit."""
        return MaxInFlightLayer(limit)


@attrs.frozen
class MaxInFlightLayer:
    """The layer made by :meth:`MaxInFlight.layer`."""

    limit: int

    def __call__(self, inner: Service[Req, Rsp], /) -> MaxInFlight[Req, Rsp]:
        return MaxInFlight(inner, self.limit)


class Queue(Generic[Req, Rsp]):
    """Hold requests while ``inner`` is unready; fail fast when it stays unready.

    Args:
      inner: the service; if it implements :class:`Readiness` its readiness is
        honoured, else it is always ready.
      capacity: the most requests waiting at once; more fail with :class:`LoadShed`.
      failfast_timeout: how long the service may stay unready before waiting
        requests fail with :class:`FailFast` and the queue enters failfast.
    """

    def __init__(self, inner: Service[Req, Rsp], capacity: int, failfast_timeout: float) -> None:
        self.inner = inner
        self.capacity = capacity
        self.failfast_timeout = failfast_timeout
        self._readiness = inner if isinstance(inner, Readiness) else None
        self.waiting = 0
        self._unready_deadline: float | None = None
        self.in_failfast = False

    async def __call__(self, req: Req, /) -> Rsp:
        """Call ``inner`` once it is ready.

        Raises:
          FailFast: the service stayed unready for the failfast timeout, or is in
            failfast now.
          LoadShed: ``capacity`` requests are already waiting.

        Cancellation: a cancelled waiter leaves the queue; the service is unaffected.
        """
        readiness = self._readiness
        if readiness is None or readiness.is_ready():
            if self.in_failfast:
                log.info("Service has recovered")
                self.in_failfast = False
            self._unready_deadline = None
            return await self.inner(req)
        if self.in_failfast:
            await trio.lowlevel.checkpoint()
            raise FailFast()
        if self.waiting >= self.capacity:
            await trio.lowlevel.checkpoint()
            raise LoadShed()
        if self._unready_deadline is None:
            log.debug("Service has become unavailable")
            timeout = self.failfast_timeout
            self._unready_deadline = (
                trio.current_time() + timeout if math.isfinite(timeout) else math.inf
            )
        self.waiting += 1
        ready = False
        try:
            with trio.move_on_at(self._unready_deadline):
                while not readiness.is_ready():
                    await readiness.ready()
                ready = True
        finally:
            self.waiting -= 1
            if not ready and self.waiting == 0 and not self.in_failfast:
                # Everyone left (cancelled) before the timer fired: the next
                # unready spell starts its own timer.
                self._unready_deadline = None
        if not readiness.is_ready():
            if not self.in_failfast:
                log.warning("Service entering failfast after %ss", self.failfast_timeout)
                self.in_failfast = True
            raise FailFast()
        self.in_failfast = False
        self._unready_deadline = None
        return await self.inner(req)

    @staticmethod
    def layer(capacity: int, failfast_timeout: float) -> QueueLayer:
        """A service layer; each service it wraps gets its own queue."""
        return QueueLayer(capacity, failfast_timeout)


@attrs.frozen
class QueueLayer:
    """The layer made by :meth:`Queue.layer`."""

    capacity: int
    failfast_timeout: float

    def __call__(self, inner: Service[Req, Rsp], /) -> Queue[Req, Rsp]:
        return Queue(inner, self.capacity, self.failfast_timeout)
