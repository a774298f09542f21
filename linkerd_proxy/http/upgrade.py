"""HTTP/1.1 upgrades and CONNECT: the handles that turn a request into a tunnel.

Where it sits: between the HTTP/1 server driver (``h1/server.py``) and the HTTP/1
client driver (``h1/client.py``), carried through every layer in between as
message extensions (see :func:`~linkerd_proxy.http.model.get_ext`).

The flow, for ``Upgrade: websocket`` (HTTP/1.1 only) and for ``CONNECT``:

1. The server driver reads an upgrade request and puts a :class:`DownstreamUpgrade`
   in ``request.extensions``; the request keeps its ``upgrade`` header (the only
   hop-by-hop header that passes, and only then).
2. The client driver sees the handle, sends ``Connection: upgrade`` + ``Upgrade``
   (or a ``CONNECT``), and when the upstream answers ``101`` (or 2xx to
   ``CONNECT``) it puts an :class:`UpstreamUpgrade`, already resolved with the raw
   upstream stream and the bytes read past the head, in ``response.extensions``;
   that connection leaves the pool for good.
3. The server driver writes the ``101``/2xx head to the client, resolves the
   request's handle with the client's raw stream, and joins the two with
   :func:`join_upgraded` (a transparent byte copy, half-close included).

``h2c`` upgrades are not performed (the server driver strips them), as the
reference does: an h2 connection hidden inside a tunnel would escape the proxy's
HTTP telemetry.
"""

from __future__ import annotations

import attrs
import trio

from linkerd_proxy.errors import ProxyError
from linkerd_proxy.transport.duplex import DuplexResult, proxy_streams

__all__ = [
    "DownstreamUpgrade",
    "OnUpgrade",
    "UpgradeFailed",
    "Upgraded",
    "UpstreamUpgrade",
    "join_upgraded",
]


class UpgradeFailed(ProxyError):
    """The other side of an upgrade never materialized."""


@attrs.frozen
class Upgraded:
    """One side of an upgraded connection.

    Attributes:
        stream: the raw byte stream, no longer HTTP/1.
        leftover: bytes already read from ``stream`` past the HTTP head; they
            belong to the new protocol and come before anything read later.
    """

    stream: trio.abc.Stream
    leftover: bytes = b""


class OnUpgrade:
    """A one-shot promise of an :class:`Upgraded` stream.

    Args:
        protocol: the ``Upgrade`` token asked for (e.g. ``b"websocket"``), or
            ``None`` for ``CONNECT``.
    """

    def __init__(self, protocol: bytes | None) -> None:
        self.protocol = protocol
        self._event = trio.Event()
        self._value: Upgraded | None = None
        self._error: BaseException | None = None

    @property
    def is_connect(self) -> bool:
        return self.protocol is None

    @property
    def is_resolved(self) -> bool:
        return self._event.is_set()

    def resolve(self, upgraded: Upgraded) -> None:
        """Hand over the upgraded stream (once).

        Raises:
            RuntimeError: if already resolved or failed.
        """
        if self._event.is_set():
            raise RuntimeError("upgrade handle resolved twice")
        self._value = upgraded
        self._event.set()

    def fail(self, error: BaseException) -> None:
        """Say the upgrade will not happen; waiters get ``error`` (ignored if
        already resolved)."""
        if not self._event.is_set():
            self._error = error
            self._event.set()

    async def wait(self) -> Upgraded:
        """The upgraded stream, once available.

        Raises:
            UpgradeFailed: or the error given to :meth:`fail`.
        """
        await self._event.wait()
        if self._error is not None:
            raise self._error
        assert self._value is not None
        return self._value


class DownstreamUpgrade(OnUpgrade):
    """In ``request.extensions``: the client side of an upgrade request; resolved
    by the server driver after it has written the 101/2xx head."""


class UpstreamUpgrade(OnUpgrade):
    """In ``response.extensions``: the upstream side of a successful upgrade;
    resolved by the client driver before the response is returned."""


async def join_upgraded(downstream: Upgraded, upstream: Upgraded) -> DuplexResult:
    """Copy bytes both ways between the two sides until both are done.

    The upstream's leftover bytes go to the client first, the client's leftover
    bytes to the upstream first. Takes ownership of both streams and closes them.

    Returns:
        How the copy ended (errors are reported there, not raised).

    Cancellation: both streams are closed and ``Cancelled`` propagates.
    """
    if upstream.leftover:
        try:
            await downstream.stream.send_all(upstream.leftover)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            await trio.aclose_forcefully(downstream.stream)
            await trio.aclose_forcefully(upstream.stream)
            return DuplexResult(0, 0, exc, None, False)
    return await proxy_streams(downstream.stream, upstream.stream, prefix=downstream.leftover)
