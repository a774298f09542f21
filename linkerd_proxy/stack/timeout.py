"""Timeout: bound the time a service may take to answer.

A per-service wrapper in ``linkerd_proxy.stack`` (push it with
``Stack.push_on_service(Timeout.layer(t))`` or ``Stack.push_timeout(t)``). On
expiry the inner call is cancelled and :class:`~linkerd_proxy.errors.ResponseTimeout`
is raised, so callers classify it like any other proxy error instead of seeing a
bare ``trio.TooSlowError``.
"""

from __future__ import annotations

from typing import Generic, TypeVar

import attrs
import trio

from ..errors import ResponseTimeout
from .service import Service

__all__ = ["Timeout", "TimeoutLayer"]

Req = TypeVar("Req")
Rsp = TypeVar("Rsp")


@attrs.frozen
class Timeout(Generic[Req, Rsp]):
    """A service that fails with ``ResponseTimeout`` if ``inner`` takes too long.

    Attributes:
      inner: the wrapped service.
      seconds: the bound, or ``None`` for no bound (the call passes through).
    """

    inner: Service[Req, Rsp]
    seconds: float | None

    async def __call__(self, req: Req, /) -> Rsp:
        """Call ``inner`` with ``req`` under the time bound.

        Raises:
          ResponseTimeout: if ``seconds`` elapsed before ``inner`` returned.
          Exception: whatever ``inner`` raises, unchanged.

        Cancellation: on expiry the inner call is cancelled (and has finished its
        cleanup) before ``ResponseTimeout`` is raised. Cancellation from outside
        propagates as usual.
        """
        if self.seconds is None:
            return await self.inner(req)
        # move_on_after rather than fail_after: a TooSlowError raised by a
        # deadline *inside* the inner service must not be mistaken for ours.
        with trio.move_on_after(self.seconds) as scope:
            return await self.inner(req)
        assert scope.cancelled_caught
        raise ResponseTimeout(self.seconds)

    @staticmethod
    def layer(seconds: float | None) -> TimeoutLayer:
        """Return a service layer bounding each call by ``seconds`` (``None``: no bound)."""
        return TimeoutLayer(seconds)


@attrs.frozen
class TimeoutLayer:
    """The service layer made by :meth:`Timeout.layer`: ``Service -> Timeout``.

    A class rather than a closure so that its ``__call__`` stays generic: one
    layer value can wrap services of any request and response types.
    """

    seconds: float | None

    def __call__(self, inner: Service[Req, Rsp], /) -> Timeout[Req, Rsp]:
        """Wrap ``inner`` in a :class:`Timeout`."""
        return Timeout(inner, self.seconds)
