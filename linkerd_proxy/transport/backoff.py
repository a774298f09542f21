"""Jittered exponential backoff (pure: no I/O, no trio).

Used by ``connect_with_backoff`` and by anything that re-dials a control-plane
stream or probes a failed endpoint. The formula is linkerd2-proxy's
(``linkerd/exp-backoff``), restated:

- the base delay of attempt ``n`` (from 0) is ``min * 2**n``, capped at ``max``;
- the jitter is ``u * jitter * base`` with ``u`` uniform on ``[0, 1)``, capped so
  that ``base + jitter`` never exceeds ``max``;
- the delay is ``base + jitter``, so every delay lies in ``[min, max]``.

A :class:`BackoffSeries` is the per-use state (the attempt counter); call
:meth:`BackoffSeries.reset` after a success, or start a new series.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator

import attrs

#: A source of uniform floats on ``[0, 1)``; ``random.random`` by default.
Uniform = Callable[[], float]

# 2**MAX_DOUBLINGS * any positive min already exceeds any sane max; bounding the
# exponent keeps the float arithmetic finite.
_MAX_DOUBLINGS = 1000


def _validate(instance: ExponentialBackoff) -> None:
    if not (math.isfinite(instance.min) and math.isfinite(instance.max)):
        raise ValueError("invalid backoff: durations must be finite")
    if instance.min < 0:
        raise ValueError("invalid backoff: minimum must not be negative")
    if instance.min > instance.max:
        raise ValueError("invalid backoff: maximum must not be less than minimum")
    if instance.max == 0:
        raise ValueError("invalid backoff: maximum must be non-zero")
    if not math.isfinite(instance.jitter):
        raise ValueError("invalid backoff: jitter must be finite")
    if instance.jitter < 0:
        raise ValueError("invalid backoff: jitter must not be negative")
    if instance.jitter > 100:
        raise ValueError("invalid backoff: jitter must not be greater than 100")


@attrs.frozen
class ExponentialBackoff:
    """A backoff policy: seconds ``min`` and ``max``, ``jitter`` as a ratio.

    Frozen and hashable, so it can sit in a stack target.

    Raises:
        ValueError: on construction, if ``min > max``, ``max == 0``, a value is
            negative or not finite, or ``jitter > 100`` (the reference's limits).
    """

    min: float = attrs.field(converter=float)
    max: float = attrs.field(converter=float)
    jitter: float = attrs.field(converter=float, default=0.0)

    def __attrs_post_init__(self) -> None:
        _validate(self)

    def base(self, attempt: int) -> float:
        """The un-jittered delay before retry number ``attempt`` (from 0)."""
        if attempt >= _MAX_DOUBLINGS:
            return self.max
        return min(self.min * (2.0**attempt), self.max)

    def jittered(self, base: float, uniform: float) -> float:
        """The jitter to add to ``base`` for a uniform draw ``uniform`` in [0, 1)."""
        if self.jitter == 0.0:
            return 0.0
        return min(uniform * self.jitter * base, self.max - base)

    def delay(self, attempt: int, uniform: float) -> float:
        """The full delay for ``attempt`` given the draw ``uniform``."""
        base = self.base(attempt)
        return base + self.jittered(base, uniform)

    def series(self, rng: Uniform | None = None) -> BackoffSeries:
        """Start a new series of delays, drawing jitter from ``rng``."""
        return BackoffSeries(self, rng if rng is not None else random.random)


class BackoffSeries(Iterator[float]):
    """The delays of one retry loop; an endless iterator.

    ``next(series)`` gives the delay to wait before the next attempt and counts
    the attempt; :meth:`reset` starts over from ``min`` (call it on success).
    """

    def __init__(self, policy: ExponentialBackoff, rng: Uniform) -> None:
        self.policy = policy
        self._rng = rng
        self.attempts = 0

    def __iter__(self) -> BackoffSeries:
        return self

    def __next__(self) -> float:
        delay = self.policy.delay(self.attempts, self._rng())
        self.attempts += 1
        return delay

    def reset(self) -> None:
        """Forget past failures: the next delay is the minimum again."""
        self.attempts = 0
