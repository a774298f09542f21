"""Open server streams of the fake control plane, and what a test does to them.

The bottom of the fake control plane (:mod:`linkerd_proxy.testing.control`): each
server-streaming handler opens a :class:`Stream` on a :class:`Streams` table under a
key (a destination path, a policy target), and yields what arrives on it. The state
modules push messages to every stream of a key, end them with a gRPC status, or make
them go silent (still open, sending nothing). Runs on the asyncio loop of the
control plane; the push side is synchronous.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Hashable
from typing import Generic, TypeVar

import attrs
from grpclib.const import Status
from grpclib.exceptions import GRPCError

K = TypeVar("K", bound=Hashable)
M = TypeVar("M")


@attrs.frozen
class _End:
    code: int
    message: str


class Stream(Generic[M]):
    """One open server stream: a queue of messages to send, or an end."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[M | _End] = asyncio.Queue()
        self.silent = False

    def push(self, message: M) -> None:
        """Queue ``message`` for sending, unless the stream went silent."""
        if not self.silent:
            self._queue.put_nowait(message)

    def end(self, code: int, message: str = "") -> None:
        """End the stream after what is queued: OK (0) ends it cleanly, else with an error."""
        self._queue.put_nowait(_End(code, message))

    async def messages(self) -> AsyncIterator[M]:
        """Yield queued messages until the stream is ended.

        Raises:
            GRPCError: when ended with a non-OK status.

        Cancellation: safe; grpclib cancels the handler when the client goes away.
        """
        while True:
            item = await self._queue.get()
            if isinstance(item, _End):
                if item.code != 0:
                    raise GRPCError(Status(item.code), item.message or None)
                return
            yield item


class Streams(Generic[K, M]):
    """The open streams of one method, by key, and how many were ever opened."""

    def __init__(self) -> None:
        self._open: dict[K, set[Stream[M]]] = {}
        self.opened: Counter[K] = Counter()

    def open(self, key: K) -> Stream[M]:
        """Register a new stream for ``key`` (counted in :attr:`opened`)."""
        stream: Stream[M] = Stream()
        self._open.setdefault(key, set()).add(stream)
        self.opened[key] += 1
        return stream

    def close(self, key: K, stream: Stream[M]) -> None:
        """Forget ``stream`` (its handler returned or was cancelled)."""
        streams = self._open.get(key)
        if streams is not None:
            streams.discard(stream)
            if not streams:
                del self._open[key]

    def active(self, key: K) -> int:
        """How many streams for ``key`` are open now."""
        return len(self._open.get(key, ()))

    def push(self, key: K, message: M) -> None:
        """Send ``message`` on every open stream of ``key``."""
        for stream in self._open.get(key, ()):
            stream.push(message)

    def end(self, key: K | None, code: int, message: str = "") -> int:
        """End the open streams of ``key`` (``None``: of every key); returns how many."""
        keys = list(self._open) if key is None else [key]
        ended = 0
        for k in keys:
            for stream in self._open.get(k, ()):
                stream.end(code, message)
                ended += 1
        return ended

    def silence(self, key: K | None) -> int:
        """Make the open streams of ``key`` (``None``: all) send nothing more; returns how many."""
        keys = list(self._open) if key is None else [key]
        silenced = 0
        for k in keys:
            for stream in self._open.get(k, ()):
                stream.silent = True
                silenced += 1
        return silenced


def grpc_error(code: int, message: str) -> GRPCError:
    """A grpclib error with status ``code`` (an int, as in ``linkerd_proxy.grpc.status``)."""
    return GRPCError(Status(code), message)


__all__ = ["Stream", "Streams", "grpc_error"]
