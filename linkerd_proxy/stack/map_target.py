"""MapTarget: adapt a NewService to a different target type.

A layer in ``linkerd_proxy.stack``. Stacks are built per level (accept,
logical, concrete, endpoint) and each level has its own target type; a
``MapTarget`` sits at the seam, turning the outer level's target into the one
the inner stack expects.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

import attrs

from .service import NewService

__all__ = ["MapTarget", "MapTargetLayer"]

T = TypeVar("T")
U = TypeVar("U")
S = TypeVar("S")


@attrs.frozen
class MapTarget(Generic[U, T, S]):
    """A ``NewService[U, S]`` that maps each target with ``fn`` then builds with ``inner``.

    Attributes:
      inner: the wrapped factory, taking targets of type ``T``.
      fn: a pure, synchronous function from the outer target ``U`` to ``T``.
    """

    inner: NewService[T, S]
    fn: Callable[[U], T]

    def __call__(self, target: U, /) -> S:
        """Return ``inner(fn(target))``."""
        return self.inner(self.fn(target))

    @staticmethod
    def layer(fn: Callable[[U], T]) -> MapTargetLayer[U, T]:
        """Return a layer that maps targets with ``fn`` before the inner stack sees them.

        Args:
          fn: the target mapping; it must not do I/O.
        """
        return MapTargetLayer(fn)


@attrs.frozen
class MapTargetLayer(Generic[U, T]):
    """The layer made by :meth:`MapTarget.layer`; generic in the service type."""

    fn: Callable[[U], T]

    def __call__(self, inner: NewService[T, S], /) -> MapTarget[U, T, S]:
        """Wrap ``inner`` in a :class:`MapTarget`."""
        return MapTarget(inner, self.fn)
