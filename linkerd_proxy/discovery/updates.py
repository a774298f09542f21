"""Endpoint-set updates: the vocabulary between a resolution and a balancer.

A resolution (``Destination.Get``) is a stream of :data:`Update` values about one
logical destination. The balancer applies them to its endpoint set:

- :class:`Reset` replaces the whole set (the first update of a stream, and the
  first after a reconnect: the reference's recover/Reset semantics);
- :class:`Add` adds or updates endpoints (an endpoint's metadata may change);
- :class:`Remove` removes endpoints: a removed endpoint is never dialled again;
- :class:`DoesNotExist` clears the set: the destination is unknown to discovery.

``M`` is the per-endpoint metadata (labels, TLS identity, protocol hint ...). Pure:
no I/O, no trio.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Generic, TypeVar

import attrs

from linkerd_proxy.addrs import SocketAddr

M = TypeVar("M")


@attrs.frozen
class Reset(Generic[M]):
    """The endpoint set is exactly ``endpoints`` (possibly empty: NoEndpoints{exists=true})."""

    endpoints: Mapping[SocketAddr, M]


@attrs.frozen
class Add(Generic[M]):
    """Add these endpoints, or replace the metadata of ones already known."""

    endpoints: Mapping[SocketAddr, M]


@attrs.frozen
class Remove:
    """Remove these endpoints."""

    addrs: frozenset[SocketAddr]


@attrs.frozen
class DoesNotExist:
    """Discovery does not know the destination (NoEndpoints{exists=false})."""


Update = Reset[M] | Add[M] | Remove | DoesNotExist


def apply(current: Mapping[SocketAddr, M], update: Update[M]) -> dict[SocketAddr, M]:
    """The endpoint set after ``update`` (a new dict; ``current`` is not changed)."""
    if isinstance(update, Reset):
        return dict(update.endpoints)
    if isinstance(update, Add):
        merged = dict(current)
        merged.update(update.endpoints)
        return merged
    if isinstance(update, Remove):
        return {a: m for a, m in current.items() if a not in update.addrs}
    return {}
