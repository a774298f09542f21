"""The Stack builder: compose layers around a NewService with types mypy follows.

The top of ``linkerd_proxy.stack``. ``stack(inner)`` starts from the innermost
factory (nearest the wire, e.g. ``connect``) and each ``push`` wraps what is
there so far, so the first push is nearest the wire and the last push sees the
target first::

    endpoint = (
        stack(connect)                       # NewService[Endpoint, Service[..]]
        .push(NewClientTls.layer(identity))  # wraps connect
        .push_on_service(Metrics.layer(m))   # wraps each built service
        .push_map_target(Endpoint.from_concrete)
        .push_idle_cached(5.0, background)   # NewService[Concrete, Cached[..]]
    )
    svc = endpoint(target)                   # a Stack is itself a NewService

A ``Stack`` is immutable: every ``push*`` returns a new one.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

import attrs
import trio

from .idle_cache import DEFAULT_CLOSE_TIMEOUT, Cached, NewIdleCached
from .map_target import MapTarget
from .service import NewService, Service
from .timeout import Timeout

__all__ = ["OnService", "Stack", "stack"]

T = TypeVar("T")
S = TypeVar("S")
U = TypeVar("U")
S2 = TypeVar("S2")
K = TypeVar("K", bound=Hashable)
Req = TypeVar("Req")
Rsp = TypeVar("Rsp")
T_contra = TypeVar("T_contra", contravariant=True)
S_co = TypeVar("S_co", covariant=True)


@attrs.frozen
class OnService(Generic[T, S, S2]):
    """A ``NewService[T, S2]`` applying a service-level layer to each built service.

    Attributes:
      inner: builds the services to wrap.
      layer: wraps one service, ``S -> S2`` (e.g. ``Timeout.layer(1.0)``).
    """

    inner: NewService[T, S]
    layer: Callable[[S], S2]

    def __call__(self, target: T, /) -> S2:
        """Return ``layer(inner(target))``."""
        return self.layer(self.inner(target))


@attrs.frozen
class Stack(Generic[T_contra, S_co]):
    """A NewService under construction; see :func:`stack`.

    Attributes:
      inner: the factory built so far.
    """

    inner: NewService[T_contra, S_co]

    def __call__(self, target: T_contra, /) -> S_co:
        """Build the service for ``target``: a Stack is a NewService."""
        return self.inner(target)

    def into_new_service(self) -> NewService[T_contra, S_co]:
        """Return the factory built so far, without the builder around it."""
        return self.inner

    def push(
        self, layer: Callable[[NewService[T_contra, S_co]], NewService[U, S2]]
    ) -> Stack[U, S2]:
        """Wrap the stack in ``layer`` (a ``Thing.layer(...)``).

        Layers pushed earlier are nearer the wire; this one sees targets first.
        """
        return Stack(layer(self.inner))

    def push_map_target(self, fn: Callable[[U], T_contra]) -> Stack[U, S_co]:
        """Map each outer target with ``fn`` before the stack sees it."""
        return Stack(MapTarget(self.inner, fn))

    def push_on_service(self, layer: Callable[[S_co], S2]) -> Stack[T_contra, S2]:
        """Wrap every service the stack builds with ``layer`` (``S -> S2``)."""
        return Stack(OnService(self.inner, layer))

    def push_timeout(
        self: Stack[T, Service[Req, Rsp]], seconds: float | None
    ) -> Stack[T, Timeout[Req, Rsp]]:
        """Bound every call to a built service by ``seconds`` (``None``: unbounded).

        Expiry raises :class:`~linkerd_proxy.errors.ResponseTimeout`.
        """
        return self.push_on_service(Timeout.layer(seconds))

    def push_idle_cached(
        self: Stack[K, Service[Req, Rsp]],
        idle: float,
        nursery: trio.Nursery,
        *,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
    ) -> Stack[K, Cached[Req, Rsp]]:
        """Cache the built services per target, evicting those idle for ``idle`` s.

        The cache's sweeper starts in ``nursery`` now; see
        :class:`~linkerd_proxy.stack.idle_cache.NewIdleCached`.
        """
        return self.push(NewIdleCached.layer(idle, nursery, close_timeout=close_timeout))


def stack(new_service: NewService[T, S]) -> Stack[T, S]:
    """Start a stack from its innermost factory (nearest the wire).

    Args:
      new_service: any ``target -> service`` callable, including a plain
        function or lambda.
    """
    return Stack(new_service)
