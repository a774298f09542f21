"""Power of two choices: pick the less loaded of two random endpoints (pure).

Sits under :mod:`linkerd_proxy.balance.pool`, which calls :func:`p2c` with the
endpoints available now. The reference's rule (``linkerd/pool/p2c``):

- no candidates: nothing to pick;
- one: that one;
- more: draw two *distinct* indices uniformly (in random order) and take the one
  with the lower load; a tie goes to the first drawn.

The randomness is injected (a ``random.Random``), so tests are deterministic. No
I/O, no trio.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import TypeVar

__all__ = ["p2c", "pick_pair"]

T = TypeVar("T")


def pick_pair(rng: random.Random, n: int) -> tuple[int, int]:
    """Two distinct indices in ``range(n)``, uniformly, in random order.

    Raises:
        ValueError: ``n < 2``.
    """
    if n < 2:
        raise ValueError("need at least two candidates")
    a = rng.randrange(n)
    b = rng.randrange(n - 1)
    if b >= a:
        b += 1
    return a, b


def p2c(candidates: Sequence[T], load: Callable[[T], float], rng: random.Random) -> T | None:
    """The less loaded of two random candidates (``None`` when there are none).

    Args:
        candidates: the endpoints that may take a request now.
        load: the load of a candidate (read only for the two drawn).
        rng: the source of randomness.
    """
    n = len(candidates)
    if n == 0:
        return None
    if n == 1:
        return candidates[0]
    a, b = pick_pair(rng, n)
    ca, cb = candidates[a], candidates[b]
    return ca if load(ca) <= load(cb) else cb
