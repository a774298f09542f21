"""Small TCP applications to put on either side of a proxy in tests.

Run as ``python -m linkerd_proxy.testing.peers <mode> ...`` inside a network
namespace (see :mod:`linkerd_proxy.testing.netns`), these stand for the application
containers of a pod. They use blocking sockets and threads on purpose: they must not
share anything with the proxy under test, and they must be obviously correct.

Modes:
    echo-server --port P [--banner TEXT]
        Accept connections; send the banner first if given (a server-speaks-first
        protocol), then echo every byte back; after the client's EOF, shut down the
        write side. Runs until killed.
    exchange --addr HOST:PORT --bytes N [--chunk-delay S]
        Connect, send N pseudo-random bytes while reading the echo concurrently,
        shut down the write side, read to EOF, and print a JSON line with the
        counts and whether what came back equals what was sent. Exit 0 only if so.
    banner --addr HOST:PORT --expect TEXT [--timeout S]
        Connect without sending, read the banner, print a JSON line with the
        elapsed seconds. Exit 0 only if the banner matched within the timeout.

HTTP attack clients and a recording backend (HARDENING.md section 6), in
:mod:`linkerd_proxy.testing.http_peers`, are further modes of the same command:
``slowloris``, ``raw``, ``keepalive``, ``h2-streams``, ``record-server``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import socket
import sys
import threading
import time


def _split(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


def _serve_one(conn: socket.socket, banner: bytes) -> None:
    with conn:
        if banner:
            conn.sendall(banner)
        while True:
            data = conn.recv(65536)
            if not data:
                break
            conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)


def echo_server(port: int, banner: bytes, host: str = "0.0.0.0") -> None:
    srv = socket.create_server((host, port), reuse_port=False, backlog=128)
    print(json.dumps({"listening": port}), flush=True)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=_serve_one, args=(conn, banner), daemon=True).start()


def payload(n: int, seed: int = 7) -> bytes:
    """``n`` deterministic pseudo-random bytes (the same on both sides)."""
    return random.Random(seed).randbytes(n)


def exchange(addr: str, n: int, chunk_delay: float, timeout: float) -> int:
    data = payload(n)
    sock = socket.create_connection(_split(addr), timeout=timeout)
    received = bytearray()
    errors: list[str] = []

    def reader() -> None:
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    return
                received.extend(chunk)
        except OSError as e:
            errors.append(repr(e))

    t = threading.Thread(target=reader)
    t.start()
    start = time.monotonic()
    step = 65536
    for off in range(0, n, step):
        sock.sendall(data[off : off + step])
        if chunk_delay:
            time.sleep(chunk_delay)
    sock.shutdown(socket.SHUT_WR)
    t.join(timeout)
    sock.close()
    ok = bytes(received) == data and not errors
    print(
        json.dumps(
            {
                "sent": n,
                "received": len(received),
                "ok": ok,
                "sha256": hashlib.sha256(received).hexdigest(),
                "seconds": round(time.monotonic() - start, 3),
                "errors": errors,
            }
        ),
        flush=True,
    )
    return 0 if ok else 1


def banner(addr: str, expect: bytes, timeout: float) -> int:
    start = time.monotonic()
    sock = socket.create_connection(_split(addr), timeout=timeout)
    got = b""
    try:
        while len(got) < len(expect):
            chunk = sock.recv(len(expect) - len(got))
            if not chunk:
                break
            got += chunk
    except TimeoutError:
        pass
    elapsed = time.monotonic() - start
    sock.close()
    ok = got == expect
    print(json.dumps({"ok": ok, "got": got.decode("latin-1"), "seconds": elapsed}), flush=True)
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m linkerd_proxy.testing.peers")
    sub = p.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("echo-server")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--banner", default="")
    s.add_argument("--host", default="0.0.0.0")
    e = sub.add_parser("exchange")
    e.add_argument("--addr", required=True)
    e.add_argument("--bytes", type=int, required=True)
    e.add_argument("--chunk-delay", type=float, default=0.0)
    e.add_argument("--timeout", type=float, default=30.0)
    b = sub.add_parser("banner")
    b.add_argument("--addr", required=True)
    b.add_argument("--expect", required=True)
    b.add_argument("--timeout", type=float, default=5.0)
    from linkerd_proxy.testing import http_peers

    http_peers.add_parsers(sub)
    args = p.parse_args(argv)
    if args.mode in http_peers.MODES:
        return http_peers.run(args)
    if args.mode == "echo-server":
        echo_server(args.port, args.banner.encode(), args.host)
        return 0
    if args.mode == "exchange":
        return exchange(args.addr, args.bytes, args.chunk_delay, args.timeout)
    return banner(args.addr, args.expect.encode(), args.timeout)


if __name__ == "__main__":
    sys.exit(main())
