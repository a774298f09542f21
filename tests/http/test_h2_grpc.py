"""gRPC (grpcio client and server) through a tiny HTTP/2 proxy built on the drivers."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from typing import Any

import pytest
import trio

from .test_h2_support import tiny_proxy

grpc = pytest.importorskip("grpc")


def _unary(request: bytes, context: Any) -> bytes:
    if request == b"missing":
        context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
    return b"echo:" + request


def _stream(request: bytes, context: Any) -> Iterator[bytes]:
    for i in range(int(request)):
        yield b"msg-%d-" % i + b"p" * 1000


def _start_server() -> tuple[Any, int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    handler = grpc.method_handlers_generic_handler(
        "test.Echo",
        {
            "Unary": grpc.unary_unary_rpc_method_handler(_unary),
            "Stream": grpc.unary_stream_rpc_method_handler(_stream),
        },
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def _client_calls(port: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        unary = channel.unary_unary("/test.Echo/Unary")
        stream = channel.unary_stream("/test.Echo/Stream")
        out["unary"] = unary(b"hello", timeout=5)
        out["big"] = unary(b"b" * 300_000, timeout=5)
        try:
            unary(b"missing", timeout=5)
        except grpc.RpcError as exc:
            out["error"] = (exc.code(), exc.details())
        out["stream"] = list(stream(b"200", timeout=5))
    return out


async def test_grpc_unary_and_server_streaming_through_the_proxy() -> None:
    server, port = _start_server()
    try:
        async with tiny_proxy(port) as proxy_port:
            with trio.fail_after(20):
                out = await trio.to_thread.run_sync(_client_calls, proxy_port)
    finally:
        server.stop(None)
    assert out["unary"] == b"echo:hello"
    assert out["big"] == b"echo:" + b"b" * 300_000
    assert out["error"] == (grpc.StatusCode.NOT_FOUND, "no such thing")
    assert len(out["stream"]) == 200
    assert out["stream"][199].startswith(b"msg-199-")
