"""Tests for the admin server (linkerd_proxy.admin), over real sockets on 127.0.0.1."""

from __future__ import annotations

import gzip
import ipaddress
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import attrs
import httptools
import pytest
import trio
import trio.testing

from linkerd_proxy.addrs import SocketAddr
from linkerd_proxy.admin import (
    AdminServerConfig,
    AdminState,
    Readiness,
    handle_admin_connection,
    serve_admin,
)
from linkerd_proxy.admin.endpoints import peer_is_loopback, split_target
from linkerd_proxy.http.h1.codec import encode_chunk

METRICS = "# HELP up x\n# TYPE up gauge\nup 1\n" + "request_total 42\n" * 200 + "# EOF\n"
TIMEOUT = 5.0


class FakeLogLevel:
    def __init__(self, text: str = "warn,linkerd=info") -> None:
        self.text = text

    def get(self) -> str:
        return self.text

    def set(self, text: str) -> None:
        if "bogus" in text:
            raise ValueError(f"invalid filter directive: {text}")
        self.text = text


def make_state(
    *,
    ready: bool = True,
    shutdown: Callable[[], None] | None = None,
    env: dict[str, str] | None = None,
    render_metrics: Callable[[], str] = lambda: METRICS,
) -> AdminState:
    return AdminState(
        render_metrics=render_metrics,
        readiness=Readiness(ready=ready),
        log_level=FakeLogLevel(),
        shutdown=shutdown,
        env={"HOME": "/root", "LINKERD2_PROXY_LOG": "info"} if env is None else env,
    )


def level_of(state: AdminState) -> str:
    assert state.log_level is not None
    return state.log_level.get()


@asynccontextmanager
async def running_admin(
    state: AdminState,
    *,
    is_loopback: Callable[[SocketAddr | None], bool] = peer_is_loopback,
    config: AdminServerConfig | None = None,
) -> AsyncIterator[int]:
    [listener] = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listener.socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: serve_admin(
                listener, state, config=config, is_loopback=is_loopback, task_status=task_status
            )
        )
        yield port
        nursery.cancel_scope.cancel()


@attrs.define
class Response:
    version: str
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""

    def header(self, name: bytes) -> bytes | None:
        values = [v for k, v in self.headers if k.lower() == name]
        return values[0] if values else None


class ResponseReader:
    """Parses the responses coming back on one client connection."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.parser = httptools.HttpResponseParser(self)
        self.done: list[Response] = []
        self.current: Response | None = None

    def on_message_begin(self) -> None:
        self.current = Response("", 0, [])

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.current is not None
        self.current.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        assert self.current is not None
        self.current.version = self.parser.get_http_version()
        self.current.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        assert self.current is not None
        self.current.body += body

    def on_message_complete(self) -> None:
        assert self.current is not None
        self.done.append(self.current)

    async def read(self, count: int = 1) -> list[Response]:
        with trio.fail_after(TIMEOUT):
            for _ in range(1000):
                if len(self.done) >= count:
                    break
                data = await self.stream.receive_some(65536)
                assert data, "connection closed before the response"
                self.parser.feed_data(data)
        out, self.done = self.done[:count], self.done[count:]
        return out


async def assert_closed(stream: trio.SocketStream) -> None:
    with trio.fail_after(TIMEOUT):
        for _ in range(100):
            try:
                data = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                return
            if not data:
                return
    raise AssertionError("connection still open")


async def request(port: int, raw: bytes) -> Response:
    """Send one raw request on a new connection and read one response."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(raw)
        [response] = await ResponseReader(stream).read()
        return response


def get(path: str, *headers: str, method: str = "GET", body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: localhost", *headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def not_loopback(peer: SocketAddr | None) -> bool:
    return False


# --- simple endpoints -----------------------------------------------------------------


async def test_live() -> None:
    async with running_admin(make_state()) as port:
        rsp = await request(port, get("/live"))
    assert (rsp.status, rsp.body) == (200, b"live\n")
    assert rsp.header(b"content-type") == b"text/plain"
    assert rsp.header(b"content-length") == b"5"
    assert rsp.header(b"date") is not None


async def test_ready_follows_readiness() -> None:
    state = make_state(ready=False)
    async with running_admin(state) as port:
        rsp = await request(port, get("/ready"))
        assert (rsp.status, rsp.body, rsp.header(b"content-type")) == (503, b"not ready\n", None)
        state.readiness.set_ready()
        rsp = await request(port, get("/ready"))
        assert (rsp.status, rsp.body, rsp.header(b"content-type")) == (
            200,
            b"ready\n",
            b"text/plain",
        )


async def test_readiness_wait() -> None:
    readiness = Readiness()
    woke: list[bool] = []

    async def waiter() -> None:
        await readiness.wait()
        woke.append(readiness.is_ready())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        assert not woke and not readiness.is_ready()
        readiness.set_ready()
    assert woke == [True]
    with trio.fail_after(1):
        await Readiness(ready=True).wait()


async def test_unknown_paths_are_404_with_an_empty_body() -> None:
    async with running_admin(make_state()) as port:
        for path in ("/", "/nope", "/live/", "/metricsx"):
            rsp = await request(port, get(path))
            assert (rsp.status, rsp.body) == (404, b""), path


async def test_absolute_form_targets_are_routed_by_path() -> None:
    async with running_admin(make_state()) as port:
        rsp = await request(port, get("http://127.0.0.1:4191/live"))
    assert (rsp.status, rsp.body) == (200, b"live\n")
    assert split_target(b"http://h/env.json?A&B") == ("/env.json", "A&B")
    assert split_target(b"http://h?x") == ("/", "x")
    assert split_target(b"/env.json?") == ("/env.json", "")
    assert split_target(b"/a#frag") == ("/a", None)


# --- /metrics -------------------------------------------------------------------------


async def test_metrics_plain_for_any_method() -> None:
    async with running_admin(make_state()) as port:
        for method in ("GET", "POST", "DELETE"):
            rsp = await request(port, get("/metrics", method=method))
            assert rsp.status == 200
            assert rsp.header(b"content-type") == b"text/plain"
            assert rsp.header(b"content-encoding") is None
            assert rsp.body == METRICS.encode()


async def test_metrics_gzip_round_trip() -> None:
    async with running_admin(make_state()) as port:
        rsp = await request(port, get("/metrics", "Accept-Encoding: deflate, gzip;q=1.0"))
    assert rsp.status == 200
    assert rsp.header(b"content-encoding") == b"gzip"
    assert rsp.header(b"content-type") == b"text/plain"
    assert len(rsp.body) < len(METRICS)
    assert gzip.decompress(rsp.body) == METRICS.encode()


async def test_metrics_head_has_length_but_no_body() -> None:
    async with running_admin(make_state()) as port:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(get("/metrics", "Connection: close", method="HEAD"))
            raw = b""
            with trio.fail_after(TIMEOUT):
                for _ in range(100):
                    data = await stream.receive_some(65536)
                    if not data:
                        break
                    raw += data
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert f"content-length: {len(METRICS)}".encode() in head
    assert rest == b""


async def test_metrics_render_failure_is_500_and_the_server_lives_on() -> None:
    def broken() -> str:
        raise RuntimeError("registry exploded")

    async with running_admin(make_state(render_metrics=broken)) as port:
        rsp = await request(port, get("/metrics"))
        assert (rsp.status, rsp.body) == (500, b"registry exploded")
        rsp = await request(port, get("/live"))
        assert rsp.status == 200


# --- /proxy-log-level -----------------------------------------------------------------


async def test_log_level_get_and_put() -> None:
    state = make_state()
    async with running_admin(state) as port:
        rsp = await request(port, get("/proxy-log-level"))
        assert (rsp.status, rsp.body) == (200, b"warn,linkerd=info")
        rsp = await request(port, get("/proxy-log-level", method="PUT", body=b"debug"))
        assert (rsp.status, rsp.body, rsp.header(b"content-length")) == (204, b"", None)
        assert level_of(state) == "debug"
        rsp = await request(port, get("/proxy-log-level"))
        assert (rsp.status, rsp.body) == (200, b"debug")


async def test_log_level_invalid_filter_is_400_with_the_error() -> None:
    state = make_state()
    async with running_admin(state) as port:
        rsp = await request(port, get("/proxy-log-level", method="PUT", body=b"bogus=="))
        assert (rsp.status, rsp.body) == (400, b"invalid filter directive: bogus==")
        rsp = await request(port, get("/proxy-log-level", method="PUT", body=b"\xff\xfe"))
        assert rsp.status == 400 and rsp.body
    assert level_of(state) == "warn,linkerd=info"


async def test_log_level_other_methods_are_405_with_allow() -> None:
    async with running_admin(make_state()) as port:
        rsp = await request(port, get("/proxy-log-level", method="POST", body=b"x"))
    assert (rsp.status, rsp.body) == (405, b"")
    assert [v for k, v in rsp.headers if k == b"allow"] == [b"GET", b"PUT"]


async def test_log_level_body_limit_is_413() -> None:
    state = make_state()
    async with running_admin(state) as port:
        body = b"a" * (64 * 1024 + 1)
        rsp = await request(port, get("/proxy-log-level", method="PUT", body=body))
        assert rsp.status == 413
        chunked = b"PUT /proxy-log-level HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        chunked += (b"8000\r\n" + b"a" * 0x8000 + b"\r\n") * 3
        rsp = await request(port, chunked)
        assert rsp.status == 413
    assert level_of(state) == "warn,linkerd=info"


async def test_log_level_requires_loopback() -> None:
    state = make_state()
    async with running_admin(state, is_loopback=not_loopback) as port:
        for method in ("GET", "PUT", "DELETE"):
            rsp = await request(port, get("/proxy-log-level", method=method, body=b"trace"))
            assert (rsp.status, rsp.body) == (403, b"Requests are only permitted from localhost.")
            assert rsp.header(b"content-type") == b"text/plain"
    assert level_of(state) == "warn,linkerd=info"


async def test_a_refused_body_does_not_destroy_the_response() -> None:
    # The server answers 413 with most of the body unread. A client that writes
    # its whole request before reading must still be able to finish writing and
    # read the answer: closing at once would make the kernel reset the connection.
    async with running_admin(make_state()) as port:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            head = b"PUT /proxy-log-level HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
            with trio.fail_after(TIMEOUT):
                await stream.send_all(head + encode_chunk(b"a" * 1_000_000))
            [rsp] = await ResponseReader(stream).read()
            assert rsp.status == 413


async def test_log_level_without_a_handle_is_404_after_the_peer_check() -> None:
    state = make_state()
    state.log_level = None
    async with running_admin(state) as port:
        rsp = await request(port, get("/proxy-log-level"))
        assert (rsp.status, rsp.body) == (404, b"")
    async with running_admin(state, is_loopback=not_loopback) as port:
        rsp = await request(port, get("/proxy-log-level"))
        assert rsp.status == 403


async def test_expect_100_continue_gets_an_interim_response() -> None:
    state = make_state()
    async with running_admin(state) as port:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(
                b"PUT /proxy-log-level HTTP/1.1\r\nContent-Length: 5\r\n"
                b"Expect: 100-continue\r\n\r\n"
            )
            with trio.fail_after(TIMEOUT):
                interim = await stream.receive_some(65536)
            assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
            await stream.send_all(b"trace")
            [rsp] = await ResponseReader(stream).read()
    assert rsp.status == 204
    assert level_of(state) == "trace"


# --- /env.json ------------------------------------------------------------------------


async def test_env_json_all_and_filtered() -> None:
    env = {"A": "1", "B": "two", "UNI": "h\u00e9", "RAW": "bad\udcff"}
    async with running_admin(make_state(env=env)) as port:
        rsp = await request(port, get("/env.json"))
        assert rsp.status == 200
        assert rsp.header(b"content-type") == b"application/json"
        assert json.loads(rsp.body) == {"A": "1", "B": "two", "UNI": "h\u00e9", "RAW": "bad\ufffd"}
        rsp = await request(port, get("/env.json?B&NOPE&A"))
        assert json.loads(rsp.body) == {"B": "two", "NOPE": None, "A": "1"}
        for accept in ("application/json", "text/html, */*;q=0.1", "application/*"):
            rsp = await request(port, get("/env.json?A", f"Accept: {accept}"))
            assert (rsp.status, json.loads(rsp.body)) == (200, {"A": "1"}), accept


async def test_env_json_refusals() -> None:
    async with running_admin(make_state()) as port:
        rsp = await request(port, get("/env.json?A=1"))
        assert rsp.status == 400
        assert rsp.header(b"content-type") == b"application/json"
        assert json.loads(rsp.body) == {
            "error": "env.json query parameters may not contain key-value pairs",
            "status": 400,
        }
        rsp = await request(port, get("/env.json", method="POST"))
        assert (rsp.status, rsp.body) == (405, b"")
        rsp = await request(port, get("/env.json", method="HEAD"))
        assert rsp.status == 405
        rsp = await request(port, get("/env.json", "Accept: text/html"))
        assert (rsp.status, rsp.body) == (406, b"application/json")
        rsp = await request(port, b"GET /env.json HTTP/1.1\r\nAccept: text/\xff\xfe\r\n\r\n")
        assert rsp.status == 400
        assert json.loads(rsp.body) == {"error": "Accept header must be UTF-8", "status": 400}


# --- /shutdown ------------------------------------------------------------------------


async def test_shutdown_enabled() -> None:
    calls: list[int] = []
    async with running_admin(make_state(shutdown=lambda: calls.append(1))) as port:
        rsp = await request(port, get("/shutdown", method="POST"))
    assert (rsp.status, rsp.body, rsp.header(b"content-type")) == (
        200,
        b"shutdown\n",
        b"text/plain",
    )
    assert calls == [1]


async def test_shutdown_disabled_is_404() -> None:
    async with running_admin(make_state(shutdown=None)) as port:
        rsp = await request(port, get("/shutdown", method="POST"))
    assert (rsp.status, rsp.body) == (404, b"shutdown endpoint is not enabled\n")


async def test_shutdown_checks_method_then_peer_then_enabled() -> None:
    calls: list[int] = []
    async with running_admin(
        make_state(shutdown=lambda: calls.append(1)), is_loopback=not_loopback
    ) as port:
        rsp = await request(port, get("/shutdown"))
        assert (rsp.status, rsp.body) == (405, b"")
        rsp = await request(port, get("/shutdown", method="POST"))
        assert (rsp.status, rsp.body) == (403, b"Requests are only permitted from localhost.")
    async with running_admin(make_state(shutdown=None), is_loopback=not_loopback) as port:
        rsp = await request(port, get("/shutdown", method="POST"))
        assert rsp.status == 403
        rsp = await request(port, get("/shutdown", method="PUT"))
        assert rsp.status == 405
    assert calls == []


async def test_shutdown_trigger_failure_is_500() -> None:
    def dropped() -> None:
        raise RuntimeError("receiver gone")

    async with running_admin(make_state(shutdown=dropped)) as port:
        rsp = await request(port, get("/shutdown", method="POST"))
    assert (rsp.status, rsp.body) == (500, b"shutdown listener dropped\n")


# --- connection handling --------------------------------------------------------------


async def test_keep_alive_serves_sequential_requests_on_one_connection() -> None:
    async with running_admin(make_state()) as port:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            reader = ResponseReader(stream)
            for path, body in (("/live", b"live\n"), ("/ready", b"ready\n"), ("/live", b"live\n")):
                await stream.send_all(get(path))
                [rsp] = await reader.read()
                assert (rsp.status, rsp.body, rsp.header(b"connection")) == (200, body, None)


async def test_pipelined_requests_are_answered_in_order() -> None:
    async with running_admin(make_state()) as port:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(get("/ready") + get("/nope") + get("/live"))
            rsps = await ResponseReader(stream).read(3)
    assert [(r.status, r.body) for r in rsps] == [(200, b"ready\n"), (404, b""), (200, b"live\n")]


async def test_http10_closes_unless_keep_alive() -> None:
    async with running_admin(make_state()) as port:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(b"GET /live HTTP/1.0\r\n\r\nGET /live HTTP/1.0\r\n\r\n")
            reader = ResponseReader(stream)
            [rsp] = await reader.read()
            assert (rsp.version, rsp.status, rsp.body) == ("1.0", 200, b"live\n")
            await assert_closed(stream)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            reader = ResponseReader(stream)
            for _ in range(2):
                await stream.send_all(b"GET /live HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                [rsp] = await reader.read()
                assert rsp.version == "1.0"
                assert rsp.header(b"connection") == b"keep-alive"


async def test_connection_close_is_honoured() -> None:
    async with running_admin(make_state()) as port:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(get("/live", "Connection: close") + get("/live"))
            [rsp] = await ResponseReader(stream).read()
            assert rsp.header(b"connection") == b"close"
            await assert_closed(stream)


async def test_declined_upgrade_closes_after_the_response() -> None:
    async with running_admin(make_state()) as port:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(get("/live", "Upgrade: websocket", "Connection: upgrade"))
            [rsp] = await ResponseReader(stream).read()
            assert (rsp.status, rsp.header(b"connection")) == (200, b"close")
            await assert_closed(stream)


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET /live HTTP/1.1\nHost: a\n\n", 400),
        (b"NOT HTTP AT ALL\r\n\r\n", 400),
        (b"GET /live HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
        (b"GET /live HTTP/1.1\r\nX: " + b"a" * 70_000 + b"\r\n\r\n", 431),
        (b"GET /live HTTP/2.0\r\n\r\n", 505),
        (b"PUT /proxy-log-level HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n", 413),
    ],
)
async def test_bad_requests_get_an_error_and_a_close(raw: bytes, status: int) -> None:
    async with running_admin(make_state()) as port:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(raw)
            [rsp] = await ResponseReader(stream).read()
            assert rsp.status == status
            assert rsp.header(b"connection") == b"close"
            await assert_closed(stream)


async def test_a_bad_connection_does_not_disturb_a_concurrent_one() -> None:
    async with running_admin(make_state()) as port:
        good = await trio.open_tcp_stream("127.0.0.1", port)
        bad = await trio.open_tcp_stream("127.0.0.1", port)
        async with good, bad:
            await good.send_all(b"GET /live HTTP/1.1\r\nHost: a\r\n")
            await bad.send_all(b"\x16\x03\x01\x00\x05garbage\r\n\r\n")
            [rsp] = await ResponseReader(bad).read()
            assert rsp.status == 400
            await assert_closed(bad)
            await good.send_all(b"\r\n")
            [rsp] = await ResponseReader(good).read()
            assert (rsp.status, rsp.body) == (200, b"live\n")


async def test_a_failing_handler_is_contained() -> None:
    class BrokenReadiness(Readiness):
        def is_ready(self) -> bool:
            raise RuntimeError("bug")

    state = make_state()
    state.readiness = BrokenReadiness()
    async with running_admin(state) as port:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(get("/ready") + get("/live"))
            rsps = await ResponseReader(stream).read(2)
        assert [r.status for r in rsps] == [500, 200]
        assert (await request(port, get("/live"))).status == 200


async def test_a_started_request_must_arrive_in_time(autojump_clock: trio.abc.Clock) -> None:
    config = AdminServerConfig(header_read_timeout=10.0)
    async with running_admin(make_state(), config=config) as port:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(b"GET /live HTTP/1.1\r\n")
            await trio.sleep(9)
            await stream.send_all(b"Host: a\r\n")
            start = trio.current_time()
            await assert_closed(stream)
            assert 0 < trio.current_time() - start <= 1.5
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            # The body is held to the same deadline as the head.
            start = trio.current_time()
            await stream.send_all(b"PUT /proxy-log-level HTTP/1.1\r\nContent-Length: 5\r\n\r\nab")
            await trio.sleep(9)
            await stream.send_all(b"c")
            await assert_closed(stream)
            assert 10 <= trio.current_time() - start <= 11


async def test_idle_keep_alive_connections_are_not_cut(autojump_clock: trio.abc.Clock) -> None:
    async with running_admin(make_state()) as port:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            reader = ResponseReader(stream)
            # A request in two pieces, so that its read deadline is armed.
            await stream.send_all(b"GET /live HTTP/1.1\r\n")
            await trio.sleep(1)
            await stream.send_all(b"\r\n")
            assert (await reader.read())[0].status == 200
            await trio.sleep(3600)
            await stream.send_all(get("/live"))
            assert (await reader.read())[0].status == 200


async def test_the_real_loopback_check_admits_127_0_0_1() -> None:
    async with running_admin(make_state()) as port:
        rsp = await request(port, get("/proxy-log-level"))
    assert rsp.status == 200


async def test_a_connection_over_a_memory_stream() -> None:
    # No socket, so no peer address: the localhost-only endpoints are refused.
    client, server = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(handle_admin_connection, server, make_state())
        await client.send_all(get("/proxy-log-level") + get("/live", "Connection: close"))
        received = b""
        with trio.fail_after(TIMEOUT):
            for _ in range(100):
                data = await client.receive_some()
                if not data:
                    break
                received += data
    assert received.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert received.count(b"HTTP/1.1 200 OK\r\n") == 1
    assert received.endswith(b"live\n")


@pytest.mark.parametrize(
    ("ip", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.10.0.3", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("10.0.0.1", False),
        ("::ffff:10.0.0.1", False),
        ("fe80::1", False),
    ],
)
def test_peer_is_loopback(ip: str, loopback: bool) -> None:
    assert peer_is_loopback(SocketAddr(ipaddress.ip_address(ip), 5000)) is loopback


def test_unknown_peer_is_not_loopback() -> None:
    assert peer_is_loopback(None) is False
