"""``Destination.Get``: endpoint resolutions for a balancer.

Where it sits: above ``grpc.client.ControlClient`` (the reconnecting watch) and
``discovery.endpoint`` (per-endpoint metadata); below the balancer, which reads a
:class:`Resolution` and applies each :data:`~linkerd_proxy.discovery.updates.Update`
to its endpoint set with ``updates.apply``.

The translation (:func:`update_from_proto`) is pure (it uses no trio, though this
module imports it for the watch); :class:`Resolution` adds the
recovery rule: the first update of every (re)opened stream replaces the whole
set, so the endpoints kept across an outage are exactly the server's snapshot
once it answers again. While the stream is down nothing is delivered, so the
balancer keeps routing on the last set.

Importing this module loads neither the generated API nor the gRPC bridge (a
proxy without a control plane imports it but never calls it): the gRPC types are
annotations only, and the codec is built on first use.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import trio

import linkerd_proxy.api as api
from linkerd_proxy.addrs import SocketAddr
from linkerd_proxy.discovery.endpoint import EndpointMeta, addr_from_proto, endpoint_from_proto
from linkerd_proxy.discovery.updates import Add, DoesNotExist, Remove, Reset, Update
from linkerd_proxy.errors import DiscoveryRejected, GrpcError

if TYPE_CHECKING:
    from linkerd_proxy.grpc.bridge import Codec
    from linkerd_proxy.grpc.client import ControlClient, ControlStream

log = logging.getLogger(__name__)

GET = "/io.linkerd.proxy.destination.Destination/Get"


@functools.cache
def get_codec() -> Codec[api.destination.GetDestination, api.destination.Update]:
    """The codec of ``Destination.Get`` calls (built once, on first use)."""
    from linkerd_proxy.grpc.bridge import Codec  # not at import: see the module doc

    return Codec(bytes, api.destination.Update.parse)


EndpointUpdate = Update[EndpointMeta]


def update_from_proto(pb: api.destination.Update) -> EndpointUpdate | None:
    """Translate one update; ``None`` if it carries nothing usable.

    ``add`` merges the set's metric labels under each address's; addresses
    without a usable IP are skipped, and an ``add``/``remove`` left empty is
    dropped, as the reference does. ``no_endpoints{exists: true}`` empties the
    set (:class:`Reset` of nothing); ``exists: false`` is :class:`DoesNotExist`.
    """
    if pb.add is not None:
        added: dict[SocketAddr, EndpointMeta] = {}
        for weighted in pb.add.addrs:
            entry = endpoint_from_proto(weighted, pb.add.metric_labels)
            if entry is not None:
                added[entry[0]] = entry[1]
        return Add(added) if added else None
    if pb.remove is not None:
        removed = frozenset(a for a in map(addr_from_proto, pb.remove.addrs) if a is not None)
        return Remove(removed) if removed else None
    if pb.no_endpoints is not None:
        return Reset({}) if pb.no_endpoints.exists else DoesNotExist()
    return None


def as_first(update: EndpointUpdate) -> EndpointUpdate:
    """The first update of a stream, as one that replaces the whole set."""
    if isinstance(update, Add):
        return Reset(update.endpoints)
    if isinstance(update, Remove):
        return Reset({})
    return update


class Resolution:
    """The updates of one ``Destination.Get`` watch, as an async iterator.

    Obtain one with :func:`open_resolution`.
    """

    def __init__(self, path: str, stream: ControlStream[api.destination.Update]) -> None:
        self.path = path
        self._stream = stream
        self._first = True

    async def receive(self) -> EndpointUpdate:
        """The next update (the first of each stream is a :class:`Reset` or
        :class:`DoesNotExist`).

        Raises:
            DiscoveryRejected: the lookup was rejected for good (INVALID_ARGUMENT
                or FAILED_PRECONDITION); fall back to the original destination.
            trio.EndOfChannel: the watch was stopped.
        """
        while True:
            try:
                received = await self._stream.receive()
            except GrpcError as exc:
                raise DiscoveryRejected(self.path, exc.status, exc.message) from exc
            if received.new_stream:
                self._first = True
            update = update_from_proto(received.message)
            if update is None:
                continue
            if self._first:
                self._first = False
                update = as_first(update)
            log.debug("resolved %s: %s", self.path, type(update).__name__)
            return update

    def __aiter__(self) -> Resolution:
        return self

    async def __anext__(self) -> EndpointUpdate:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None


def get_request(path: str, context_token: str) -> api.destination.GetDestination:
    """The ``Get``/``GetProfile`` request for ``path`` (``name:port`` or ``ip:port``)."""
    return api.destination.GetDestination(path=path, context_token=context_token)


@contextlib.asynccontextmanager
async def open_resolution(
    client: ControlClient, path: str, context_token: str, *, buffer: int = 16
) -> AsyncIterator[Resolution]:
    """Resolve ``path`` for the ``async with`` block.

    Args:
        client: the Destination service's client.
        path: ``name:port`` (a policy backend's ``DestinationGet.path`` or a
            profile target's authority).
        context_token: ``LINKERD2_PROXY_DESTINATION_CONTEXT``.
        buffer: messages that may wait between the watch and the reader.

    Yields:
        The :class:`Resolution` to read updates from.

    Cancellation: leaving the block cancels the watch and resets its stream.
    """
    request = get_request(path, context_token)
    async with client.open_stream(GET, request, get_codec(), buffer=buffer) as stream:
        yield Resolution(path, stream)
