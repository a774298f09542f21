"""A counting HTTP backend and a closed-loop load generator, for balancing tests.

Part of the public test harness (:mod:`linkerd_proxy.testing`), next to
:mod:`linkerd_proxy.testing.peers`: small, obviously-correct applications with
blocking sockets and threads, run inside pod namespaces as
``python -m linkerd_proxy.testing.load <mode> ...``. They record *when* things
happened (wall-clock ``time.time()``, the same clock in every namespace), so a test
can compare their logs with the moment it changed the control plane's state.

Modes:
    backends --port P [--port P ...] [--delay PORT=SECONDS ...] --log FILE
        An HTTP/1.1 keep-alive server on each port (Content-Length request bodies
        only). Every accepted connection and every request is logged as a JSON
        line ``{"ev": "accept"|"req", "port": P, "t": time}``. Each response is
        200 with the port number as its body, sent after the port's delay (if any).
        Prints ``{"listening": [ports]}`` once all listen; runs until killed.
    load --addr HOST:PORT --conns N --duration S [--rate R] --out FILE
        N threads, each with one keep-alive connection, send ``GET /`` back to
        back (or at most R requests a second per connection) for S seconds. A
        failed request (a status other than 200, or a broken connection) is
        recorded and the connection re-opened. Writes one JSON object to FILE:
        ``{"ok": n, "failed": n, "requests": [[start, end, outcome], ...]}``, where
        the outcome is the response body (the backend's port) for a 200, else
        ``"status NNN"`` or ``"error ..."``; then prints ``{"done": true}``.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import sys
import threading
import time
from typing import IO

_STATUS = re.compile(rb"HTTP/1\.[01] (\d{3})")
_LENGTH = re.compile(rb"(?im)^content-length:\s*(\d+)")


def _split(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


class _Log:
    """One JSON line per event, shared by every thread."""

    def __init__(self, f: IO[str]) -> None:
        self._f = f
        self._lock = threading.Lock()

    def write(self, ev: str, port: int) -> None:
        line = json.dumps({"ev": ev, "port": port, "t": time.time()})
        with self._lock:
            self._f.write(line + "\n")
            self._f.flush()


def _read_head(conn: socket.socket, buf: bytearray) -> bytes | None:
    """The next head (without the blank line), or ``None`` at a clean EOF."""
    while b"\r\n\r\n" not in buf:
        if len(buf) > 1 << 16:
            raise ValueError("head too long")
        chunk = conn.recv(65536)
        if not chunk:
            if buf:
                raise ConnectionError("EOF inside a head")
            return None
        buf.extend(chunk)
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    buf[:] = rest
    return head


def _read_body(conn: socket.socket, buf: bytearray, length: int) -> bytes:
    while len(buf) < length:
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError("EOF inside a body")
        buf.extend(chunk)
    body = bytes(buf[:length])
    del buf[:length]
    return body


def _serve_conn(conn: socket.socket, port: int, delay: float, log: _Log) -> None:
    buf = bytearray()
    body = str(port).encode()
    response = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
    with conn:
        try:
            while (head := _read_head(conn, buf)) is not None:
                match = _LENGTH.search(head)
                _read_body(conn, buf, int(match.group(1)) if match else 0)
                log.write("req", port)
                if delay:
                    time.sleep(delay)
                conn.sendall(response)
        except (OSError, ValueError):
            return


def _accept_loop(srv: socket.socket, port: int, delay: float, log: _Log) -> None:
    while True:
        conn, _ = srv.accept()
        log.write("accept", port)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=_serve_conn, args=(conn, port, delay, log), daemon=True).start()


def backends(ports: list[int], delays: dict[int, float], log_path: str) -> None:
    """Serve every port until killed (see the module docstring)."""
    log = _Log(open(log_path, "a"))  # noqa: SIM115 (open for the life of the process)
    servers = [(socket.create_server(("0.0.0.0", p), backlog=256), p) for p in ports]
    for srv, port in servers:
        args = (srv, port, delays.get(port, 0.0), log)
        threading.Thread(target=_accept_loop, args=args, daemon=True).start()
    print(json.dumps({"listening": ports}), flush=True)
    threading.Event().wait()


def _one_request(conn: socket.socket, request: bytes, buf: bytearray) -> str:
    conn.sendall(request)
    head = _read_head(conn, buf)
    if head is None:
        raise ConnectionError("closed before a response")
    match = _LENGTH.search(head)
    body = _read_body(conn, buf, int(match.group(1)) if match else 0)
    status = _STATUS.match(head)
    code = status.group(1).decode() if status else "???"
    return body.decode("latin-1") if code == "200" else f"status {code}"


def _client(
    addr: str, until: float, interval: float, timeout: float, out: list[list[object]]
) -> None:
    host, _ = _split(addr)
    request = f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    conn: socket.socket | None = None
    buf = bytearray()
    while (start := time.time()) < until:
        outcome: str
        try:
            if conn is None:
                conn = socket.create_connection(_split(addr), timeout=timeout)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                buf = bytearray()
            outcome = _one_request(conn, request, buf)
        except (OSError, ValueError) as e:
            outcome = f"error {e!r}"
        end = time.time()
        out.append([start, end, outcome])
        if outcome.startswith(("error", "status")) and conn is not None:
            conn.close()  # a failed exchange leaves the framing unknown: start afresh
            conn = None
        if interval:
            time.sleep(max(0.0, start + interval - time.time()))
    if conn is not None:
        conn.close()


def load(addr: str, conns: int, duration: float, rate: float, out_path: str) -> int:
    """Run the load (see the module docstring); exit status 0."""
    until = time.time() + duration
    interval = 1.0 / rate if rate else 0.0
    results: list[list[list[object]]] = [[] for _ in range(conns)]
    threads = [
        threading.Thread(target=_client, args=(addr, until, interval, 10.0, results[i]))
        for i in range(conns)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(duration + 30)
    requests = sorted((r for rs in results for r in rs), key=lambda r: float(str(r[0])))
    failed = sum(1 for r in requests if str(r[2]).startswith(("error", "status")))
    with open(out_path, "w") as f:
        json.dump({"ok": len(requests) - failed, "failed": failed, "requests": requests}, f)
    print(json.dumps({"done": True}), flush=True)
    return 0


def _delay(text: str) -> tuple[int, float]:
    port, _, seconds = text.partition("=")
    return int(port), float(seconds)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m linkerd_proxy.testing.load")
    sub = p.add_subparsers(dest="mode", required=True)
    b = sub.add_parser("backends")
    b.add_argument("--port", type=int, action="append", required=True)
    b.add_argument("--delay", type=_delay, action="append", default=[])
    b.add_argument("--log", required=True)
    ld = sub.add_parser("load")
    ld.add_argument("--addr", required=True)
    ld.add_argument("--conns", type=int, default=4)
    ld.add_argument("--duration", type=float, required=True)
    ld.add_argument("--rate", type=float, default=0.0)
    ld.add_argument("--out", required=True)
    args = p.parse_args(argv)
    if args.mode == "backends":
        backends(args.port, dict(args.delay), args.log)
        return 0
    return load(args.addr, args.conns, args.duration, args.rate, args.out)


if __name__ == "__main__":
    sys.exit(main())
