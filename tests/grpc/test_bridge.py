"""The grpclib bridge against real gRPC servers on loopback (grpclib and grpcio)."""

from __future__ import annotations

import asyncio
import ipaddress
from concurrent import futures
from typing import Any

import grpc
import pytest
import trio
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.server import Stream

from linkerd_proxy.addrs import SocketAddr
from linkerd_proxy.errors import GrpcError
from linkerd_proxy.grpc.bridge import RAW, Bridge, Codec, Endpoint
from linkerd_proxy.grpc.status import Code

STREAM = "/test.Svc/Stream"
UNARY = "/test.Svc/Unary"
LOCAL = ipaddress.IPv4Address("127.0.0.1")


def endpoint(port: int) -> Endpoint:
    addr = SocketAddr(LOCAL, port)
    return Endpoint(addr=addr, authority=str(addr))


async def collect(bridge: Bridge, ep: Endpoint, request: bytes, buffer: int = 0) -> list[bytes]:
    send, recv = trio.open_memory_channel[bytes](buffer)
    got: list[bytes] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bridge.stream, ep, STREAM, request, RAW, send)
        async with recv:
            async for message in recv:
                got.append(message)
    return got


async def test_stream_delivers_every_message_in_order(servers: Any, bridge: Bridge) -> None:
    async def handler(stream: Stream[Any, Any]) -> None:
        request = await stream.recv_message()
        for i in range(200):
            await stream.send_message(request + b"-%d" % i)

    srv = await servers.start(stream=handler)
    with trio.fail_after(5):
        # An unbuffered channel makes most deliveries wait for the consumer,
        # so both the direct and the waiting path carry messages.
        got = await collect(bridge, endpoint(srv.port), b"req", buffer=0)
    assert got == [b"req-%d" % i for i in range(200)]


async def test_stream_server_error_maps_to_grpc_error(servers: Any, bridge: Bridge) -> None:
    async def handler(stream: Stream[Any, Any]) -> None:
        await stream.recv_message()
        await stream.send_message(b"one")
        raise GRPCError(Status.NOT_FOUND, "no such thing")

    srv = await servers.start(stream=handler)
    send, recv = trio.open_memory_channel[bytes](10)
    with trio.fail_after(5):
        with pytest.raises(GrpcError) as info:
            await bridge.stream(endpoint(srv.port), STREAM, b"", RAW, send)
        assert info.value.status == Code.NOT_FOUND
        assert info.value.message == "no such thing"
        # The message before the error was delivered, and the channel closed.
        assert [m async for m in recv] == [b"one"]


async def test_unary_round_trip_and_errors(servers: Any, bridge: Bridge) -> None:
    async def handler(stream: Stream[Any, Any]) -> None:
        request = await stream.recv_message()
        if request == b"fail":
            raise GRPCError(Status.PERMISSION_DENIED, "nope")
        if request == b"slow":
            await asyncio.sleep(10)
        await stream.send_message(request[::-1])

    srv = await servers.start(unary=handler)
    ep = endpoint(srv.port)
    with trio.fail_after(5):
        assert await bridge.unary(ep, UNARY, b"abc", RAW) == b"cba"
        with pytest.raises(GrpcError) as info:
            await bridge.unary(ep, UNARY, b"fail", RAW)
        assert info.value.status == Code.PERMISSION_DENIED
        with pytest.raises(GrpcError) as info:
            await bridge.unary(ep, UNARY, b"slow", RAW, grpc_timeout=0.05)
        assert info.value.status == Code.DEADLINE_EXCEEDED


async def test_codec_encodes_and_decode_failure_is_internal(servers: Any, bridge: Bridge) -> None:
    async def handler(stream: Stream[Any, Any]) -> None:
        request = await stream.recv_message()
        await stream.send_message(request)

    srv = await servers.start(unary=handler)
    ints: Codec[int, int] = Codec(lambda n: str(n).encode(), lambda b: int(b))
    with trio.fail_after(5):
        assert await bridge.unary(endpoint(srv.port), UNARY, 42, ints) == 42
        bad: Codec[bytes, int] = Codec(lambda b: b, lambda b: int(b))
        with pytest.raises(GrpcError) as info:
            await bridge.unary(endpoint(srv.port), UNARY, b"x", bad)
        assert info.value.status == Code.INTERNAL


async def test_refused_connection_is_unavailable(bridge: Bridge) -> None:
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connections are refused
        send, _recv = trio.open_memory_channel[bytes](1)
        with trio.fail_after(5), pytest.raises(GrpcError) as info:
            await bridge.stream(endpoint(port), STREAM, b"", RAW, send, connect_timeout=1.0)
    assert info.value.status == Code.UNAVAILABLE
    assert str(port) in info.value.message


async def test_trio_cancellation_resets_the_server_stream(servers: Any, bridge: Bridge) -> None:
    started = trio.Event()
    server_cancelled = trio.Event()

    async def handler(stream: Stream[Any, Any]) -> None:
        await stream.recv_message()
        await stream.send_message(b"first")
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            server_cancelled.set()
            raise

    srv = await servers.start(stream=handler)
    send, recv = trio.open_memory_channel[bytes](10)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(bridge.stream, endpoint(srv.port), STREAM, b"", RAW, send)
            assert await recv.receive() == b"first"
            await started.wait()
            nursery.cancel_scope.cancel()
        await server_cancelled.wait()


async def test_closed_consumer_ends_the_stream(servers: Any, bridge: Bridge) -> None:
    server_cancelled = trio.Event()

    async def handler(stream: Stream[Any, Any]) -> None:
        await stream.recv_message()
        try:
            for i in range(10_000):
                await stream.send_message(b"%d" % i)
                await asyncio.sleep(0.001)
        except asyncio.CancelledError:
            server_cancelled.set()
            raise

    srv = await servers.start(stream=handler)
    send, recv = trio.open_memory_channel[bytes](0)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:

            async def consume_two() -> None:
                async with recv:
                    assert await recv.receive() == b"0"
                    assert await recv.receive() == b"1"

            nursery.start_soon(consume_two)
            # Returns normally: the consumer went away, which is not a failure.
            await bridge.stream(endpoint(srv.port), STREAM, b"", RAW, send)
        await server_cancelled.wait()


async def test_unary_interop_with_grpcio_server(bridge: Bridge) -> None:
    def reverse(request: bytes, context: Any) -> bytes:
        if request == b"bad":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad request")
        return request[::-1]

    def count(request: bytes, context: Any) -> Any:
        for i in range(int(request)):
            yield b"%d" % i

    handler = grpc.method_handlers_generic_handler(
        "test.Svc",
        {
            "Unary": grpc.unary_unary_rpc_method_handler(reverse),
            "Stream": grpc.unary_stream_rpc_method_handler(count),
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        ep = endpoint(port)
        with trio.fail_after(5):
            assert await bridge.unary(ep, UNARY, b"hello", RAW) == b"olleh"
            with pytest.raises(GrpcError) as info:
                await bridge.unary(ep, UNARY, b"bad", RAW)
            assert info.value.status == Code.INVALID_ARGUMENT
            assert info.value.message == "bad request"
            with pytest.raises(GrpcError) as info:
                await bridge.unary(ep, "/test.Svc/Missing", b"", RAW)
            assert info.value.status == Code.UNIMPLEMENTED
            assert await collect(bridge, ep, b"5", buffer=10) == [b"0", b"1", b"2", b"3", b"4"]
    finally:
        server.stop(grace=None)


async def test_retired_endpoint_closes_its_connection_after_the_last_call(
    servers: Any, bridge: Bridge
) -> None:
    connections: list[object] = []

    async def handler(stream: Stream[Any, Any]) -> None:
        connections.append(stream._stream.connection)  # the server-side h2 connection
        request = await stream.recv_message()
        await stream.send_message(request)

    srv = await servers.start(unary=handler)
    ep = endpoint(srv.port)
    with trio.fail_after(5):
        await bridge.unary(ep, UNARY, b"a", RAW)
        await bridge.unary(ep, UNARY, b"b", RAW)
        bridge.retire(ep)
        await bridge.unary(ep, UNARY, b"c", RAW)
    # The first two calls shared a connection; after retirement a new one is made.
    assert connections[0] is connections[1]
    assert connections[2] is not connections[0]
