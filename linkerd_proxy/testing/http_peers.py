"""HTTP attack clients and a recording backend for the hardening tests.

Modes of ``python -m linkerd_proxy.testing.peers`` (see :mod:`.peers`), run inside
a pod namespace on either side of the real proxy (HARDENING.md section 6). Like
the other peers they use blocking sockets (or one ``selectors`` loop) so that they
share nothing with the proxy under test, and each is bounded in time and count:

    slowloris --addr A --conns N --prefix TEXT --interval S --duration T
        Open N connections, send ``prefix`` on each (a request line and the start
        of a header), then one more header byte per connection every S seconds.
        Print when the peer closed each connection (seconds after its prefix).
    raw --addr A --file F [--timeout S]
        Send the bytes of F (while reading), read until the peer closes or S
        seconds pass; print the status codes seen, whether the peer closed, and
        what came back.
    keepalive --addr A --path P --pause S
        Two HTTP/1.1 requests on one connection, S seconds apart; print both
        statuses (or where it failed).
    h2-streams --addr A --streams N [--path P] [--header-bytes B] [--then-path Q]
        HTTP/2 with prior knowledge: open N streams at once (before the server's
        SETTINGS are read, as a client racing them would), optionally with a
        header of B bytes; then, if given, one more stream to Q once the first
        ones have been answered or reset. Print the advertised
        MAX_CONCURRENT_STREAMS, statuses and reset codes.
    record-server --port P --log FILE
        An HTTP/1.1 backend that frames requests itself (Content-Length or
        chunked, nothing else) and logs each one as a JSON line (connection
        number, request line, headers, body length and sha256), answering 200
        "ok" to each. Anything it cannot frame is logged as an error and the
        connection closed.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import re
import selectors
import socket
import threading
import time
from typing import Any

MODES = ("slowloris", "raw", "keepalive", "h2-streams", "record-server")
_STATUS = re.compile(rb"HTTP/1\.[01] (\d{3})")


def _split(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


def _print(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


# --- slowloris --------------------------------------------------------------------


def slowloris(addr: str, conns: int, prefix: bytes, interval: float, duration: float) -> int:
    sel = selectors.DefaultSelector()
    started: dict[socket.socket, float] = {}
    closed_after: list[float] = []
    answered = 0
    for _ in range(conns):
        sock = socket.create_connection(_split(addr), timeout=5)
        sock.sendall(prefix)
        sock.setblocking(False)
        started[sock] = time.monotonic()
        sel.register(sock, selectors.EVENT_READ)
    deadline = time.monotonic() + duration
    next_byte = time.monotonic() + interval
    while started and time.monotonic() < deadline:
        timeout = max(0.0, min(next_byte, deadline) - time.monotonic())
        for key, _ in sel.select(timeout):
            ready = key.fileobj
            assert isinstance(ready, socket.socket)
            try:
                data = ready.recv(65536)
            except OSError:
                data = b""
            if data:
                answered += 1
                continue
            closed_after.append(time.monotonic() - started.pop(ready))
            sel.unregister(ready)
            ready.close()
        if time.monotonic() >= next_byte:
            next_byte += interval
            for sock in list(started):
                with contextlib.suppress(OSError):  # the read side reports a close
                    sock.send(b"a")
    for sock in started:
        sock.close()
    _print(
        {
            "conns": conns,
            "closed": len(closed_after),
            "still_open": len(started),
            "answered": answered,
            "min_close": round(min(closed_after, default=0.0), 3),
            "max_close": round(max(closed_after, default=0.0), 3),
        }
    )
    return 0


# --- raw requests -----------------------------------------------------------------


def raw(addr: str, path: str, timeout: float) -> int:
    with open(path, "rb") as f:
        data = f.read()
    sock = socket.create_connection(_split(addr), timeout=timeout)
    send_error: list[str] = []

    def sender() -> None:
        try:
            sock.sendall(data)
        except OSError as e:
            send_error.append(repr(e))

    start = time.monotonic()
    t = threading.Thread(target=sender, daemon=True)
    t.start()
    received = bytearray()
    closed = False
    read_error = ""
    try:
        while len(received) < 1 << 20:
            chunk = sock.recv(65536)
            if not chunk:
                closed = True
                break
            received.extend(chunk)
    except TimeoutError:
        pass
    except OSError as e:  # a reset also means the proxy closed the connection
        closed, read_error = True, repr(e)
    t.join(1)
    sock.close()
    _print(
        {
            "statuses": [int(m) for m in _STATUS.findall(bytes(received))],
            "closed": closed,
            "seconds": round(time.monotonic() - start, 3),
            "received": received[:4096].decode("latin-1"),
            "send_error": send_error,
            "read_error": read_error,
        }
    )
    return 0


def _read_response(sock: socket.socket, buf: bytearray) -> int:
    """Read one response with a Content-Length body from ``sock``; its status."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before a response head")
        buf.extend(chunk)
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    match = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    length = int(match.group(1)) if match else 0
    body = bytearray(rest)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed in a response body")
        body.extend(chunk)
    buf[:] = body[length:]
    status = _STATUS.match(head)
    return int(status.group(1)) if status else 0


def keepalive(addr: str, path: str, pause: float, timeout: float) -> int:
    host, _ = _split(addr)
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    sock = socket.create_connection(_split(addr), timeout=timeout)
    buf = bytearray()
    statuses: list[int] = []
    error = ""
    try:
        for i in range(2):
            if i:
                time.sleep(pause)
            sock.sendall(request)
            statuses.append(_read_response(sock, buf))
    except OSError as e:
        error = repr(e)
    sock.close()
    _print({"statuses": statuses, "error": error, "pause": pause})
    return 0


# --- HTTP/2 -------------------------------------------------------------------------


def _code(code: object) -> str:
    """An HTTP/2 error code's name (h2 gives an ``ErrorCodes`` or a plain int)."""
    return str(getattr(code, "name", code))


def h2_streams(
    addr: str, streams: int, path: str, header_bytes: int, then_path: str, timeout: float
) -> int:
    import h2.config
    import h2.connection
    import h2.events
    import h2.settings

    host, _ = _split(addr)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sock = socket.create_connection(_split(addr), timeout=timeout)

    def headers(p: str, extra: int) -> list[tuple[str, str]]:
        fields = [(":method", "GET"), (":scheme", "http"), (":authority", host), (":path", p)]
        return fields + ([("x-big", "b" * extra)] if extra else [])

    # All of the first batch goes out before the server's SETTINGS are read.
    first = [conn.get_next_available_stream_id() + 2 * i for i in range(streams)]
    for sid in first:
        conn.send_headers(sid, headers(path, header_bytes), end_stream=True)
    sock.sendall(conn.data_to_send())
    outcome: dict[int, str] = {}
    advertised: int | None = None
    goaway: str | None = None
    then_id: int | None = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and goaway is None:
        done = sum(1 for s in first if s in outcome)
        if then_path and then_id is None and done == len(first):
            then_id = conn.get_next_available_stream_id()
            conn.send_headers(then_id, headers(then_path, 0), end_stream=True)
        elif (then_id is not None and then_id in outcome) or (not then_path and done == len(first)):
            break
        sock.sendall(conn.data_to_send())
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = sock.recv(65536)
        except TimeoutError:
            break
        if not data:
            goaway = goaway or "closed"
            break
        for ev in conn.receive_data(data):
            if isinstance(ev, h2.events.RemoteSettingsChanged):
                for code, change in ev.changed_settings.items():
                    if code == h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS:
                        advertised = change.new_value
            elif isinstance(ev, h2.events.ResponseReceived):
                status = dict(ev.headers).get(b":status", b"?").decode()
                outcome[ev.stream_id] = f"status {status}"
            elif isinstance(ev, h2.events.StreamReset):
                outcome.setdefault(ev.stream_id, f"reset {_code(ev.error_code)}")
            elif isinstance(ev, h2.events.ConnectionTerminated):
                goaway = _code(ev.error_code)
            elif isinstance(ev, h2.events.DataReceived):
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
    sock.close()
    counts: dict[str, int] = {}
    for sid in first:
        key = outcome.get(sid, "pending")
        counts[key] = counts.get(key, 0) + 1
    _print(
        {
            "max_concurrent_streams": advertised,
            "first": counts,
            "then": outcome.get(then_id, "pending") if then_id is not None else None,
            "goaway": goaway,
        }
    )
    return 0


# --- the recording backend ------------------------------------------------------------


def _recv_until(conn: socket.socket, buf: bytearray, marker: bytes, limit: int) -> bytes:
    while marker not in buf:
        if len(buf) > limit:
            raise ValueError("too long")
        chunk = conn.recv(65536)
        if not chunk:
            raise EOFError
        buf.extend(chunk)
    out, _, rest = bytes(buf).partition(marker)
    buf[:] = rest
    return out


def _recv_exact(conn: socket.socket, buf: bytearray, n: int) -> bytes:
    while len(buf) < n:
        chunk = conn.recv(65536)
        if not chunk:
            raise EOFError
        buf.extend(chunk)
    out = bytes(buf[:n])
    del buf[:n]
    return out


def _chunked(conn: socket.socket, buf: bytearray) -> bytes:
    body = bytearray()
    while True:
        size = int(_recv_until(conn, buf, b"\r\n", 64).split(b";")[0], 16)
        if size == 0:
            while _recv_until(conn, buf, b"\r\n", 64 * 1024):  # trailers
                pass
            return bytes(body)
        body.extend(_recv_exact(conn, buf, size))
        if _recv_exact(conn, buf, 2) != b"\r\n":
            raise ValueError("chunk not followed by CRLF")


def _record_conn(conn: socket.socket, number: int, log: Any, lock: threading.Lock) -> None:
    buf = bytearray()
    with conn:
        while True:
            entry: dict[str, Any] = {"conn": number}
            try:
                head = _recv_until(conn, buf, b"\r\n\r\n", 1 << 20).decode("latin-1")
                line, *fields = head.split("\r\n")
                headers = [f.split(":", 1) for f in fields]
                names = [h[0].strip().lower() for h in headers]
                entry.update(request_line=line, headers=[[k, v.strip()] for k, v in headers])
                if "transfer-encoding" in names:
                    body = _chunked(conn, buf)
                else:
                    cl = [v for k, v in headers if k.strip().lower() == "content-length"]
                    body = _recv_exact(conn, buf, int(cl[0])) if cl else b""
                entry.update(body_len=len(body), body_sha256=hashlib.sha256(body).hexdigest())
            except EOFError:
                return
            except (ValueError, IndexError, OSError) as e:
                entry["error"] = repr(e)
            with lock:
                log.write(json.dumps(entry) + "\n")
                log.flush()
            if "error" in entry:
                return
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")


def record_server(port: int, log_path: str) -> None:
    srv = socket.create_server(("0.0.0.0", port), backlog=128)
    lock = threading.Lock()
    log = open(log_path, "a")  # noqa: SIM115 (open for the life of the process)
    _print({"listening": port})
    number = 0
    while True:
        conn, _ = srv.accept()
        number += 1
        threading.Thread(target=_record_conn, args=(conn, number, log, lock), daemon=True).start()


# --- wiring -------------------------------------------------------------------------


def add_parsers(sub: Any) -> None:
    """Add this module's modes to the ``peers`` command's subparsers."""
    s = sub.add_parser("slowloris")
    s.add_argument("--addr", required=True)
    s.add_argument("--conns", type=int, default=100)
    s.add_argument("--prefix", default="GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    s.add_argument("--interval", type=float, default=2.0)
    s.add_argument("--duration", type=float, default=15.0)
    r = sub.add_parser("raw")
    r.add_argument("--addr", required=True)
    r.add_argument("--file", required=True)
    r.add_argument("--timeout", type=float, default=5.0)
    k = sub.add_parser("keepalive")
    k.add_argument("--addr", required=True)
    k.add_argument("--path", default="/ok")
    k.add_argument("--pause", type=float, required=True)
    k.add_argument("--timeout", type=float, default=10.0)
    h = sub.add_parser("h2-streams")
    h.add_argument("--addr", required=True)
    h.add_argument("--streams", type=int, default=1)
    h.add_argument("--path", default="/ok")
    h.add_argument("--header-bytes", type=int, default=0)
    h.add_argument("--then-path", default="")
    h.add_argument("--timeout", type=float, default=10.0)
    c = sub.add_parser("record-server")
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--log", required=True)


def run(args: argparse.Namespace) -> int:
    """Run the mode ``args.mode`` (one of :data:`MODES`)."""
    if args.mode == "slowloris":
        prefix = args.prefix.encode().decode("unicode_escape").encode("latin-1")
        return slowloris(args.addr, args.conns, prefix, args.interval, args.duration)
    if args.mode == "raw":
        return raw(args.addr, args.file, args.timeout)
    if args.mode == "keepalive":
        return keepalive(args.addr, args.path, args.pause, args.timeout)
    if args.mode == "h2-streams":
        return h2_streams(
            args.addr, args.streams, args.path, args.header_bytes, args.then_path, args.timeout
        )
    record_server(args.port, args.log)
    return 0
