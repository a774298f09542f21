"""The three shapes every stack is made of: Service, NewService and Layer.

This module sits at the very bottom of ``linkerd_proxy.stack`` and knows nothing
of the proxy. It is the trio analogue of tower's ``Service``/``Layer`` and
linkerd's ``NewService``:

* A :class:`Service` is an async callable, ``await svc(req) -> rsp``. There is no
  ``poll_ready``: back-pressure is expressed by awaiting inside the call. A
  connection-level service is a ``Service[trio.abc.Stream, None]`` (called once
  per accepted connection, it returns when the connection is done); a
  request-level one is a ``Service[Request, Response]``.
* A :class:`NewService` is a *synchronous* factory ``new_service(target) -> S``.
  It does no I/O and spawns nothing; the service it returns works lazily.
* A :data:`Layer` is a plain callable from one ``NewService`` to another.

Plain ``async def`` functions satisfy :class:`Service`, and plain functions or
lambdas satisfy :class:`NewService`, so no wrapping is needed to use them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Generic, Protocol, TypeAlias, TypeVar

import attrs

__all__ = ["Layer", "NewService", "Service", "ServiceFn", "service_fn"]

Req = TypeVar("Req")
Rsp = TypeVar("Rsp")
Req_contra = TypeVar("Req_contra", contravariant=True)
Rsp_co = TypeVar("Rsp_co", covariant=True)
T_contra = TypeVar("T_contra", contravariant=True)
S_co = TypeVar("S_co", covariant=True)

T = TypeVar("T")
S = TypeVar("S")
U = TypeVar("U")
S2 = TypeVar("S2")


class Service(Protocol[Req_contra, Rsp_co]):
    """Anything that answers a request asynchronously.

    The parameter is positional-only, so any ``async def f(x: Req) -> Rsp``
    matches whatever its parameter is called.
    """

    async def __call__(self, req: Req_contra, /) -> Rsp_co:
        """Handle one request (or one connection) and return the response.

        Cancellation: implementations must be cancel-safe; a cancelled call
        must leave the service usable for the next call.
        """
        ...


class NewService(Protocol[T_contra, S_co]):
    """A synchronous factory that builds a service (or a stack) for a target.

    Calling it must do no I/O and spawn no task: it only assembles objects.
    """

    def __call__(self, target: T_contra, /) -> S_co:
        """Return the service for ``target``."""
        ...


Layer: TypeAlias = Callable[[NewService[T, S]], NewService[U, S2]]
"""``Layer[T, S, U, S2]`` turns a ``NewService[T, S]`` into a ``NewService[U, S2]``."""


@attrs.frozen
class ServiceFn(Generic[Req, Rsp]):
    """A :class:`Service` made from an async function (see :func:`service_fn`)."""

    fn: Callable[[Req], Awaitable[Rsp]]

    async def __call__(self, req: Req, /) -> Rsp:
        """Call the wrapped function with ``req`` and return its result."""
        return await self.fn(req)


def service_fn(fn: Callable[[Req], Awaitable[Rsp]]) -> ServiceFn[Req, Rsp]:
    """Make a :class:`Service` from an async function.

    A bare ``async def`` already satisfies :class:`Service`; this wrapper is for
    when an object with a readable ``repr`` and a fixed type is wanted (for
    instance to store in a typed attribute or to compare in tests).

    Args:
      fn: an async function taking one request.

    Returns:
      A service that awaits ``fn(req)`` on each call.
    """
    return ServiceFn(fn)
