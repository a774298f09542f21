"""The endpoint set behind a balancer: membership, lazy services, failure gates.

Sits between a resolution (a stream of :mod:`linkerd_proxy.discovery.updates`) and
:mod:`linkerd_proxy.balance.balancer`, which asks it for an endpoint per request
(or per connection). What it promises:

- **Membership** follows the updates: ``Reset`` replaces the set, ``Add`` adds or
  re-targets endpoints (same metadata: nothing changes; new metadata: a fresh
  service and load estimate), ``Remove`` removes, ``DoesNotExist`` empties it.
- **Lazy services**: an endpoint's service is built with the ``NewService`` on
  the first request that picks it, not on ``Add``; an endpoint no request needs
  is never dialled.
- **Removal is final**: a removed endpoint leaves the pick set at once, is never
  picked again, and its service is closed (``aclose()`` if it has one) as soon as
  no call or response body is using it. Nothing here runs in the background, so
  nothing dials a removed or failed endpoint (the lesson of linkerd2-proxy
  d10ed8f, where a reconnect loop kept dialling stale IPs).
- **Connect failures**: an endpoint whose connect failed is out of the pick set
  for a backoff (``ExponentialBackoff``); after it, the next request that picks
  it is a single *probe* (no other request goes there meanwhile); a probe that
  connects reopens it, one that fails backs off longer.
- **Failure accrual** (optional, HARDENING item 20, the reference's
  ``consecutive`` breaker): ``max_failures`` consecutive failed responses shut the
  endpoint's gate for a backoff, then one probe; a good response reopens it.
- **Readiness** (:meth:`EndpointPool.is_ready`, :meth:`EndpointPool.ready`): ready
  when some endpoint can take a request now. ``ready()`` wakes on any change
  (an update, a probe's outcome) or when the earliest backoff ends.

Time is ``trio.current_time()`` (a ``MockClock`` drives it in tests).
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import AsyncIterable, Callable
from typing import Generic, Literal, TypeVar

import attrs
import trio

from linkerd_proxy.addrs import SocketAddr
from linkerd_proxy.balance.ewma import EwmaConfig, PeakEwma, Pending
from linkerd_proxy.balance.p2c import p2c
from linkerd_proxy.discovery.updates import Add, DoesNotExist, Remove, Reset, Update
from linkerd_proxy.errors import ConnectError
from linkerd_proxy.stack import NewService
from linkerd_proxy.transport.backoff import BackoffSeries, ExponentialBackoff

__all__ = [
    "DEFAULT_CLOSE_TIMEOUT",
    "Endpoint",
    "EndpointPool",
    "FailureAccrual",
    "Lease",
    "is_connect_failure",
    "serve_updates",
]

log = logging.getLogger("linkerd.proxy.balance")

M = TypeVar("M")
S = TypeVar("S")

#: How long closing a removed endpoint's service may take.
DEFAULT_CLOSE_TIMEOUT = 1.0


@attrs.frozen
class Endpoint(Generic[M]):
    """The target an endpoint's service is built for: its address and metadata."""

    addr: SocketAddr
    meta: M


@attrs.frozen
class FailureAccrual:
    """The consecutive-failures breaker (the reference's defaults: 7, 1 s..60 s, jitter 0.5)."""

    max_failures: int = 7
    backoff: ExponentialBackoff = attrs.field(factory=lambda: ExponentialBackoff(1.0, 60.0, 0.5))


def is_connect_failure(exc: BaseException) -> bool:
    """True when ``exc`` is (or was caused by) a failure to connect.

    Such a request never reached the endpoint, so it may go to another one.
    """
    seen = 0
    cur: BaseException | None = exc
    while cur is not None and seen < 8:
        if isinstance(cur, ConnectError):
            return True
        cur = cur.__cause__
        seen += 1
    return False


Blocked = Literal["connect", "accrual"]


@attrs.define(eq=False)
class _Slot(Generic[M, S]):
    target: Endpoint[M]
    ewma: PeakEwma
    connect_backoff: BackoffSeries
    accrual_backoff: BackoffSeries | None
    service: S | None = None
    in_use: int = 0
    removed: bool = False
    closed: bool = False
    blocked_by: Blocked | None = None
    blocked_until: float = -math.inf
    probing: bool = False
    failures: int = 0

    def available(self, now: float) -> bool:
        return not self.removed and not self.probing and now >= self.blocked_until


@attrs.define(eq=False)
class Lease(Generic[M, S]):
    """One request's (or connection's) use of a picked endpoint.

    The balancer calls ``service``, then reports the outcome to the pool
    (:meth:`EndpointPool.connect_failed` or :meth:`EndpointPool.responded`),
    completes the load sample (:meth:`complete_load`) and finally releases it
    (:meth:`EndpointPool.release`).
    """

    slot: _Slot[M, S]
    service: S
    pending: Pending
    probe: bool
    reported: bool = False
    released: bool = False

    @property
    def target(self) -> Endpoint[M]:
        return self.slot.target

    def complete_load(self) -> None:
        """End this request's PeakEWMA sample now (idempotent)."""
        self.pending.complete(trio.current_time())


class EndpointPool(Generic[M, S]):
    """The endpoint set of one balancer.

    Args:
        new_endpoint: builds an endpoint's service (on first pick; no I/O).
        ewma: PeakEWMA parameters for every endpoint.
        connect_backoff: how long an endpoint that failed to connect sits out.
        accrual: the failure-accrual breaker, or ``None`` for none.
        rng: the P2C randomness (``random.Random()`` by default).
        close_timeout: the bound on closing a removed endpoint's service.
        connect_failure: tells connect failures from other errors.
    """

    def __init__(
        self,
        new_endpoint: NewService[Endpoint[M], S],
        *,
        ewma: EwmaConfig | None = None,
        connect_backoff: ExponentialBackoff | None = None,
        accrual: FailureAccrual | None = None,
        rng: random.Random | None = None,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
        connect_failure: Callable[[BaseException], bool] = is_connect_failure,
    ) -> None:
        self._new_endpoint = new_endpoint
        self._ewma = ewma if ewma is not None else EwmaConfig()
        self._connect_backoff = (
            connect_backoff if connect_backoff is not None else ExponentialBackoff(0.1, 0.5, 0.1)
        )
        self._accrual = accrual
        self._rng = rng if rng is not None else random.Random()
        self._close_timeout = close_timeout
        self.is_connect_failure = connect_failure
        self._slots: dict[SocketAddr, _Slot[M, S]] = {}
        self._changed = trio.Event()
        self.closed = False
        #: Updates applied, by kind (for the ``p2c_updates_total`` metric).
        self.updates = {"reset": 0, "add": 0, "remove": 0}

    # --- membership --------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._slots)

    @property
    def endpoints(self) -> dict[SocketAddr, M]:
        """The current set: address to metadata."""
        return {a: s.target.meta for a, s in self._slots.items()}

    def counts(self) -> tuple[int, int]:
        """``(ready, pending)``: endpoints that can take a request now, and the rest."""
        now = trio.current_time()
        ready = sum(1 for s in self._slots.values() if s.available(now))
        return ready, len(self._slots) - ready

    async def update(self, update: Update[M]) -> None:
        """Apply one resolution update; close the services of removed endpoints.

        Cancellation: the set is changed before anything is awaited; closes are
        shielded and bounded by ``close_timeout``.
        """
        if self.closed:
            raise trio.ClosedResourceError("the endpoint pool is closed")
        gone: list[_Slot[M, S]] = []
        if isinstance(update, Reset):
            self.updates["reset"] += 1
            for addr in [a for a in self._slots if a not in update.endpoints]:
                gone.append(self._slots.pop(addr))
            for addr, meta in update.endpoints.items():
                gone.extend(self._put(addr, meta))
        elif isinstance(update, Add):
            self.updates["add"] += 1
            for addr, meta in update.endpoints.items():
                gone.extend(self._put(addr, meta))
        elif isinstance(update, Remove):
            self.updates["remove"] += 1
            for addr in update.addrs:
                slot = self._slots.pop(addr, None)
                if slot is not None:
                    gone.append(slot)
        elif isinstance(update, DoesNotExist):
            self.updates["reset"] += 1
            gone.extend(self._slots.values())
            self._slots.clear()
        for slot in gone:
            log.info("Removing endpoint addr=%s", slot.target.addr)
            slot.removed = True
        self._notify()
        for slot in gone:
            if slot.in_use == 0:
                await self._close(slot)

    def _put(self, addr: SocketAddr, meta: M) -> list[_Slot[M, S]]:
        old = self._slots.get(addr)
        if old is not None and old.target.meta == meta:
            return []
        log.info("%s endpoint addr=%s", "Updating" if old else "Adding", addr)
        self._slots[addr] = _Slot(
            target=Endpoint(addr, meta),
            ewma=PeakEwma(self._ewma, trio.current_time()),
            connect_backoff=self._connect_backoff.series(self._rng.random),
            accrual_backoff=(
                self._accrual.backoff.series(self._rng.random) if self._accrual else None
            ),
        )
        return [old] if old is not None else []

    # --- readiness ---------------------------------------------------------------------

    def is_ready(self) -> bool:
        """True when some endpoint can take a request now."""
        now = trio.current_time()
        return any(s.available(now) for s in self._slots.values())

    async def ready(self) -> None:
        """Wait until :meth:`is_ready` holds.

        Wakes on every change to the set and when the earliest backoff ends; it
        dials nothing itself.

        Cancellation: safe.
        """
        while not self.is_ready():
            changed = self._changed
            wake = min(
                (s.blocked_until for s in self._slots.values() if not s.probing),
                default=math.inf,
            )
            with trio.move_on_at(wake):
                await changed.wait()
        await trio.lowlevel.checkpoint_if_cancelled()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # --- picking and outcomes ----------------------------------------------------------

    def pick(self) -> Lease[M, S] | None:
        """Pick an endpoint with P2C over PeakEWMA, or ``None`` if none is available.

        Builds the endpoint's service if this is its first pick and counts the
        request as pending on it. Synchronous, so no update can slip in between
        the pick and the call.
        """
        if self.closed:
            return None
        now = trio.current_time()
        candidates = [s for s in self._slots.values() if s.available(now)]
        slot = p2c(candidates, lambda s: s.ewma.load(now), self._rng)
        if slot is None:
            return None
        if slot.service is None:
            slot.service = self._new_endpoint(slot.target)
        probe = slot.blocked_by is not None
        if probe:
            log.debug("Probing endpoint addr=%s", slot.target.addr)
            slot.probing = True
        slot.in_use += 1
        return Lease(slot, slot.service, slot.ewma.start(now), probe)

    def connect_failed(self, lease: Lease[M, S], error: BaseException) -> None:
        """The endpoint could not be connected: back off before it is picked again."""
        slot = lease.slot
        lease.reported = True
        slot.probing = False
        delay = next(slot.connect_backoff)
        slot.blocked_by = "connect"
        slot.blocked_until = trio.current_time() + delay
        log.info("Endpoint addr=%s failed (%s); backing off %.3fs", slot.target.addr, error, delay)
        self._notify()

    def responded(self, lease: Lease[M, S], *, failure: bool) -> None:
        """The endpoint answered (``failure``: the answer counts as a failure)."""
        slot = lease.slot
        lease.reported = True
        slot.probing = False
        if slot.blocked_by == "connect":
            slot.blocked_by = None
            slot.blocked_until = -math.inf
        slot.connect_backoff.reset()
        accrual = self._accrual
        if accrual is not None and slot.accrual_backoff is not None:
            if failure:
                slot.failures += 1
                if slot.blocked_by == "accrual" or slot.failures >= accrual.max_failures:
                    delay = next(slot.accrual_backoff)
                    slot.blocked_by = "accrual"
                    slot.blocked_until = trio.current_time() + delay
                    log.info("Endpoint addr=%s gate shut for %.3fs", slot.target.addr, delay)
            else:
                slot.failures = 0
                if slot.blocked_by == "accrual":
                    slot.blocked_by = None
                    slot.blocked_until = -math.inf
                    slot.accrual_backoff.reset()
        if lease.probe:
            self._notify()

    async def release(self, lease: Lease[M, S]) -> None:
        """The request is done with the endpoint; close it if it was removed meanwhile.

        Idempotent. Cancellation: the close is shielded and bounded.
        """
        if lease.released:
            return
        lease.released = True
        lease.complete_load()
        slot = lease.slot
        slot.in_use -= 1
        if lease.probe and not lease.reported:
            # The probe was cancelled before any outcome: let another one go.
            slot.probing = False
            self._notify()
        if slot.removed and slot.in_use == 0:
            await self._close(slot)

    # --- closing -----------------------------------------------------------------------

    async def _close(self, slot: _Slot[M, S]) -> None:
        if slot.closed:
            return
        slot.closed = True
        svc, slot.service = slot.service, None
        aclose = getattr(svc, "aclose", None)
        if aclose is None:
            return
        with trio.CancelScope(deadline=trio.current_time() + self._close_timeout, shield=True):
            try:
                await aclose()
            except Exception:
                log.exception("Closing endpoint addr=%s failed", slot.target.addr)

    async def aclose(self) -> None:
        """Remove every endpoint and close their services (idempotent)."""
        if self.closed:
            return
        self.closed = True
        gone = list(self._slots.values())
        self._slots.clear()
        for slot in gone:
            slot.removed = True
        self._notify()
        for slot in gone:
            if slot.in_use == 0:
                await self._close(slot)


async def serve_updates(
    pool: EndpointPool[M, S],
    updates: AsyncIterable[Update[M]],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Apply a resolution's updates to ``pool`` until the stream ends.

    Run it in the nursery that owns the balancer, next to the resolution's watch.

    Cancellation: stops between updates (an update in progress finishes its
    bookkeeping first).
    """
    task_status.started()
    async for update in updates:
        await pool.update(update)
