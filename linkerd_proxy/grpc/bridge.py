"""The bridge between trio and the control-plane gRPC library (grpclib on asyncio).

The bottom of the control-plane client stack, under ``grpc/client.py``: the one
module of the project that imports asyncio, trio-asyncio and grpclib. Everything
above it speaks trio and bytes-level codecs only.

How it works:

- :func:`open_bridge` opens a trio-asyncio loop (an asyncio event loop that runs
  inside the trio run) and yields a :class:`Bridge`; every gRPC call made through
  the bridge runs as one asyncio coroutine on that loop.
- A server-streaming call (:meth:`Bridge.stream`) runs whole on the asyncio side:
  connect, send the request, read and decode each message, and put it into a trio
  memory channel with ``send_nowait``. The asyncio loop runs in the trio thread,
  so that is a plain function call, not a hop between loops. Only when the
  channel is full (the trio consumer is behind) does the coroutine wait on the
  trio side for room, which is the one place a message crosses loops.
- One grpclib ``Channel`` (one HTTP/2 connection) per :class:`Endpoint`, shared by
  the calls to it and counted, so that :meth:`Bridge.retire` closes a channel when
  its last call ends. grpclib redials a lost connection on the next call.
- Every failure leaves as :class:`~linkerd_proxy.errors.GrpcError`: a server status
  as is; refused, reset or lost connections as UNAVAILABLE; a message the codec
  cannot decode as INTERNAL.
- Cancellation goes both ways: cancelling the trio caller cancels the asyncio task,
  and grpclib resets the HTTP/2 stream (RST_STREAM CANCEL), which the server sees.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Generic, TypeVar

import attrs
import trio
import trio_asyncio
from grpclib.client import Channel
from grpclib.config import Configuration
from grpclib.const import Cardinality
from grpclib.encoding.base import CodecBase
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError

from linkerd_proxy.addrs import SocketAddr
from linkerd_proxy.errors import GrpcError
from linkerd_proxy.grpc.status import Code

Req = TypeVar("Req")
Rsp = TypeVar("Rsp")


@attrs.frozen
class Codec(Generic[Req, Rsp]):
    """How one method's messages become bytes and back.

    ``encode`` runs on the trio side before the call; ``decode`` runs on the
    asyncio side for each message (in the same thread), before delivery to trio.
    Betterproto2 messages fit as ``Codec(bytes, Msg.parse)``.
    """

    encode: Callable[[Req], bytes]
    decode: Callable[[bytes], Rsp]


def _identity(data: bytes) -> bytes:
    return data


#: The codec that passes bytes through unchanged.
RAW: Codec[bytes, bytes] = Codec(_identity, _identity)


class _RawCodec(CodecBase):
    """grpclib's side of the codec: messages are already bytes on both sides."""

    __content_subtype__ = "proto"

    def encode(self, message: Any, message_type: Any) -> bytes:
        assert isinstance(message, bytes | bytearray)
        return bytes(message)

    def decode(self, data: bytes, message_type: Any) -> Any:
        return data


@attrs.frozen
class Endpoint:
    """One control-plane server to call: where to connect and how.

    Attributes:
        addr: the IP and port to connect to.
        authority: the ``:authority`` of requests (the control address as
            configured, e.g. ``linkerd-dst-headless.linkerd.svc.cluster.local.:8086``).
        ssl_context: TLS client context, or ``None`` for plaintext.
        server_name: the TLS server name (SNI and verification) when ``ssl_context``
            is set.
    """

    addr: SocketAddr
    authority: str
    ssl_context: ssl.SSLContext | None = None
    server_name: str | None = None


@attrs.define
class _Entry:
    channel: Channel
    users: int = 0
    retired: bool = False


class _ConsumerGone(Exception):
    """The trio side closed its receive channel: stop reading, reset the stream."""


def _unavailable(endpoint: Endpoint, what: str, exc: BaseException) -> GrpcError:
    reason = str(exc) or type(exc).__name__
    return GrpcError(Code.UNAVAILABLE, f"{what} {endpoint.addr}: {reason}")


class Bridge:
    """Runs gRPC calls on an asyncio loop inside trio; built by :func:`open_bridge`.

    Safe to share between tasks; calls to one endpoint share its connection.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._entries: dict[Endpoint, _Entry] = {}
        self._codec = _RawCodec()

    # ---------------------------------------------------------------- trio API

    async def unary(
        self,
        endpoint: Endpoint,
        method: str,
        request: Req,
        codec: Codec[Req, Rsp],
        *,
        grpc_timeout: float | None = None,
        connect_timeout: float | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> Rsp:
        """Make one unary call and return the decoded response.

        Args:
            endpoint: the server.
            method: the gRPC path, ``/package.Service/Method``.
            request: the request message, encoded with ``codec.encode``.
            codec: the method's message codec.
            grpc_timeout: the call's deadline in seconds (sent as ``grpc-timeout``).
            connect_timeout: bound on opening the connection, if one is needed.
            metadata: extra request headers.

        Raises:
            GrpcError: the server's non-OK status, DEADLINE_EXCEEDED past
                ``grpc_timeout``, UNAVAILABLE when the connection fails, INTERNAL when
                the response does not decode.

        Cancellation: cancels the asyncio call; the stream is reset.
        """
        payload = codec.encode(request)
        call = trio_asyncio.aio_as_trio(self._aio_unary, loop=self._loop)
        data: bytes = await call(endpoint, method, payload, grpc_timeout, connect_timeout, metadata)
        return _decode(codec.decode, data)

    async def stream(
        self,
        endpoint: Endpoint,
        method: str,
        request: Req,
        codec: Codec[Req, Rsp],
        send_channel: trio.MemorySendChannel[Rsp],
        *,
        connect_timeout: float | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        """Make one server-streaming call, putting each decoded message into ``send_channel``.

        Returns when the server ends the stream with status OK, or when the
        receiving end of ``send_channel`` is closed (the stream is then reset).
        ``send_channel`` is closed on return or raise, so the consumer sees
        ``EndOfChannel`` after the last message.

        Args:
            endpoint: the server.
            method: the gRPC path, ``/package.Service/Method``.
            request: the request message, encoded with ``codec.encode``.
            codec: the method's message codec.
            send_channel: where decoded messages go, in order. Its buffer is the
                only back-pressure: while it is full the stream is not read.
            connect_timeout: bound on opening the connection, if one is needed.
            metadata: extra request headers.

        Raises:
            GrpcError: as for :meth:`unary`; also UNAVAILABLE when the stream is
                reset or the connection lost mid-stream.

        Cancellation: cancels the asyncio task, which resets the HTTP/2 stream.
        """
        payload = codec.encode(request)
        call = trio_asyncio.aio_as_trio(self._aio_stream, loop=self._loop)
        with send_channel:
            await call(
                endpoint, method, payload, codec.decode, send_channel, connect_timeout, metadata
            )

    def retire(self, endpoint: Endpoint) -> None:
        """Close ``endpoint``'s connection once no call uses it (e.g. gone from DNS)."""
        entry = self._entries.get(endpoint)
        if entry is None:
            return
        entry.retired = True
        if entry.users == 0:
            self._close(endpoint, entry)

    def aclose_all(self) -> None:
        """Close every connection (calls still running on them fail)."""
        for endpoint, entry in list(self._entries.items()):
            self._close(endpoint, entry)

    # ------------------------------------------------------------- asyncio side

    def _acquire(self, endpoint: Endpoint) -> Channel:
        entry = self._entries.get(endpoint)
        if entry is None or entry.retired:
            if entry is not None:
                # A retired channel still serving old calls: new calls get a fresh one.
                del self._entries[endpoint]
            config = Configuration(
                ssl_target_name_override=endpoint.server_name if endpoint.ssl_context else None
            )
            host, port = endpoint.addr.to_sockaddr()
            channel = Channel(
                host, port, codec=self._codec, ssl=endpoint.ssl_context, config=config
            )
            # Requests carry the configured control address, as the reference's do.
            channel._authority = endpoint.authority
            entry = _Entry(channel)
            self._entries[endpoint] = entry
        entry.users += 1
        return entry.channel

    def _release(self, endpoint: Endpoint, channel: Channel) -> None:
        entry = self._entries.get(endpoint)
        if entry is None or entry.channel is not channel:
            # The channel was replaced after retirement; it is ours alone to close.
            channel.close()
            return
        entry.users -= 1
        if entry.users == 0 and entry.retired:
            self._close(endpoint, entry)

    def _close(self, endpoint: Endpoint, entry: _Entry) -> None:
        if self._entries.get(endpoint) is entry:
            del self._entries[endpoint]
        entry.channel.close()

    async def _connect(self, endpoint: Endpoint, channel: Channel, limit: float | None) -> None:
        try:
            await asyncio.wait_for(channel.__connect__(), limit)
        except TimeoutError as exc:
            raise GrpcError(
                Code.UNAVAILABLE, f"connect to {endpoint.addr} timed out after {limit}s"
            ) from exc
        except (OSError, ssl.SSLError) as exc:
            raise _unavailable(endpoint, "connect to", exc) from exc

    async def _aio_unary(
        self,
        endpoint: Endpoint,
        method: str,
        payload: bytes,
        grpc_timeout: float | None,
        connect_timeout: float | None,
        metadata: Mapping[str, str] | None,
    ) -> bytes:
        channel = self._acquire(endpoint)
        try:
            await self._connect(endpoint, channel, connect_timeout)
            stream = channel.request(
                method,
                Cardinality.UNARY_UNARY,
                bytes,
                bytes,
                timeout=grpc_timeout,
                metadata=dict(metadata or {}),
            )
            async with stream:
                await stream.send_message(payload, end=True)
                reply = await stream.recv_message()
            if reply is None:
                raise GrpcError(Code.INTERNAL, "unary response without a message")
            assert isinstance(reply, bytes)
            return reply
        except GRPCError as exc:
            raise GrpcError(int(exc.status.value), exc.message or "") from exc
        except TimeoutError as exc:  # grpclib's deadline (``grpc-timeout``) passed
            raise GrpcError(Code.DEADLINE_EXCEEDED, "deadline exceeded") from exc
        except (StreamTerminatedError, ProtocolError, OSError) as exc:
            raise _unavailable(endpoint, "call to", exc) from exc
        finally:
            self._release(endpoint, channel)

    async def _aio_stream(
        self,
        endpoint: Endpoint,
        method: str,
        payload: bytes,
        decode: Callable[[bytes], Rsp],
        send_channel: trio.MemorySendChannel[Rsp],
        connect_timeout: float | None,
        metadata: Mapping[str, str] | None,
    ) -> None:
        channel = self._acquire(endpoint)
        try:
            await self._connect(endpoint, channel, connect_timeout)
            stream = channel.request(
                method, Cardinality.UNARY_STREAM, bytes, bytes, metadata=dict(metadata or {})
            )
            async with stream:
                await stream.send_message(payload, end=True)
                while (data := await stream.recv_message()) is not None:
                    assert isinstance(data, bytes)
                    await _deliver(self._loop, send_channel, _decode(decode, data))
        except _ConsumerGone:
            return
        except GRPCError as exc:
            raise GrpcError(int(exc.status.value), exc.message or "") from exc
        except TimeoutError as exc:  # grpclib's deadline (``grpc-timeout``) passed
            raise GrpcError(Code.DEADLINE_EXCEEDED, "deadline exceeded") from exc
        except (StreamTerminatedError, ProtocolError, OSError) as exc:
            raise _unavailable(endpoint, "stream from", exc) from exc
        finally:
            self._release(endpoint, channel)


async def _deliver(
    loop: asyncio.AbstractEventLoop, send_channel: trio.MemorySendChannel[Rsp], message: Rsp
) -> None:
    """Hand ``message`` to trio: a direct call, unless the consumer is behind."""
    try:
        try:
            send_channel.send_nowait(message)
        except trio.WouldBlock:
            await trio_asyncio.trio_as_aio(send_channel.send, loop=loop)(message)
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        raise _ConsumerGone from exc


def _decode(decode: Callable[[bytes], Rsp], data: bytes) -> Rsp:
    try:
        return decode(data)
    except Exception as exc:
        raise GrpcError(Code.INTERNAL, f"failed to decode message: {exc}") from exc


@contextlib.asynccontextmanager
async def open_bridge() -> AsyncIterator[Bridge]:
    """Open an asyncio loop inside trio and yield a :class:`Bridge` running on it.

    Every call made through the bridge must finish before the block exits; on
    exit the bridge's connections are closed, then the loop.

    Cancellation: the loop closes with the block; calls still running are cancelled.
    """
    async with trio_asyncio.open_loop() as loop:
        bridge = Bridge(loop)
        try:
            yield bridge
        finally:
            bridge.aclose_all()


__all__ = ["RAW", "Bridge", "Codec", "Endpoint", "open_bridge"]
