"""Route each request to the service of its target.

``Router(new_service, target_of)`` is a ``Service[Req, Rsp]`` that computes a target
from each request and calls ``new_service(target)`` with it. Put an idle cache under
it (``stack(...).push_idle_cached(...)``) so that the per-target services are built
once and shared by every connection.
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
