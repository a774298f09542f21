"""Idle caching: build a per-target service once, reuse it, evict it when idle.

A layer in ``linkerd_proxy.stack`` (``Stack.push_idle_cached``), used above
discovery and routing so that every connection to the same target shares one
stack (outbound caches idle out after 5s, inbound after 90s by default).

The rules:

* Looking a target up builds its value with the inner factory only if the target
  is not cached; otherwise the cached value is reused. A lookup counts as a use.
* An entry is *held* while any call through a :class:`Cached` handle is in
  progress (a connection-level call lasts the whole connection) and while any
  :meth:`IdleCache.hold` block is open. Held entries are never evicted.
* When the last hold ends, the entry's idle clock starts. If it is not used
  again within ``idle`` seconds, the sweeper evicts it; a later lookup builds a
  fresh value. An evicted value's ``aclose()`` coroutine method, if it has one,
  is awaited by the sweeper under a short bound; its errors are logged.
* There is exactly one sweeper task per cache: :meth:`IdleCache.serve`. It
  sleeps until the earliest moment something can expire, never polls, and exits
  on cancellation. ``NewIdleCached.layer(idle, nursery)`` starts it in
  ``nursery`` for you; without a running sweeper nothing is ever evicted.

The bookkeeping is O(log n) per release: each unheld entry has at most one item
in a deadline heap. The item may be early (the entry was used since), in which
case the sweeper re-files it at its real deadline instead of evicting.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
from collections.abc import Hashable, Iterator, Mapping
from types import TracebackType
from typing import Any, Generic, TypeVar

import attrs
import trio

from .service import NewService, Service

__all__ = ["Cached", "Hold", "IdleCache", "IdleCacheLayer", "NewIdleCached"]

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
Req = TypeVar("Req")
Rsp = TypeVar("Rsp")

#: How long the sweeper waits for an evicted value's ``aclose()``.
DEFAULT_CLOSE_TIMEOUT = 1.0


@attrs.define(eq=False)
class _Entry(Generic[K, V]):
    key: K
    value: V
    last_used: float
    holds: int = 0
    # True while the entry has an item in the deadline heap.
    scheduled: bool = False
    evicted: bool = False


class _View(Mapping[K, V]):
    """A live, read-only ``key -> value`` view of a cache's entries."""

    __slots__ = ("_entries",)

    def __init__(self, entries: dict[K, _Entry[K, V]]) -> None:
        self._entries = entries

    def __getitem__(self, key: K) -> V:
        return self._entries[key].value

    def __iter__(self) -> Iterator[K]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


class IdleCache(Generic[K, V]):
    """A map from targets to lazily built values, evicting values left idle.

    Args:
      new_value: builds the value for a key; synchronous, no I/O (a NewService).
      idle: seconds an unheld entry may go unused before it is evicted.
      close_timeout: bound on awaiting an evicted value's ``aclose()``.

    Raises:
      ValueError: if ``idle`` or ``close_timeout`` is negative.

    Lookups and holds read ``trio.current_time()``, so they must happen inside
    ``trio.run``.
    """

    def __init__(
        self,
        new_value: NewService[K, V],
        idle: float,
        *,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
    ) -> None:
        if idle < 0 or close_timeout < 0:
            raise ValueError(f"negative idle ({idle}) or close_timeout ({close_timeout})")
        self._new_value = new_value
        self._idle = idle
        self._close_timeout = close_timeout
        self._entries: dict[K, _Entry[K, V]] = {}
        self._heap: list[tuple[float, int, _Entry[K, V]]] = []
        self._seq = itertools.count()
        self._wakeup = trio.Event()
        self._serving = False

    @property
    def idle(self) -> float:
        """Seconds an unheld entry may stay unused before eviction."""
        return self._idle

    @property
    def entries(self) -> Mapping[K, V]:
        """A live read-only view of the cached values, for tests and metrics."""
        return _View(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def is_held(self, key: K) -> bool:
        """Whether ``key`` is cached and currently held (so cannot be evicted)."""
        entry = self._entries.get(key)
        return entry is not None and entry.holds > 0

    def get(self, key: K) -> V:
        """Return the value for ``key``, building and caching it if absent.

        The lookup counts as a use: an unheld entry's idle clock restarts.
        """
        return self._lookup(key).value

    def hold(self, key: K) -> Hold[K, V]:
        """Return a context manager that holds ``key``'s entry while it is open.

        ``with cache.hold(key) as value:`` looks the key up on entry (building the
        value if needed) and keeps it from eviction until the block exits. Holds
        nest and count: the entry is unheld when the last one exits.
        """
        return Hold(self, key)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the sweeper: evict idle entries and close them, until cancelled.

        Use with ``await nursery.start(cache.serve)`` or ``nursery.start_soon``.
        Only one sweeper may run per cache.

        Raises:
          RuntimeError: if a sweeper for this cache is already running.

        Cancellation: this never returns on its own; cancel it to stop. An
        ``aclose()`` in progress at that moment is cancelled too, and values
        evicted in the same sweep but not yet closed are dropped unclosed.
        """
        if self._serving:
            raise RuntimeError("this cache's sweeper is already running")
        self._serving = True
        try:
            task_status.started()
            while True:
                deadline = self._heap[0][0] if self._heap else math.inf
                with trio.move_on_at(deadline):
                    await self._wakeup.wait()
                self._wakeup = trio.Event()
                for entry in self._expire(trio.current_time()):
                    await self._close(entry)
        finally:
            self._serving = False

    # === internals shared with Hold and Cached ===

    def _lookup(self, key: K) -> _Entry[K, V]:
        now = trio.current_time()
        entry = self._entries.get(key)
        if entry is None:
            entry = _Entry(key, self._new_value(key), last_used=now)
            self._entries[key] = entry
            log.debug("caching new value for %r", key)
            self._schedule(entry, now + self._idle)
        elif entry.holds == 0:
            entry.last_used = now
        return entry

    def _acquire(self, entry: _Entry[K, V]) -> None:
        entry.holds += 1

    def _release(self, entry: _Entry[K, V]) -> None:
        entry.holds -= 1
        if entry.holds == 0:
            entry.last_used = now = trio.current_time()
            if not entry.scheduled:
                self._schedule(entry, now + self._idle)

    def _schedule(self, entry: _Entry[K, V], deadline: float) -> None:
        entry.scheduled = True
        heapq.heappush(self._heap, (deadline, next(self._seq), entry))
        if self._heap[0][2] is entry:
            # The sweeper may be sleeping towards a later deadline (or forever).
            self._wakeup.set()

    def _expire(self, now: float) -> list[_Entry[K, V]]:
        """Pop due heap items; evict the entries that really are idle."""
        evicted: list[_Entry[K, V]] = []
        while self._heap and self._heap[0][0] <= now:
            _, _, entry = heapq.heappop(self._heap)
            entry.scheduled = False
            if entry.holds > 0:
                # Re-filed by _release when the last hold ends.
                continue
            deadline = entry.last_used + self._idle
            if deadline > now:
                self._schedule(entry, deadline)
                continue
            entry.evicted = True
            del self._entries[entry.key]
            log.debug("evicting idle value for %r", entry.key)
            evicted.append(entry)
        return evicted

    async def _close(self, entry: _Entry[K, V]) -> None:
        aclose = getattr(entry.value, "aclose", None)
        if not callable(aclose):
            return
        with trio.move_on_after(self._close_timeout) as scope:
            try:
                await aclose()
            except Exception:
                log.exception("closing the evicted value for %r failed", entry.key)
        if scope.cancelled_caught:
            log.warning(
                "closing the evicted value for %r took over %ss", entry.key, self._close_timeout
            )


class Hold(Generic[K, V]):
    """A synchronous context manager holding one cache entry; see :meth:`IdleCache.hold`.

    Entering returns the cached value. A ``Hold`` may be entered only once at a
    time; make another for a nested hold.
    """

    __slots__ = ("_cache", "_entry", "_key")

    def __init__(self, cache: IdleCache[K, V], key: K) -> None:
        self._cache = cache
        self._key = key
        self._entry: _Entry[K, V] | None = None

    def __enter__(self) -> V:
        if self._entry is not None:
            raise RuntimeError("this Hold is already entered")
        entry = self._entry = self._cache._lookup(self._key)
        self._cache._acquire(entry)
        return entry.value

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._entry is not None
        entry, self._entry = self._entry, None
        self._cache._release(entry)


class Cached(Generic[Req, Rsp]):
    """The handle service :class:`NewIdleCached` returns for one target.

    Each call holds the target's entry for the duration of the call and
    dispatches to the cached inner service. A handle does not hold the entry
    between calls; if the entry was evicted meanwhile, the next call looks the
    target up again (building a fresh inner service), so a handle never calls a
    closed service.
    """

    __slots__ = ("_cache", "_entry")

    def __init__(self, cache: IdleCache[Any, Service[Req, Rsp]], entry: _Entry[Any, Any]) -> None:
        self._cache = cache
        self._entry: _Entry[Any, Service[Req, Rsp]] = entry

    @property
    def target(self) -> Hashable:
        """The target this handle dispatches for."""
        key: Hashable = self._entry.key
        return key

    async def __call__(self, req: Req, /) -> Rsp:
        """Call the target's cached service with ``req``, holding its entry meanwhile.

        Raises:
          Exception: whatever the inner service (or, on a rebuild, the inner
            factory) raises.

        Cancellation: the hold is released whichever way the call ends.
        """
        entry = self._entry
        if entry.evicted:
            entry = self._entry = self._cache._lookup(entry.key)
        self._cache._acquire(entry)
        try:
            return await entry.value(req)
        finally:
            self._cache._release(entry)


class NewIdleCached(IdleCache[K, Service[Req, Rsp]]):
    """A NewService caching the services built by ``inner``, one per target.

    ``new_cached(target)`` returns a :class:`Cached` handle; the inner factory
    runs only when the target is not cached. Everything else (``hold``,
    ``serve``, ``len``, ``entries``) is :class:`IdleCache`'s.
    """

    def __call__(self, target: K, /) -> Cached[Req, Rsp]:
        """Return a handle for ``target``, building its service if it is not cached."""
        return Cached(self, self._lookup(target))

    @staticmethod
    def layer(
        idle: float,
        nursery: trio.Nursery,
        *,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
    ) -> IdleCacheLayer:
        """Return a layer caching per-target services with idle eviction.

        Applying the layer creates the cache and starts its sweeper in
        ``nursery`` (the runtime's background nursery), so the sweeper lives
        exactly as long as that nursery.

        Args:
          idle: seconds an unused, unheld service stays cached.
          nursery: where the sweeper task runs.
          close_timeout: bound on an evicted service's ``aclose()``.
        """
        return IdleCacheLayer(idle, nursery, close_timeout)


@attrs.frozen
class IdleCacheLayer:
    """The layer made by :meth:`NewIdleCached.layer`; generic in target and service.

    Each application makes a new cache and starts its sweeper in ``nursery``.
    """

    idle: float
    nursery: trio.Nursery = attrs.field(eq=False)
    close_timeout: float = DEFAULT_CLOSE_TIMEOUT

    def __call__(self, inner: NewService[K, Service[Req, Rsp]], /) -> NewIdleCached[K, Req, Rsp]:
        """Build the cache around ``inner`` and start its sweeper."""
        cache: NewIdleCached[K, Req, Rsp] = NewIdleCached(
            inner, self.idle, close_timeout=self.close_timeout
        )
        self.nursery.start_soon(cache.serve)
        return cache
