"""The transparency acceptance suite (SPEC.md section 9, the reference's transparency.rs).

Every case runs the real proxy in-process (:func:`linkerd_proxy.testing.open_proxy`)
over loopback sockets, standalone: each connection goes to its injected original
destination. Where bytes matter, the client and the application are raw sockets so
that framing is checked byte for byte; HTTP/2 peers are the ``h2`` library driven
by hand.

How the reference's harness maps onto this one:

- ``one_proxy`` (``proxy.inbound``) is the ``inbound`` mode; most cases are also
  run ``outbound``, since standalone both directions carry HTTP/1 the same way.
- ``proxy_to_proxy`` is two proxies: the first one's outbound forwards to the
  second one's inbound, whose original-destination lookup names the application
  (a connection to the inbound port itself would be a *direct* one, refused
  without mTLS). Standalone, the outbound does not upgrade to orig-proto (that
  needs a discovery hint), so HTTP/1 stays HTTP/1 between the proxies; the
  orig-proto cases send the upgraded HTTP/2 request into the second proxy by
  hand, or use the library's own ``Upgrade`` layer as the first proxy would.
- Discovery-only variants (``outbound_tcp_external``: the profile lookup fails;
  ``outbound_opaque_tcp_server_first``: the policy says opaque) become their
  standalone equivalents, documented on each test.

Every wait is bounded: each read through :class:`Peer` has its own deadline and
every loop a count.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
from collections.abc import AsyncIterator, Awaitable, Callable

import attrs
import h2.config
import h2.connection
import h2.events
import pytest
import trio

from linkerd_proxy.addrs import SocketAddr
from linkerd_proxy.app.config import Config
from linkerd_proxy.http.errors import RespondErrors
from linkerd_proxy.http.h1.server import serve_h1
from linkerd_proxy.http.h2 import H2ClientSettings, H2Connection
from linkerd_proxy.http.model import Request, Response
from linkerd_proxy.http.orig_proto import Upgrade
from linkerd_proxy.testing import RunningProxy, open_proxy

LOCALHOST = ipaddress.IPv4Address("127.0.0.1")
HOST = b"transparency.test.svc.cluster.local"
WAIT = 5.0  # the bound on any single wait for the network
MODES = ["inbound", "outbound", "proxy_to_proxy"]
ONE_PROXY = ["inbound", "outbound"]

Handler = Callable[[trio.SocketStream], Awaitable[None]]


def _config(*, opaque_ports: frozenset[int] = frozenset()) -> Config:
    config = Config()
    # Connections a test leaves open must not hold the harness's shutdown for long.
    config = attrs.evolve(config, shutdown_grace_period=0.5)
    inbound = attrs.evolve(
        config.inbound, ports_disable_protocol_detection=opaque_ports, detect_timeout=10.0
    )
    return attrs.evolve(config, inbound=inbound)


# --- raw peers -------------------------------------------------------------------------


@attrs.define
class Message:
    """An HTTP/1 message as it crossed the wire."""

    start: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    raw_head: bytes

    def get(self, name: bytes) -> bytes | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None

    def has(self, name: bytes) -> bool:
        return self.get(name) is not None

    @property
    def status(self) -> int:
        return int(self.start.split(b" ")[1])


def _parse_head(raw: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    lines = raw[:-4].split(b"\r\n")
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.append((name.strip().lower(), value.strip()))
    return lines[0], headers


@attrs.define
class Peer:
    """A raw socket with a read buffer; every read waits at most :data:`WAIT`."""

    stream: trio.SocketStream
    buf: bytearray = attrs.Factory(bytearray)
    eof: bool = False

    async def send(self, data: bytes) -> None:
        with trio.fail_after(WAIT):
            await self.stream.send_all(data)

    async def _fill(self) -> None:
        if self.eof:
            raise EOFError(bytes(self.buf))
        with trio.fail_after(WAIT):
            data = await self.stream.receive_some(65536)
        if not data:
            self.eof = True
            raise EOFError(bytes(self.buf))
        self.buf += data

    async def some(self) -> bytes:
        """What is buffered, else one read (``b""`` at EOF)."""
        if not self.buf:
            try:
                await self._fill()
            except EOFError:
                return b""
        out = bytes(self.buf)
        self.buf.clear()
        return out

    async def until(self, marker: bytes) -> bytes:
        for _ in range(10_000):
            end = self.buf.find(marker)
            if end >= 0:
                out = bytes(self.buf[: end + len(marker)])
                del self.buf[: end + len(marker)]
                return out
            await self._fill()
        raise AssertionError("too many reads")

    async def exactly(self, n: int) -> bytes:
        for _ in range(10_000):
            if len(self.buf) >= n:
                out = bytes(self.buf[:n])
                del self.buf[:n]
                return out
            await self._fill()
        raise AssertionError("too many reads")

    async def to_eof(self) -> bytes:
        for _ in range(10_000):
            try:
                await self._fill()
            except EOFError:
                out = bytes(self.buf)
                self.buf.clear()
                return out
        raise AssertionError("too many reads")

    async def chunked(self) -> bytes:
        """A chunked body, decoded (trailers dropped)."""
        out = b""
        for _ in range(10_000):
            size = int((await self.until(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                for _ in range(100):
                    if await self.until(b"\r\n") == b"\r\n":
                        return out
                raise AssertionError("too many trailers")
            out += (await self.exactly(size + 2))[:-2]
        raise AssertionError("too many chunks")

    async def request(self) -> Message:
        raw = await self.until(b"\r\n\r\n")
        start, headers = _parse_head(raw)
        msg = Message(start, headers, b"", raw)
        if (te := msg.get(b"transfer-encoding")) is not None and b"chunked" in te.lower():
            msg.body = await self.chunked()
        elif (cl := msg.get(b"content-length")) is not None:
            msg.body = await self.exactly(int(cl))
        return msg

    async def response(self, method: bytes = b"GET") -> Message:
        raw = await self.until(b"\r\n\r\n")
        start, headers = _parse_head(raw)
        msg = Message(start, headers, b"", raw)
        status = msg.status
        if method == b"HEAD" or status < 200 or status in (204, 304):
            return msg
        if (te := msg.get(b"transfer-encoding")) is not None and b"chunked" in te.lower():
            msg.body = await self.chunked()
        elif (cl := msg.get(b"content-length")) is not None:
            msg.body = await self.exactly(int(cl))
        else:
            msg.body = await self.to_eof()
        return msg

    async def aclose(self) -> None:
        await self.stream.aclose()


@contextlib.asynccontextmanager
async def connect(addr: SocketAddr) -> AsyncIterator[Peer]:
    with trio.fail_after(WAIT):
        stream = await trio.open_tcp_stream(*addr.to_sockaddr())
    async with stream:
        yield Peer(stream)


async def serve(nursery: trio.Nursery, handler: Handler, host: str = "127.0.0.1") -> SocketAddr:
    """Run ``handler`` per accepted connection; the listener's address."""
    listeners = await nursery.start(functools.partial(trio.serve_tcp, handler, 0, host=host))
    return SocketAddr(ipaddress.ip_address(host), listeners[0].socket.getsockname()[1])


Respond = Callable[[Message], bytes]


@attrs.define
class App:
    """A raw HTTP/1 application: answers each request with ``respond(request)``'s
    bytes, keeps connections alive until the client closes them, and records what
    it saw."""

    respond: Respond
    requests: list[Message] = attrs.Factory(list)
    connections: int = 0

    async def handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        peer = Peer(stream)
        async with stream:
            for _ in range(100):
                try:
                    req = await peer.request()
                except (EOFError, trio.BrokenResourceError, trio.TooSlowError):
                    return
                self.requests.append(req)
                try:
                    await peer.send(self.respond(req))
                except trio.BrokenResourceError:
                    return

    @property
    def last(self) -> Message:
        return self.requests[-1]


def ok(body: bytes = b"", *headers: bytes) -> Respond:
    extra = b"".join(h + b"\r\n" for h in headers)
    raw = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n%s" % (len(body), extra, body)
    return lambda _req: raw


async def serve_app(nursery: trio.Nursery, respond: Respond) -> tuple[App, SocketAddr]:
    app = App(respond)
    return app, await serve(nursery, app.handle)


@contextlib.asynccontextmanager
async def open_path(
    mode: str, app: SocketAddr, config: Config | None = None
) -> AsyncIterator[SocketAddr]:
    """The address a client uses to reach ``app`` through the proxies of ``mode``."""
    config = config or _config()
    if mode == "proxy_to_proxy":
        async with (
            open_proxy(config, orig_dst=app) as second,
            open_proxy(config, orig_dst=second.addrs.inbound) as first,
        ):
            yield first.addrs.outbound[0]
        return
    async with open_proxy(config, orig_dst=app) as proxy:
        yield proxy.addrs.inbound if mode == "inbound" else proxy.addrs.outbound[0]


# --- HTTP/2 peers (the h2 library by hand) ----------------------------------------------


@attrs.define
class H2Result:
    headers: dict[bytes, bytes] = attrs.Factory(dict)
    data: bytes = b""
    reset: int | None = None
    ended: bool = False


async def h2_request(addr: SocketAddr, headers: list[tuple[bytes, bytes]]) -> H2Result:
    """Send one bodiless HTTP/2 request on a new connection; what came back."""
    conn = h2.connection.H2Connection(
        # Unvalidated: some cases send what the h2 library would refuse to.
        h2.config.H2Configuration(
            client_side=True, header_encoding=None, validate_outbound_headers=False
        )
    )
    result = H2Result()
    async with connect(addr) as peer:
        conn.initiate_connection()
        conn.send_headers(1, headers, end_stream=True)
        await peer.send(conn.data_to_send())
        for _ in range(1000):
            data = await peer.some()
            assert data, "connection closed before the stream ended"
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    result.headers = {bytes(k): bytes(v) for k, v in event.headers}
                elif isinstance(event, h2.events.DataReceived):
                    result.data += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, 1)
                elif isinstance(event, h2.events.StreamEnded):
                    result.ended = True
                elif isinstance(event, h2.events.StreamReset):
                    result.reset = event.error_code
            await peer.send(conn.data_to_send())
            if result.ended or result.reset is not None:
                return result
    raise AssertionError("too many reads")


H2Action = Callable[[dict[bytes, bytes]], int | None]  # None: answer 200, else reset code


def h2_app(seen: list[dict[bytes, bytes]], action: H2Action) -> Handler:
    """A raw HTTP/2 application: answers each request 200 (empty) or resets it."""

    async def handle(stream: trio.SocketStream) -> None:
        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(
                client_side=False, header_encoding=None, validate_inbound_headers=False
            )
        )
        peer = Peer(stream)
        async with stream:
            conn.initiate_connection()
            await peer.send(conn.data_to_send())
            for _ in range(1000):
                try:
                    data = await peer.some()
                except (trio.BrokenResourceError, trio.TooSlowError):
                    return
                if not data:
                    return
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        headers = {bytes(k): bytes(v) for k, v in event.headers}
                        seen.append(headers)
                        code = action(headers)
                        if code is None:
                            conn.send_headers(event.stream_id, [(b":status", b"200")], True)
                        else:
                            conn.reset_stream(event.stream_id, code)
                try:
                    await peer.send(conn.data_to_send())
                except trio.BrokenResourceError:
                    return

    return handle


def h2_get(
    authority: bytes | None = HOST, *extra: tuple[bytes, bytes]
) -> list[tuple[bytes, bytes]]:
    headers = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/")]
    if authority is not None:
        headers.insert(2, (b":authority", authority))
    return headers + list(extra)


# --- HTTP/1 and TCP, both directions ------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_http1_get(nursery: trio.Nursery, mode: str) -> None:
    """``outbound_http1``, ``inbound_http1`` and the ``http1_tests`` macro's
    ``inbound_http1``: a plain HTTP/1.1 GET gets the application's answer."""
    app, addr = await serve_app(nursery, ok(b"hello h1"))
    async with open_path(mode, addr) as entry, connect(entry) as client:
        await client.send(b"GET / HTTP/1.1\r\nHost: %s\r\n\r\n" % HOST)
        rsp = await client.response()
    assert (rsp.start, rsp.body) == (b"HTTP/1.1 200 OK", b"hello h1")
    assert app.last.start == b"GET / HTTP/1.1"
    assert app.last.get(b"host") == HOST


TCP_HELLO = b"custom tcp hello\n"
TCP_BYE = b"custom tcp bye"


async def _tcp_hello(stream: trio.SocketStream) -> None:
    peer = Peer(stream)
    async with stream:
        assert await peer.exactly(len(TCP_HELLO)) == TCP_HELLO
        await peer.send(TCP_BYE)
        assert await peer.to_eof() == b""


async def _tcp_exchange(entry: SocketAddr) -> None:
    async with connect(entry) as client:
        await client.send(TCP_HELLO)
        assert await client.exactly(len(TCP_BYE)) == TCP_BYE
        # The client closes first.
        await client.stream.send_eof()
        assert await client.to_eof() == b""


@pytest.mark.parametrize("mode", MODES)
async def test_tcp(nursery: trio.Nursery, mode: str) -> None:
    """``outbound_tcp``, ``inbound_tcp``: a client-speaks-first TCP exchange,
    closed by the client."""
    addr = await serve(nursery, _tcp_hello)
    async with open_path(mode, addr) as entry:
        await _tcp_exchange(entry)


async def test_outbound_tcp_external(nursery: trio.Nursery) -> None:
    """``outbound_tcp_external``: the reference's profile lookup fails with
    InvalidArgument ("outside the cluster") and the proxy forwards to the original
    destination. Standalone there is no lookup, so the case is a destination on
    another address (127.0.0.2, in no configured network) reached the same way."""
    addr = await serve(nursery, _tcp_hello, host="127.0.0.2")
    async with open_path("outbound", addr) as entry:
        await _tcp_exchange(entry)


SERVER_FIRST = b"custom tcp server starts"
CLIENT_SECOND = b"custom tcp client second"


@pytest.mark.parametrize("direction", ONE_PROXY)
async def test_server_speaks_first_on_opaque_port(nursery: trio.Nursery, direction: str) -> None:
    """``inbound_tcp_server_first``, ``inbound_tcp_server_first_no_discovery`` and
    ``outbound_opaque_tcp_server_first``: on a port listed in
    ``INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION`` the proxy connects at once, so the
    server's banner reaches a client that has sent nothing (detection would wait
    its 10 s timeout). Standalone, the outbound honours the same list in place of
    the policy controller's opaque protocol."""
    got = trio.Event()

    async def server_first(stream: trio.SocketStream) -> None:
        peer = Peer(stream)
        async with stream:
            await peer.send(SERVER_FIRST)
            assert await peer.exactly(len(CLIENT_SECOND)) == CLIENT_SECOND
            got.set()

    addr = await serve(nursery, server_first)
    config = _config(opaque_ports=frozenset({addr.port}))
    async with open_path(direction, addr, config) as entry, connect(entry) as client:
        with trio.fail_after(2):  # well under the detect timeout
            assert await client.exactly(len(SERVER_FIRST)) == SERVER_FIRST
        await client.send(CLIENT_SECOND)
        with trio.fail_after(WAIT):
            await got.wait()


@pytest.mark.parametrize("direction", ONE_PROXY)
async def test_tcp_connection_closes_when_client_closes(
    nursery: trio.Nursery, direction: str
) -> None:
    """``tcp_connections_close_if_client_closes``: when the client closes its
    connection, the application's read ends (EOF)."""
    saw_eof = trio.Event()

    async def server(stream: trio.SocketStream) -> None:
        peer = Peer(stream)
        async with stream:
            assert await peer.exactly(len(TCP_HELLO)) == TCP_HELLO
            await peer.send(TCP_BYE)
            assert await peer.to_eof() == b""
            saw_eof.set()

    addr = await serve(nursery, server)
    async with open_path(direction, addr) as entry:
        async with connect(entry) as client:
            await client.send(TCP_HELLO)
            assert await client.exactly(len(TCP_BYE)) == TCP_BYE
        # Closed (not only half-closed) on leaving the block.
        with trio.fail_after(WAIT):
            await saw_eof.wait()


# --- HTTP/1 headers, versions and URIs ------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_hop_by_hop_headers_are_removed(nursery: trio.Nursery, mode: str) -> None:
    """``http1_removes_connection_headers``: ``Connection`` and the headers it
    names, ``Keep-Alive`` and ``Proxy-Connection`` do not cross the proxy, in
    either direction (even when ``Connection`` does not name them)."""
    app, addr = await serve_app(
        nursery,
        ok(
            b"",
            b"x-server-quux: lorem ipsum",
            b"connection: close, x-server-quux",
            b"keep-alive: 500",
            b"proxy-connection: a",
        ),
    )
    async with open_path(mode, addr) as entry, connect(entry) as client:
        await client.send(
            b"GET / HTTP/1.1\r\nHost: %s\r\nx-foo-bar: baz\r\nconnection: x-foo-bar, close\r\n"
            b"keep-alive: 500\r\nproxy-connection: a\r\n\r\n" % HOST
        )
        rsp = await client.response()
    assert rsp.status == 200
    for name in (b"x-foo-bar", b"keep-alive", b"proxy-connection"):
        assert not app.last.has(name), app.last.raw_head
    assert app.last.get(b"connection") in (None, b"keep-alive"), app.last.raw_head
    for name in (b"x-server-quux", b"keep-alive", b"proxy-connection"):
        assert not rsp.has(name), rsp.raw_head


@pytest.mark.parametrize("mode", MODES)
async def test_http10_with_host(nursery: trio.Nursery, mode: str) -> None:
    """``http10_with_host``: an HTTP/1.0 request arrives as HTTP/1.0 with its Host,
    and the HTTP/1.0 response goes back as HTTP/1.0."""
    app, addr = await serve_app(
        nursery, lambda _req: b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok"
    )
    async with open_path(mode, addr) as entry, connect(entry) as client:
        await client.send(b"GET / HTTP/1.0\r\nHost: %s\r\n\r\n" % HOST)
        rsp = await client.response()
    assert rsp.start == b"HTTP/1.0 200 OK"
    assert rsp.body == b"ok"
    assert app.last.start == b"GET / HTTP/1.0"
    assert app.last.get(b"host") == HOST


@pytest.mark.parametrize("direction", ONE_PROXY)
async def test_http10_without_host(nursery: trio.Nursery, direction: str) -> None:
    """``http10_without_host`` (one proxy only, as in the reference: nothing to
    route on between proxies): the application sees HTTP/1.0, ``/`` and no Host."""
    app, addr = await serve_app(
        nursery, lambda _req: b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n"
    )
    async with open_path(direction, addr) as entry, connect(entry) as client:
        await client.send(b"GET / HTTP/1.0\r\n\r\n")
        rsp = await client.response()
    assert rsp.start == b"HTTP/1.0 200 OK"
    assert app.last.start == b"GET / HTTP/1.0"
    assert not app.last.has(b"host"), app.last.raw_head


@pytest.mark.parametrize("mode", MODES)
async def test_absolute_uri_differs_from_host(nursery: trio.Nursery, mode: str) -> None:
    """``http11_absolute_uri_differs_from_host``: neither the absolute URI nor the
    (different) Host header is touched."""
    app, addr = await serve_app(nursery, ok())
    async with open_path(mode, addr) as entry, connect(entry) as client:
        await client.send(b"GET http://%s/ HTTP/1.1\r\nHost: foo.bar\r\n\r\n" % HOST)
        rsp = await client.response()
    assert rsp.start == b"HTTP/1.1 200 OK"
    assert app.last.start == b"GET http://%s/ HTTP/1.1" % HOST
    assert app.last.get(b"host") == b"foo.bar", app.last.raw_head


@pytest.mark.parametrize("mode", MODES)
async def test_l5d_orig_proto_is_not_leaked(nursery: trio.Nursery, mode: str) -> None:
    """``l5d_orig_proto_header_isnt_leaked``: neither the application nor the
    client sees ``l5d-orig-proto``."""
    app, addr = await serve_app(nursery, ok())
    async with open_path(mode, addr) as entry, connect(entry) as client:
        await client.send(b"GET / HTTP/1.1\r\nHost: %s\r\n\r\n" % HOST)
        rsp = await client.response()
    assert rsp.status == 200
    assert not app.last.has(b"l5d-orig-proto")
    assert not rsp.has(b"l5d-orig-proto")


@pytest.mark.parametrize("mode", MODES)
async def test_h2c_upgrade_is_stripped(nursery: trio.Nursery, mode: str) -> None:
    """``http11_upgrade_h2_stripped``: an ``Upgrade: h2c`` request goes on as a
    plain HTTP/1.1 request, without ``Connection``, ``Upgrade`` or
    ``HTTP2-Settings``."""
    app, addr = await serve_app(nursery, ok(b"plain"))
    async with open_path(mode, addr) as entry, connect(entry) as client:
        await client.send(
            b"GET / HTTP/1.1\r\nHost: %s\r\nupgrade: h2c\r\nhttp2-settings: \r\n"
            b"connection: upgrade, http2-settings\r\n\r\n" % HOST
        )
        rsp = await client.response()
    assert (rsp.status, rsp.body) == (200, b"plain")
    for name in (b"upgrade", b"http2-settings"):
        assert not app.last.has(name), app.last.raw_head
    assert app.last.get(b"connection") in (None, b"keep-alive"), app.last.raw_head


# --- upgrades and CONNECT ---------------------------------------------------------------------


UPGRADE_REQ = (
    b"GET /chat HTTP/1.1\r\nHost: %s\r\nConnection: upgrade\r\nUpgrade: chatproto\r\n\r\n" % HOST
)
UPGRADE_RSP = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: chatproto\r\nConnection: upgrade\r\n\r\n"
)
CHAT_REQ = b"[chatproto-c]{send}: hi all\n"
CHAT_RSP = b"[chatproto-s]{recv}: welcome!\n"


@pytest.mark.parametrize("mode", MODES)
async def test_http11_upgrade(nursery: trio.Nursery, mode: str) -> None:
    """``http11_upgrades``: a 101 to ``Upgrade: chatproto`` turns the connection
    into a byte tunnel, both ways."""
    heads: list[bytes] = []

    async def chat(stream: trio.SocketStream) -> None:
        peer = Peer(stream)
        async with stream:
            heads.append(await peer.until(b"\r\n\r\n"))
            await peer.send(UPGRADE_RSP)
            assert await peer.exactly(len(CHAT_REQ)) == CHAT_REQ
            await peer.send(CHAT_RSP)

    addr = await serve(nursery, chat)
    async with open_path(mode, addr) as entry, connect(entry) as client:
        await client.send(UPGRADE_REQ)
        head = await client.until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n"), head
        assert b"\r\nupgrade: chatproto\r\n" in head.lower()
        await client.send(CHAT_REQ)
        assert await client.exactly(len(CHAT_RSP)) == CHAT_RSP
    assert b"\r\nupgrade: chatproto\r\n" in heads[0].lower()


CONNECT_REQ = b"CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (HOST, HOST)
TUNNEL_REQ = b"{send}: hi all\n"
TUNNEL_RSP = b"{recv}: welcome!\n"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "framing", [b"", b"content-length: 0\r\n", b"transfer-encoding: chunked\r\n"]
)
async def test_http11_connect(nursery: trio.Nursery, mode: str, framing: bytes) -> None:
    """``http11_connect`` and ``http11_connect_headers_stripped``: a 2xx to
    ``CONNECT`` opens a tunnel, and the proxy drops the ``Content-Length`` /
    ``Transfer-Encoding`` the server put on it (RFC 7231 4.3.6, linkerd2#8539).
    The target has no port, as in the reference."""
    heads: list[bytes] = []

    async def tunnel(stream: trio.SocketStream) -> None:
        peer = Peer(stream)
        async with stream:
            heads.append(await peer.until(b"\r\n\r\n"))
            await peer.send(b"HTTP/1.1 200 OK\r\n%s\r\n" % framing)
            assert await peer.exactly(len(TUNNEL_REQ)) == TUNNEL_REQ
            await peer.send(TUNNEL_RSP)

    addr = await serve(nursery, tunnel)
    async with open_path(mode, addr) as entry, connect(entry) as client:
        await client.send(CONNECT_REQ)
        head = await client.until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK\r\n"), head
        assert b"content-length" not in head.lower()
        assert b"transfer-encoding" not in head.lower()
        await client.send(TUNNEL_REQ)
        assert await client.exactly(len(TUNNEL_RSP)) == TUNNEL_RSP
    assert heads[0].startswith(b"CONNECT %s HTTP/1.1\r\n" % HOST), heads


@pytest.mark.parametrize("mode", MODES)
async def test_http11_connect_bad_requests(nursery: trio.Nursery, mode: str) -> None:
    """``http11_connect_bad_requests``: CONNECT to anything but an authority, an
    authority-form target without CONNECT, and CONNECT over HTTP/1.0 get 400 from
    the proxy; nothing reaches the application."""
    app, addr = await serve_app(nursery, ok())
    cases = [
        (b"CONNECT %s HTTP/1.1\r\nHost: test\r\n\r\n" % uri, b"HTTP/1.1 400 Bad Request\r\n")
        for uri in (b"/origin-form", b"/", b"http://test/bar", b"http://test", b"*")
    ]
    cases.append((b"GET test HTTP/1.1\r\nHost: test\r\n\r\n", b"HTTP/1.1 400 Bad Request\r\n"))
    cases.append((b"CONNECT test HTTP/1.0\r\nHost: test\r\n\r\n", b"HTTP/1.0 400 Bad Request\r\n"))
    async with open_path(mode, addr) as entry:
        for request, expected in cases:
            async with connect(entry) as client:
                await client.send(request)
                head = await client.until(b"\r\n\r\n")
                assert head.startswith(expected), (request, head)
    assert app.connections == 0


# --- body framing ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_request_body_content_length(nursery: trio.Nursery, mode: str) -> None:
    """``http1_request_with_body_content_length``: a 5-byte body arrives with
    ``content-length: 5`` (not re-chunked)."""
    app, addr = await serve_app(nursery, ok())
    async with open_path(mode, addr) as entry, connect(entry) as client:
        await client.send(b"POST / HTTP/1.1\r\nHost: %s\r\ncontent-length: 5\r\n\r\nhello" % HOST)
        assert (await client.response()).status == 200
    assert app.last.get(b"content-length") == b"5"
    assert not app.last.has(b"transfer-encoding")
    assert app.last.body == b"hello"


@pytest.mark.parametrize("mode", MODES)
async def test_request_and_response_body_chunked(nursery: trio.Nursery, mode: str) -> None:
    """``http1_request_with_body_chunked``: chunked stays chunked both ways."""
    app, addr = await serve_app(
        nursery,
        lambda _req: (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nworld\r\n0\r\n\r\n"
        ),
    )
    async with open_path(mode, addr) as entry, connect(entry) as client:
        await client.send(
            b"POST / HTTP/1.1\r\nHost: %s\r\ntransfer-encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\n\r\n" % HOST
        )
        rsp = await client.response()
    assert app.last.get(b"transfer-encoding") == b"chunked"
    assert not app.last.has(b"content-length")
    assert app.last.body == b"hello"
    assert rsp.get(b"transfer-encoding") == b"chunked"
    assert not rsp.has(b"content-length")
    assert rsp.body == b"world"


METHODS = [b"GET", b"POST", b"PUT", b"DELETE", b"HEAD", b"PATCH"]


@pytest.mark.parametrize("mode", MODES)
async def test_bodiless_requests_get_no_transfer_encoding(nursery: trio.Nursery, mode: str) -> None:
    """``http1_requests_without_body_doesnt_add_transfer_encoding``: a request
    without a body stays without one, whatever the method (one keep-alive
    connection)."""
    app, addr = await serve_app(nursery, ok())
    async with open_path(mode, addr) as entry, connect(entry) as client:
        for method in METHODS:
            await client.send(b"%s / HTTP/1.1\r\nHost: %s\r\n\r\n" % (method, HOST))
            assert (await client.response(method)).status == 200
    assert [r.start.split(b" ")[0] for r in app.requests] == METHODS
    for req in app.requests:
        assert not req.has(b"transfer-encoding"), req.raw_head
        assert req.get(b"content-length") in (None, b"0"), req.raw_head


@pytest.mark.parametrize("mode", MODES)
async def test_content_length_zero_is_preserved(nursery: trio.Nursery, mode: str) -> None:
    """``http1_content_length_zero_is_preserved``: ``content-length: 0`` is kept on
    requests of every method and on the responses (HEAD included)."""
    app, addr = await serve_app(
        nursery, lambda _req: b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
    )
    async with open_path(mode, addr) as entry, connect(entry) as client:
        for method in METHODS:
            await client.send(
                b"%s / HTTP/1.1\r\nHost: %s\r\ncontent-length: 0\r\n\r\n" % (method, HOST)
            )
            rsp = await client.response(method)
            assert rsp.status == 200
            assert rsp.get(b"content-length") == b"0", (method, rsp.raw_head)
    assert len(app.requests) == len(METHODS)
    for req in app.requests:
        assert req.get(b"content-length") == b"0", req.raw_head


@pytest.mark.parametrize("mode", MODES)
async def test_bodiless_responses(nursery: trio.Nursery, mode: str) -> None:
    """``http1_bodyless_responses``: responses to HEAD, and 204 and 304, get no
    ``transfer-encoding`` (and carry no body bytes: the next response on the
    connection parses right after them)."""

    def respond(req: Message) -> bytes:
        status = (req.get(b"x-test-status-requested") or b"200").decode()
        reason = {"200": "OK", "204": "No Content", "304": "Not Modified"}[status]
        return f"HTTP/1.1 {status} {reason}\r\n\r\n".encode()

    app, addr = await serve_app(nursery, respond)
    async with open_path(mode, addr) as entry, connect(entry) as client:
        await client.send(b"HEAD / HTTP/1.1\r\nHost: %s\r\n\r\n" % HOST)
        rsp = await client.response(b"HEAD")
        assert rsp.status == 200
        assert not rsp.has(b"transfer-encoding"), rsp.raw_head
        for status in (b"204", b"304"):
            await client.send(
                b"GET / HTTP/1.1\r\nHost: %s\r\nx-test-status-requested: %s\r\n\r\n"
                % (HOST, status)
            )
            rsp = await client.response()
            assert rsp.status == int(status)
            assert not rsp.has(b"transfer-encoding"), rsp.raw_head
        assert client.buf == b""
    assert len(app.requests) == 3


@pytest.mark.parametrize("mode", MODES)
async def test_head_response_keeps_content_length(nursery: trio.Nursery, mode: str) -> None:
    """``http1_head_responses``: the ``content-length: 55`` of a HEAD response is
    kept and no body follows it."""
    app, addr = await serve_app(
        nursery, lambda _req: b"HTTP/1.1 200 OK\r\ncontent-length: 55\r\n\r\n"
    )
    async with open_path(mode, addr) as entry, connect(entry) as client:
        await client.send(b"HEAD / HTTP/1.1\r\nHost: %s\r\n\r\n" % HOST)
        rsp = await client.response(b"HEAD")
        assert rsp.status == 200
        assert rsp.get(b"content-length") == b"55"
        # The next message on the connection is the next response, no body bytes.
        await client.send(b"HEAD / HTTP/1.1\r\nHost: %s\r\n\r\n" % HOST)
        again = await client.response(b"HEAD")
        assert again.start == b"HTTP/1.1 200 OK"
        assert client.buf == b""
    assert [r.start for r in app.requests] == [b"HEAD / HTTP/1.1"] * 2


@pytest.mark.parametrize("mode", MODES)
async def test_response_until_eof(nursery: trio.Nursery, mode: str) -> None:
    """``http1_response_end_of_file``: an HTTP/1.0 response delimited by the end of
    the connection reaches an HTTP/1.1 client without ``transfer-encoding`` or
    ``content-length``, whole, ended by EOF. (The reference leaves the HTTP/1.1
    variant untested: hyper re-frames it as chunked, as this proxy does.)"""

    async def eof_body(stream: trio.SocketStream) -> None:
        peer = Peer(stream)
        async with stream:
            await peer.until(b"\r\n\r\n")
            await peer.send(b"HTTP/1.0 200 OK\r\n\r\nbody till eof")

    addr = await serve(nursery, eof_body)
    async with open_path(mode, addr) as entry, connect(entry) as client:
        await client.send(b"GET / HTTP/1.1\r\nHost: %s\r\n\r\n" % HOST)
        rsp = await client.response()
    assert rsp.status == 200
    assert not rsp.has(b"transfer-encoding"), rsp.raw_head
    assert not rsp.has(b"content-length"), rsp.raw_head
    assert rsp.body == b"body till eof"


# --- connections per Host, reconnects ------------------------------------------------------


async def test_one_connection_per_host(nursery: trio.Nursery) -> None:
    """``http1_one_connection_per_host``: requests for one Host share a
    connection to the application; each new Host gets its own."""
    app, addr = await serve_app(nursery, ok(b"hello hosts"))
    async with open_path("inbound", addr) as entry, connect(entry) as client:
        for host, expected in [
            (b"foo.bar", 1),
            (b"foo.bar", 1),
            (b"bar.baz", 2),
            (b"bar.baz", 2),
            (b"quuuux.com", 3),
        ]:
            for path in (b"/no-body", b"/body"):
                await client.send(b"GET %s HTTP/1.1\r\nhost: %s\r\n\r\n" % (path, host))
                rsp = await client.response()
                assert rsp.start == b"HTTP/1.1 200 OK"
                assert app.connections == expected, (host, path)


async def test_requests_without_host_have_unique_connections(nursery: trio.Nursery) -> None:
    """``http1_requests_without_host_have_unique_connections``: a request with no
    authority (empty Host) is never sent on a pooled connection."""
    app, addr = await serve_app(nursery, ok(b"unique hosts"))
    async with open_path("inbound", addr) as entry, connect(entry) as client:
        for host, expected in [(b"", 1), (b"", 2), (b"foo.bar", 3), (b"", 4)]:
            await client.send(b"GET / HTTP/1.1\r\nhost: %s\r\n\r\n" % host)
            rsp = await client.response()
            assert rsp.start == b"HTTP/1.1 200 OK"
            assert app.connections == expected, host


async def _scrape_until(proxy: RunningProxy, name: str, labels: dict[str, str]) -> None:
    for _ in range(200):
        scrape = await proxy.scrape()
        if any(True for _ in scrape.find(name, **labels)):
            return
        await trio.sleep(0.01)
    raise AssertionError(f"{name} {labels} never appeared")


async def test_reconnect_after_refused(nursery: trio.Nursery) -> None:
    """``retry_reconnect_errors``: an HTTP/2 request for an application that is
    not listening yet (connection refused) succeeds once it listens, within the
    failfast timeout: the endpoint reconnects with backoff."""
    sock = trio.socket.socket()
    await sock.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
    addr = SocketAddr(LOCALHOST, sock.getsockname()[1])
    seen: list[dict[bytes, bytes]] = []
    result: list[H2Result] = []
    async with open_proxy(_config(), orig_dst=addr) as proxy, trio.open_nursery() as inner:

        async def send() -> None:
            result.append(
                await h2_request(proxy.addrs.inbound, h2_get(b"transparency.example.com"))
            )

        inner.start_soon(send)
        await _scrape_until(proxy, "tcp_open_total", {"direction": "inbound", "peer": "src"})
        await trio.sleep(0.1)  # a few refused attempts
        sock.listen(16)
        nursery.start_soon(
            trio.serve_listeners, h2_app(seen, lambda _h: None), [trio.SocketListener(sock)]
        )
    assert result[0].headers[b":status"] == b"200"
    assert len(seen) == 1


# --- HTTP/2 -----------------------------------------------------------------------------


@pytest.mark.parametrize("direction", ONE_PROXY)
async def test_http2_request_without_authority(nursery: trio.Nursery, direction: str) -> None:
    """``http2_request_without_authority``: an HTTP/2 request with no
    ``:authority`` is served, and reaches the application without one."""
    seen: list[dict[bytes, bytes]] = []
    addr = await serve(nursery, h2_app(seen, lambda _h: None))
    async with open_path(direction, addr) as entry:
        result = await h2_request(entry, h2_get(None))
    assert result.headers[b":status"] == b"200"
    assert result.ended
    assert b":authority" not in seen[0]
    assert seen[0][b":path"] == b"/"


ENHANCE_YOUR_CALM = 0xB


@pytest.mark.parametrize("direction", ONE_PROXY)
async def test_http2_rst_stream_is_propagated(nursery: trio.Nursery, direction: str) -> None:
    """``http2_rst_stream_is_propagated``: the application's RST_STREAM
    (ENHANCE_YOUR_CALM) reaches the client as a reset with the same code."""
    seen: list[dict[bytes, bytes]] = []
    addr = await serve(nursery, h2_app(seen, lambda _h: ENHANCE_YOUR_CALM))
    async with open_path(direction, addr) as entry:
        result = await h2_request(entry, h2_get(b"transparency.example.com"))
    assert result.reset == ENHANCE_YOUR_CALM
    assert not result.headers
    assert len(seen) == 1


# --- orig-proto between proxies ---------------------------------------------------------------


@contextlib.asynccontextmanager
async def _upgrading_hop(upstream: SocketAddr, nursery: trio.Nursery) -> AsyncIterator[SocketAddr]:
    """The first proxy's endpoint as it is wired for an H2-hinted destination:
    HTTP/1 in, ``RespondErrors(Upgrade(h2, h1))``, HTTP/2 out to ``upstream``.
    Standalone the outbound never builds this (no discovery hint), so it is
    assembled here from the library's own layers."""
    async with trio.open_nursery() as background:
        stream = await trio.open_tcp_stream(*upstream.to_sockaddr())
        conn = await H2Connection.open(stream, H2ClientSettings(), background)

        async def no_h1(_req: Request) -> Response:
            raise AssertionError("not upgraded")

        service = RespondErrors(Upgrade(conn, no_h1), emit_headers=True)
        addr = await serve(nursery, lambda s: serve_h1(s, service))
        try:
            yield addr
        finally:
            await conn.aclose()
            background.cancel_scope.cancel()


async def test_orig_proto_downgrade_never_leaks(nursery: trio.Nursery) -> None:
    """``l5d_orig_proto_header_isnt_leaked`` in the reference's proxy-to-proxy
    form (orig-proto between the proxies): an HTTP/2 request carrying
    ``l5d-orig-proto: HTTP/1.1`` into the inbound reaches the application as the
    HTTP/1.1 request it was, without the header; the HTTP/2 response tells the
    upgrading proxy the version (``l5d-orig-proto: HTTP/1.1``), and the upgrading
    side (the library's ``Upgrade``) hands its client an HTTP/1.1 response
    without it. ``; absolute-form`` restores the absolute URI."""
    app, addr = await serve_app(nursery, ok(b"downgraded"))
    async with open_proxy(_config(), orig_dst=addr) as second:
        upgraded = await h2_request(
            second.addrs.inbound, h2_get(HOST, (b"l5d-orig-proto", b"HTTP/1.1"))
        )
        assert upgraded.headers[b":status"] == b"200"
        assert upgraded.headers[b"l5d-orig-proto"] == b"HTTP/1.1"
        assert b"transfer-encoding" not in upgraded.headers
        assert upgraded.data == b"downgraded"
        assert app.last.start == b"GET / HTTP/1.1"
        assert app.last.get(b"host") == HOST
        assert not app.last.has(b"l5d-orig-proto")

        absolute = await h2_request(
            second.addrs.inbound,
            h2_get(HOST, (b"l5d-orig-proto", b"HTTP/1.1; absolute-form")),
        )
        assert absolute.headers[b":status"] == b"200"
        assert app.last.start == b"GET http://%s/ HTTP/1.1" % HOST
        assert not app.last.has(b"l5d-orig-proto")

        async with (
            _upgrading_hop(second.addrs.inbound, nursery) as first,
            connect(first) as client,
        ):
            await client.send(b"GET / HTTP/1.1\r\nHost: %s\r\n\r\n" % HOST)
            rsp = await client.response()
    assert (rsp.start, rsp.body) == (b"HTTP/1.1 200 OK", b"downgraded")
    assert not rsp.has(b"l5d-orig-proto"), rsp.raw_head
    assert not app.last.has(b"l5d-orig-proto")
    assert len(app.requests) == 3


async def test_orig_proto_rst_stream_becomes_502(nursery: trio.Nursery) -> None:
    """``http1_orig_proto_does_not_propagate_rst_stream``: when the peer resets an
    orig-proto upgraded request (here an HTTP/2 server standing in for the inbound
    proxy, as in the reference), the HTTP/1 client gets a 502, not a reset."""
    seen: list[dict[bytes, bytes]] = []
    h2_server = await serve(nursery, h2_app(seen, lambda _h: ENHANCE_YOUR_CALM))
    async with _upgrading_hop(h2_server, nursery) as first, connect(first) as client:
        await client.send(b"GET / HTTP/1.1\r\nHost: %s\r\n\r\n" % HOST)
        rsp = await client.response()
    assert rsp.status == 502
    assert seen[0][b"l5d-orig-proto"] == b"HTTP/1.1"


async def test_proxy_to_proxy_timeout_is_502(nursery: trio.Nursery) -> None:
    """``http1_inbound_timeout``: the application never accepts (bound, not
    listening); through two proxies the client gets 502. Also over orig-proto:
    the inbound's 502 goes back on HTTP/2 as a clean response (linkerd2#10090:
    no ``connection: close`` in HTTP/2)."""
    sock = trio.socket.socket()
    await sock.bind(("127.0.0.1", 0))
    addr = SocketAddr(LOCALHOST, sock.getsockname()[1])
    with sock:
        async with open_path("proxy_to_proxy", addr) as entry, connect(entry) as client:
            await client.send(b"GET / HTTP/1.1\r\nHost: %s\r\n\r\n" % HOST)
            rsp = await client.response()
        assert rsp.status == 502
        async with open_proxy(_config(), orig_dst=addr) as second:
            result = await h2_request(
                second.addrs.inbound, h2_get(HOST, (b"l5d-orig-proto", b"HTTP/1.1"))
            )
    assert result.headers[b":status"] == b"502"
    assert result.ended and result.reset is None
    assert b"connection" not in result.headers
