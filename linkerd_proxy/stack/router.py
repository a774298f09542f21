"""Route each request to the service of its target.

``Router(new_service, target_of)`` is a ``Service[Req, Rsp]`` that computes a target
from each request and calls ``new_service(target)`` with it. Put an idle cache under
it (``stack(...).push_idle_cached(...)``) so that the per-target services are built
once and shared by every connection.

``MemoRouter`` is the same with a one-entry memo of the last target and its
service, for a ``new_service`` whose services may be reused across requests (an
idle cache's handles are: they look their target up again once evicted). When
consecutive requests share a target (the common case on a proxy's hot path) it
saves hashing the target, the cache lookup and a handle per request; a miss costs
one equality test.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

import attrs

from .service import NewService, Service

Req = TypeVar("Req")
Rsp = TypeVar("Rsp")
T = TypeVar("T")


@attrs.frozen
class Router(Generic[Req, Rsp, T]):
    """Dispatch each request to ``new_service(target_of(request))``.

    Attributes:
      new_service: builds (or looks up) the service of a target.
      target_of: the target of a request; may raise to refuse the request.
    """

    new_service: NewService[T, Service[Req, Rsp]]
    target_of: Callable[[Req], T]

    async def __call__(self, req: Req, /) -> Rsp:
        return await self.new_service(self.target_of(req))(req)


class MemoRouter(Generic[Req, Rsp, T]):
    """:class:`Router` remembering the last target and the service it got for it.

    Args:
      new_service: builds (or looks up) the service of a target; its services must
        stay usable for later requests (as :class:`~.idle_cache.Cached` handles do).
      target_of: the target of a request; may raise to refuse the request.
    """

    __slots__ = ("_last_service", "_last_target", "new_service", "target_of")

    def __init__(
        self, new_service: NewService[T, Service[Req, Rsp]], target_of: Callable[[Req], T]
    ) -> None:
        self.new_service = new_service
        self.target_of = target_of
        self._last_target: T | None = None
        self._last_service: Service[Req, Rsp] | None = None

    async def __call__(self, req: Req, /) -> Rsp:
        target = self.target_of(req)
        service = self._last_service
        if service is None or target != self._last_target:
            service = self.new_service(target)
            self._last_target, self._last_service = target, service
        return await service(req)
