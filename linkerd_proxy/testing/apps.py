"""Real HTTP, gRPC and WebSocket applications to put behind (and in front of) a proxy.

Independent implementations, so that a test of the proxy is not our code talking to
our code: the HTTP server is hypercorn (HTTP/1.1, h2c prior knowledge, WebSocket),
gRPC is grpcio on both ends, the WebSocket client is the ``websockets`` library.
These are test dependencies (``pip install linkerd-proxy[test]``), imported lazily.

Run as ``python -m linkerd_proxy.testing.apps <mode> ...``:

    http-server --port P
        /ok -> "ok"; /bytes/N -> N deterministic bytes, streamed; /echo -> the
        request body back; /headers -> the request headers as JSON; /status/N;
        WebSocket /ws echoes every message. Prints one JSON line when listening.
    grpc-server --port P
        ``test.Echo/Unary`` echoes its message; ``test.Echo/Stream`` answers a
        message "n" with n numbered messages; ``test.Echo/Fail`` aborts with
        UNAVAILABLE.
    grpc-call --addr HOST:PORT --method Unary|Stream|Fail [--message M]
        Prints a JSON line with the replies (or the status code).
    ws-echo --url ws://HOST:PORT/ws --count N
        Sends N messages (text and binary alternately), checks each echo.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

CHUNK = 64 * 1024


def pattern(n: int, seed: int = 11) -> bytes:
    """``n`` deterministic bytes (what ``/bytes/N`` serves)."""
    return random.Random(seed).randbytes(n)


async def _read_body(receive: Receive) -> bytes:
    parts = []
    while True:
        message = await receive()
        parts.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(parts)


async def _sink(scope: Scope, receive: Receive, send: Send) -> None:
    """Read the body slowly, hashing it; answer with the count, digest and time."""
    import trio

    query = urllib.parse.parse_qs(scope.get("query_string", b"").decode())
    delay = float(query.get("delay", ["0.01"])[0])
    every = int(query.get("every", [str(CHUNK)])[0])
    digest = hashlib.sha256()
    total = 0
    since_sleep = 0
    start = time.monotonic()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        chunk = message.get("body", b"")
        digest.update(chunk)
        total += len(chunk)
        since_sleep += len(chunk)
        if delay and since_sleep >= every:
            since_sleep %= every
            await trio.sleep(delay)
        if not message.get("more_body"):
            break
    seconds = round(time.monotonic() - start, 3)
    body = json.dumps({"bytes": total, "sha256": digest.hexdigest(), "seconds": seconds})
    await _respond(send, 200, body.encode(), [(b"content-type", b"application/json")])


class _Stalls:
    """The requests ``/stall`` holds (one server process, one trio run)."""

    held = 0
    release: Any = None  # a trio.Event, made in the server's trio run


async def _stall(scope: Scope, receive: Receive, send: Send) -> None:
    import trio

    query = urllib.parse.parse_qs(scope.get("query_string", b"").decode())
    seconds = float(query.get("seconds", ["30"])[0])
    await _read_body(receive)
    if _Stalls.release is None:
        _Stalls.release = trio.Event()
    release = _Stalls.release
    _Stalls.held += 1
    try:
        with trio.move_on_after(seconds):
            await release.wait()
    finally:
        _Stalls.held -= 1
    await _respond(send, 200, b"released", [(b"content-length", b"8")])


async def _release(receive: Receive, send: Send) -> None:
    await _read_body(receive)
    if _Stalls.release is not None:
        _Stalls.release.set()
        _Stalls.release = None
    await _respond(send, 200, b"ok", [(b"content-length", b"2")])


async def _respond(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def http_app(scope: Scope, receive: Receive, send: Send) -> None:
    """The ASGI application behind ``http-server``."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("bytes") is not None:
                await send({"type": "websocket.send", "bytes": message["bytes"]})
            else:
                await send({"type": "websocket.send", "text": message.get("text", "")})
    path: str = scope["path"]
    proto = f"HTTP/{scope['http_version']}".encode()
    common = [(b"x-served-proto", proto)]
    if path == "/ok":
        await _read_body(receive)
        await _respond(send, 200, b"ok", [(b"content-length", b"2"), *common])
    elif path.startswith("/bytes/"):
        n = int(path.rsplit("/", 1)[1])
        await _read_body(receive)
        data = pattern(n)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(n).encode()), *common],
            }
        )
        for off in range(0, n, CHUNK):
            chunk = data[off : off + CHUNK]
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/echo":
        body = await _read_body(receive)
        await _respond(send, 200, body, [(b"content-length", str(len(body)).encode()), *common])
    elif path == "/headers":
        await _read_body(receive)
        seen = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]]
        body = json.dumps({"headers": seen, "method": scope["method"]}).encode()
        await _respond(send, 200, body, [(b"content-type", b"application/json"), *common])
    elif path == "/sink":
        await _sink(scope, receive, send)
    elif path == "/stall":
        await _stall(scope, receive, send)
    elif path == "/stalled":
        await _read_body(receive)
        body = str(_Stalls.held).encode()
        await _respond(send, 200, body, [(b"content-length", str(len(body)).encode())])
    elif path == "/release":
        await _release(receive, send)
    elif path.startswith("/status/"):
        await _read_body(receive)
        await _respond(send, int(path.rsplit("/", 1)[1]), b"", [(b"content-length", b"0")])
    else:
        await _respond(send, 404, b"", [(b"content-length", b"0")])


def http_server(port: int, host: str = "0.0.0.0") -> None:
    import hypercorn.config
    import hypercorn.trio
    import trio

    config = hypercorn.config.Config()
    config.bind = [f"{host}:{port}"]
    config.keep_alive_timeout = 120
    # hypercorn closes a connection after 1000 requests by default (and, on h2,
    # with a PROTOCOL_ERROR GOAWAY that fails the streams in flight); a proxy
    # multiplexes many clients onto one connection, so lift that limit.
    config.keep_alive_max_requests = 10**9
    config.accesslog = None

    async def main() -> None:
        print(json.dumps({"listening": port}), flush=True)
        await hypercorn.trio.serve(http_app, config)  # type: ignore[arg-type]

    trio.run(main)


# --- gRPC ----------------------------------------------------------------------------


def _identity(data: bytes) -> bytes:
    return data


def grpc_server(port: int) -> None:
    from concurrent import futures

    import grpc

    def unary(request: bytes, context: Any) -> bytes:
        return request

    def stream(request: bytes, context: Any) -> Iterator[bytes]:
        for i in range(int(request.decode() or "0")):
            yield f"message {i}".encode()

    def fail(request: bytes, context: Any) -> bytes:
        context.abort(grpc.StatusCode.UNAVAILABLE, "told to fail")
        return b""

    handler = grpc.method_handlers_generic_handler(
        "test.Echo",
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary, _identity, _identity),
            "Stream": grpc.unary_stream_rpc_method_handler(stream, _identity, _identity),
            "Fail": grpc.unary_unary_rpc_method_handler(fail, _identity, _identity),
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"0.0.0.0:{port}")
    server.start()
    print(json.dumps({"listening": port}), flush=True)
    server.wait_for_termination()


def grpc_call(addr: str, method: str, message: str, timeout: float) -> int:
    import grpc

    with grpc.insecure_channel(addr) as channel:
        path = f"/test.Echo/{method}"
        try:
            if method == "Stream":
                call = channel.unary_stream(path, _identity, _identity)
                replies = [r.decode() for r in call(message.encode(), timeout=timeout)]
            else:
                call = channel.unary_unary(path, _identity, _identity)
                replies = [call(message.encode(), timeout=timeout).decode()]
            print(json.dumps({"ok": True, "code": "OK", "replies": replies}), flush=True)
            return 0
        except grpc.RpcError as e:
            code = e.code().name if hasattr(e, "code") else "UNKNOWN"
            print(json.dumps({"ok": False, "code": code, "details": str(e)}), flush=True)
            return 1


# --- WebSocket -----------------------------------------------------------------------


def ws_echo(url: str, count: int, timeout: float) -> int:
    from websockets.sync.client import connect

    ok = True
    with connect(url, open_timeout=timeout, close_timeout=timeout) as ws:
        for i in range(count):
            message: str | bytes = f"text {i}" if i % 2 == 0 else pattern(1000 + i)
            ws.send(message)
            if ws.recv(timeout=timeout) != message:
                ok = False
    print(json.dumps({"ok": ok, "count": count}), flush=True)
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m linkerd_proxy.testing.apps")
    sub = p.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("http-server")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--host", default="0.0.0.0")
    g = sub.add_parser("grpc-server")
    g.add_argument("--port", type=int, required=True)
    c = sub.add_parser("grpc-call")
    c.add_argument("--addr", required=True)
    c.add_argument("--method", default="Unary")
    c.add_argument("--message", default="hello")
    c.add_argument("--timeout", type=float, default=10.0)
    w = sub.add_parser("ws-echo")
    w.add_argument("--url", required=True)
    w.add_argument("--count", type=int, default=10)
    w.add_argument("--timeout", type=float, default=10.0)
    args = p.parse_args(argv)
    if args.mode == "http-server":
        http_server(args.port, args.host)
        return 0
    if args.mode == "grpc-server":
        grpc_server(args.port)
        return 0
    if args.mode == "grpc-call":
        return grpc_call(args.addr, args.method, args.message, args.timeout)
    return ws_echo(args.url, args.count, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
