"""Small load helpers the benchmark runs inside the pod namespaces.

This file is executed as a script (``python bench/tools.py MODE ...``) through
``ip netns exec``, so it imports nothing but the standard library and nothing from
the project: the helpers must not share code with the proxy under test. They use
blocking sockets, and every wait is bounded.

Modes:
    wait --addr HOST:PORT [--timeout S]
        Poll until a TCP connect to the address succeeds; exit 0, or 1 on timeout.
    sink --port P
        Accept connections forever; read and discard each until EOF, then close it.
    send --addr HOST:PORT --bytes N [--timeout S]
        Connect, send N zero bytes, shut down the write side, wait for the peer's
        EOF and print a JSON line ``{"bytes": N, "seconds": S}``.
    hold --addr HOST:PORT --count N [--path P] [--timeout S]
        Open N keep-alive connections, make one ``GET`` on each, print a JSON line
        ``{"held": N}`` and keep them open until standard input closes (or the
        timeout passes); exit non-zero if a request failed.
"""

from __future__ import annotations

import argparse
import json
import resource
import socket
import sys
import threading
import time

CHUNK = 1 << 20


def _split(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host, int(port)


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def wait(addr: str, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(_split(addr), timeout=1.0):
                return 0
        except OSError:
            time.sleep(0.05)
    print(f"{addr} not accepting after {timeout}s", file=sys.stderr)
    return 1


def _drain(conn: socket.socket) -> None:
    buf = bytearray(CHUNK)
    with conn:
        conn.settimeout(300)
        try:
            while conn.recv_into(buf):
                pass
        except OSError:
            pass


def sink(port: int) -> int:
    srv = socket.create_server(("0.0.0.0", port), backlog=128)
    print(json.dumps({"listening": port}), flush=True)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=_drain, args=(conn,), daemon=True).start()


def send(addr: str, nbytes: int, timeout: float) -> int:
    chunk = memoryview(bytes(CHUNK))
    start = time.monotonic()
    with socket.create_connection(_split(addr), timeout=timeout) as conn:
        conn.settimeout(timeout)
        left = nbytes
        while left > 0:
            n = min(left, CHUNK)
            conn.sendall(chunk[:n])
            left -= n
        conn.shutdown(socket.SHUT_WR)
        # The sink closes only after it has read everything: its EOF ends the clock.
        while conn.recv(4096):
            pass
    seconds = time.monotonic() - start
    print(json.dumps({"bytes": nbytes, "seconds": seconds}), flush=True)
    return 0


def _read_response(conn: socket.socket) -> bool:
    data = b""
    while b"\r\n\r\n" not in data:
        got = conn.recv(65536)
        if not got:
            return False
        data += got
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        got = conn.recv(65536)
        if not got:
            return False
        body += got
    return head.startswith(b"HTTP/1.1 200")


def hold(addr: str, count: int, path: str, timeout: float) -> int:
    _raise_nofile()
    host, port = _split(addr)
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: bench-hold\r\n\r\n".encode()
    conns: list[socket.socket] = []
    deadline = time.monotonic() + timeout
    try:
        for _ in range(count):
            if time.monotonic() > deadline:
                print("timed out opening connections", file=sys.stderr)
                return 1
            conn = socket.create_connection((host, port), timeout=10)
            conns.append(conn)
            conn.sendall(request)
            if not _read_response(conn):
                print(f"request {len(conns)} failed", file=sys.stderr)
                return 1
        print(json.dumps({"held": len(conns)}), flush=True)
        # Hold until the harness closes our stdin (bounded by the deadline).
        reader = threading.Thread(target=sys.stdin.read, daemon=True)
        reader.start()
        reader.join(max(0.0, deadline - time.monotonic()))
        return 0
    finally:
        for conn in conns:
            conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("wait")
    p.add_argument("--addr", required=True)
    p.add_argument("--timeout", type=float, default=15.0)
    p = sub.add_parser("sink")
    p.add_argument("--port", type=int, required=True)
    p = sub.add_parser("send")
    p.add_argument("--addr", required=True)
    p.add_argument("--bytes", type=int, required=True)
    p.add_argument("--timeout", type=float, default=60.0)
    p = sub.add_parser("hold")
    p.add_argument("--addr", required=True)
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--path", default="/ok")
    p.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    if args.mode == "wait":
        return wait(args.addr, args.timeout)
    if args.mode == "sink":
        return sink(args.port)
    if args.mode == "send":
        return send(args.addr, args.bytes, args.timeout)
    return hold(args.addr, args.count, args.path, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
