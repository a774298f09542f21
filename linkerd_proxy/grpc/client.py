"""A client for one control-plane service (Destination, Policy, Identity).

Above the gRPC bridge (``grpc/bridge.py``, where the asyncio side lives) and the
DNS resolver (``grpc/dns.py``); below the discovery and identity clients, which
give it a method path, a request and a codec, and consume decoded messages.

What it adds to the bridge, after the reference's control client:

- **Addresses**: the configured address is resolved by DNS (cached for its TTL,
  failures for the negative TTL) and calls go round robin over the answers, so a
  failed server is not asked again straight away.
- **TLS**: plaintext only to a loopback address (a loopback IP or ``localhost.``);
  any other address needs an ``ssl.SSLContext`` and is refused at construction
  without one.
- **Watches** (:meth:`ControlClient.watch`, :meth:`ControlClient.open_stream`): a
  server-streaming call that is re-opened after it ends or fails, with the
  jittered exponential backoff (reset once a stream has delivered something),
  until cancelled or until an error the caller deems fatal (INVALID_ARGUMENT and
  FAILED_PRECONDITION by default). Each delivered item says whether it is the
  first of a new stream, whose state replaces the old one's.
- **Stream limits** (``CONTROL_STREAM_*``), applied to non-loopback addresses only:
  the first message must come within ``initial`` (else the stream fails with
  DEADLINE_EXCEEDED), later ones within ``idle`` of the previous one (else the
  stream is ended and re-opened), and a stream is recycled after ``lifetime``.
  Time the consumer spends not reading does not count as idle.
"""

from __future__ import annotations

import contextlib
import logging
import math
import ssl
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Generic, TypeVar

import attrs
import trio

from linkerd_proxy.addrs import NameAddr, SocketAddr
from linkerd_proxy.errors import ControlTlsRequired, DnsError, GrpcError
from linkerd_proxy.grpc.bridge import Bridge, Codec, Endpoint
from linkerd_proxy.grpc.dns import DnsResolver, is_localhost
from linkerd_proxy.grpc.status import FATAL_FOR_WATCH, Code
from linkerd_proxy.transport.backoff import ExponentialBackoff

log = logging.getLogger(__name__)

Req = TypeVar("Req")
Rsp = TypeVar("Rsp")

#: How many decoded messages may wait between the bridge and a watch loop.
_INNER_BUFFER = 8


def _check_limit(
    instance: object, attribute: attrs.Attribute[float | None], value: float | None
) -> None:
    if value is not None and not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{attribute.name} must be a positive number of seconds, or None")


@attrs.frozen
class StreamLimits:
    """``CONTROL_STREAM_{INITIAL_TIMEOUT,IDLE_TIMEOUT,LIFETIME}`` in seconds; ``None`` = no limit.

    Raises:
        ValueError: on construction, if a limit is not positive, or if
            ``initial <= idle <= lifetime`` does not hold among those set.
    """

    initial: float | None = attrs.field(default=None, validator=_check_limit)
    idle: float | None = attrs.field(default=None, validator=_check_limit)
    lifetime: float | None = attrs.field(default=None, validator=_check_limit)

    def __attrs_post_init__(self) -> None:
        pairs = [("initial", "idle"), ("initial", "lifetime"), ("idle", "lifetime")]
        for low, high in pairs:
            a, b = getattr(self, low), getattr(self, high)
            if a is not None and b is not None and a > b:
                raise ValueError(f"stream limit {low} must not be greater than {high}")


@attrs.frozen
class Received(Generic[Rsp]):
    """One message of a watch; ``new_stream`` marks the first of a (re)opened stream."""

    message: Rsp
    new_stream: bool


def fatal_for_watch(error: GrpcError) -> bool:
    """The default rule: INVALID_ARGUMENT and FAILED_PRECONDITION end a watch."""
    return error.status in FATAL_FOR_WATCH


class ControlStream(Generic[Rsp]):
    """The consuming end of a watch: an async iterator of :class:`Received` items.

    Iteration ends only with the watch: it raises the :class:`GrpcError` that
    ended it, or stops if the watch was closed.
    """

    def __init__(self, channel: trio.MemoryReceiveChannel[Received[Rsp] | GrpcError]) -> None:
        self._channel = channel

    async def receive(self) -> Received[Rsp]:
        """The next item.

        Raises:
            GrpcError: the fatal error that ended the watch.
            trio.EndOfChannel: the watch was stopped.
        """
        item = await self._channel.receive()
        if isinstance(item, GrpcError):
            raise item
        return item

    def __aiter__(self) -> ControlStream[Rsp]:
        return self

    async def __anext__(self) -> Received[Rsp]:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None


def is_loopback(addr: SocketAddr | NameAddr) -> bool:
    """A loopback IP, or the name ``localhost.``."""
    if isinstance(addr, SocketAddr):
        return addr.ip.is_loopback
    return is_localhost(addr.name)


class ControlClient:
    """Calls one control-plane service at ``addr``.

    Args:
        bridge: the gRPC bridge from :func:`~linkerd_proxy.grpc.bridge.open_bridge`.
        addr: the configured ``*_SVC_ADDR``.
        resolver: resolves ``addr`` (shared between clients is fine).
        backoff: the delays between stream attempts.
        ssl_context: TLS for the connections; required unless ``addr`` is loopback.
        server_name: the TLS server name (``*_SVC_NAME``) checked with ``ssl_context``.
        limits: the ``CONTROL_STREAM_*`` limits; ignored for a loopback ``addr``.
        connect_timeout: bound on opening a connection.
        is_fatal: which stream errors end a watch instead of being retried.

    Raises:
        ControlTlsRequired: ``addr`` is not loopback and ``ssl_context`` is ``None``.
    """

    def __init__(
        self,
        bridge: Bridge,
        addr: SocketAddr | NameAddr,
        *,
        resolver: DnsResolver,
        backoff: ExponentialBackoff,
        ssl_context: ssl.SSLContext | None = None,
        server_name: str | None = None,
        limits: StreamLimits | None = None,
        connect_timeout: float = 1.0,
        is_fatal: Callable[[GrpcError], bool] = fatal_for_watch,
    ) -> None:
        if ssl_context is None and not is_loopback(addr):
            raise ControlTlsRequired(addr)
        self.addr = addr
        self.is_loopback = is_loopback(addr)
        self.limits = StreamLimits() if self.is_loopback or limits is None else limits
        self._bridge = bridge
        self._resolver = resolver
        self._backoff = backoff
        self._ssl_context = ssl_context
        self._server_name = server_name
        self._connect_timeout = connect_timeout
        self._is_fatal = is_fatal
        self._next = 0
        self._endpoints: tuple[Endpoint, ...] = ()

    # ---------------------------------------------------------------- endpoints

    async def pick_endpoint(self) -> Endpoint:
        """The next endpoint, round robin over the current DNS answer.

        Raises:
            DnsError: ``addr`` does not resolve (cached for the negative TTL).
        """
        resolution = await self._resolver.resolve(self.addr)
        endpoints = tuple(self._endpoint(a) for a in resolution.addrs)
        if endpoints != self._endpoints:
            for gone in set(self._endpoints) - set(endpoints):
                self._bridge.retire(gone)
            log.debug("control %s endpoints: %s", self.addr, [str(e.addr) for e in endpoints])
            self._endpoints = endpoints
        endpoint = endpoints[self._next % len(endpoints)]
        self._next += 1
        return endpoint

    def close(self) -> None:
        """Retire this client's connections (each closes when its last call ends)."""
        for endpoint in self._endpoints:
            self._bridge.retire(endpoint)
        self._endpoints = ()

    def _endpoint(self, addr: SocketAddr) -> Endpoint:
        server_name = self._server_name
        if server_name is None and isinstance(self.addr, NameAddr):
            server_name = self.addr.name.rstrip(".")
        return Endpoint(
            addr=addr,
            authority=str(self.addr),
            ssl_context=self._ssl_context,
            server_name=server_name if self._ssl_context is not None else None,
        )

    # -------------------------------------------------------------------- calls

    async def unary(
        self,
        method: str,
        request: Req,
        codec: Codec[Req, Rsp],
        *,
        grpc_timeout: float | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> Rsp:
        """One unary call to the next endpoint (no retry: the caller owns that policy).

        Raises:
            GrpcError: the call failed (see ``Bridge.unary``); a DNS failure is
                UNAVAILABLE.
        """
        try:
            endpoint = await self.pick_endpoint()
        except DnsError as exc:
            raise GrpcError(Code.UNAVAILABLE, str(exc)) from exc
        return await self._bridge.unary(
            endpoint,
            method,
            request,
            codec,
            grpc_timeout=grpc_timeout,
            connect_timeout=self._connect_timeout,
            metadata=metadata,
        )

    @contextlib.asynccontextmanager
    async def open_stream(
        self,
        method: str,
        request: Req,
        codec: Codec[Req, Rsp],
        *,
        buffer: int = 16,
        metadata: Mapping[str, str] | None = None,
    ) -> AsyncIterator[ControlStream[Rsp]]:
        """Watch ``method`` for the ``async with`` block (see :meth:`watch`).

        Yields:
            The :class:`ControlStream` to read items from.

        Cancellation: leaving the block cancels the watch and resets its stream.
        """
        send, recv = trio.open_memory_channel[Received[Rsp] | GrpcError](buffer)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.watch, method, request, codec, send, metadata)
            with recv:
                try:
                    yield ControlStream(recv)
                finally:
                    nursery.cancel_scope.cancel()

    async def watch(
        self,
        method: str,
        request: Req,
        codec: Codec[Req, Rsp],
        send_channel: trio.MemorySendChannel[Received[Rsp] | GrpcError],
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        """Keep a server-streaming call open, sending its messages to ``send_channel``.

        Re-opens the stream, after a backoff, whenever it ends, fails, idles out
        or reaches its lifetime; after a DNS failure it waits for the negative
        TTL instead. Returns after sending a fatal :class:`GrpcError` (see
        ``is_fatal``), or when the receiver is closed. Closes ``send_channel``.

        Cancellation: the normal way to stop it; the open stream is reset.
        """
        series = self._backoff.series()
        payload = codec.encode(request)
        raw: Codec[bytes, Rsp] = Codec(_pass_bytes, codec.decode)
        with send_channel:
            while True:
                attempt = _Attempt()
                try:
                    await self._one_stream(method, payload, raw, send_channel, metadata, attempt)
                    if attempt.consumer_gone:
                        return
                    log.debug("control %s %s stream ended", self.addr, method)
                except DnsError as exc:
                    log.warning("failed to resolve control-plane component: %s", exc)
                    await trio.sleep(exc.negative_ttl)
                    continue
                except GrpcError as exc:
                    if self._is_fatal(exc):
                        with contextlib.suppress(trio.BrokenResourceError):
                            await send_channel.send(exc)
                        return
                    log.warning("control %s %s stream failed: %s", self.addr, method, exc)
                if attempt.delivered:
                    series.reset()
                await trio.sleep(next(series))

    async def _one_stream(
        self,
        method: str,
        payload: bytes,
        codec: Codec[bytes, Rsp],
        out: trio.MemorySendChannel[Received[Rsp] | GrpcError],
        metadata: Mapping[str, str] | None,
        attempt: _Attempt,
    ) -> None:
        limits = self.limits
        lifetime_deadline = trio.current_time() + (limits.lifetime or math.inf)
        endpoint = await self.pick_endpoint()
        inner_send, inner_recv = trio.open_memory_channel[Rsp](_INNER_BUFFER)

        async def run() -> None:
            try:
                await self._bridge.stream(
                    endpoint,
                    method,
                    payload,
                    codec,
                    inner_send,
                    connect_timeout=self._connect_timeout,
                    metadata=metadata,
                )
            except GrpcError as exc:
                attempt.failure = exc

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run)
            with inner_recv:
                while True:
                    first = attempt.delivered == 0
                    wait = (limits.initial or limits.idle) if first else limits.idle
                    deadline = min(lifetime_deadline, trio.current_time() + (wait or math.inf))
                    received = False
                    with trio.move_on_at(deadline):
                        try:
                            message = await inner_recv.receive()
                        except trio.EndOfChannel:
                            break
                        received = True
                    if not received:
                        if first and trio.current_time() < lifetime_deadline:
                            attempt.failure = GrpcError(
                                Code.DEADLINE_EXCEEDED,
                                "initial update not received within timeout",
                            )
                        break
                    # Outside the limits' scope: a message taken from the bridge is
                    # always delivered, however long the consumer takes to read it.
                    try:
                        await out.send(Received(message, new_stream=first))
                    except trio.BrokenResourceError:
                        attempt.consumer_gone = True
                        break
                    attempt.delivered += 1
            nursery.cancel_scope.cancel()
        if attempt.failure is not None:
            raise attempt.failure


@attrs.define
class _Attempt:
    """What one stream attempt did: messages delivered, how it failed, whether the
    consumer went away."""

    delivered: int = 0
    failure: GrpcError | None = None
    consumer_gone: bool = False


def _pass_bytes(data: bytes) -> bytes:
    return data
