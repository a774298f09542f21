"""Tests for linkerd_proxy.http.errors (synthetic responses) and http.normalize."""

from __future__ import annotations

import pytest
import trio

from linkerd_proxy.errors import (
    ConnectError,
    ConnectTimeout,
    DowngradedH2Error,
    FailFast,
    IdentityRequired,
    LoadShed,
    LoopDetected,
    NoAuthority,
    NoRoute,
    ResponseTimeout,
)
from linkerd_proxy.http.body import BodyError, BytesBody, PipeBody, StreamReset
from linkerd_proxy.http.errors import (
    CloseConnection,
    RespondErrors,
    inbound_error_kind,
    outbound_error_kind,
)
from linkerd_proxy.http.model import Request, Response, get_ext, header
from linkerd_proxy.http.normalize import DefaultAuthority, NormalizeUri, parse_authority
from linkerd_proxy.metrics.errors import OutboundHttpErrorMetrics
from linkerd_proxy.metrics.registry import Registry

GRPC = [(b"content-type", b"application/grpc")]


def failing(exc: BaseException) -> RespondErrors:
    async def svc(req: Request) -> Response:
        raise exc

    return RespondErrors(svc)


CASES = [
    (FailFast(), 504, 4, True),
    (LoadShed(), 503, 14, True),
    (ResponseTimeout(2.0), 504, 4, True),
    (ConnectTimeout("1.2.3.4:80", "timed out"), 504, 4, True),
    (ConnectError("1.2.3.4:80", "refused"), 502, 14, True),
    (ConnectionResetError(104, "reset"), 502, 14, True),
    (BodyError("peer went away"), 502, 14, True),
    (trio.BrokenResourceError("broken"), 502, 14, True),
    (IdentityRequired("request required the identity 'a' but 'b' found"), 502, 14, True),
    (DowngradedH2Error(11, "ENHANCE_YOUR_CALM"), 502, 14, True),
    (NoRoute(), 404, 5, False),
    (LoopDetected("loop"), 508, 10, True),
    (RuntimeError("boom"), 500, 13, True),
]


@pytest.mark.parametrize(("exc", "status", "grpc", "fatal"), CASES, ids=lambda c: repr(c))
async def test_http_mapping(exc: BaseException, status: int, grpc: int, fatal: bool) -> None:
    rsp = await failing(exc)(Request("GET", None, "a", "/", "HTTP/1.1"))
    assert rsp.status == status
    assert rsp.version == "HTTP/1.1"
    assert rsp.body.content_length == 0
    assert await rsp.body.read() == b""
    msg = header(rsp.headers, b"l5d-proxy-error")
    expected = str(exc).encode() if status != 500 else b"unexpected error"
    assert msg == expected
    assert (header(rsp.headers, b"l5d-proxy-connection") == b"close") == fatal
    assert (get_ext(rsp.extensions, CloseConnection) is not None) == fatal
    assert header(rsp.headers, b"grpc-status") is None


@pytest.mark.parametrize(("exc", "status", "grpc", "fatal"), CASES, ids=lambda c: repr(c))
async def test_grpc_mapping(exc: BaseException, status: int, grpc: int, fatal: bool) -> None:
    rsp = await failing(exc)(Request("POST", "http", "a", "/svc/M", "HTTP/2", list(GRPC)))
    assert rsp.status == 200
    assert rsp.version == "HTTP/2"
    assert header(rsp.headers, b"grpc-status") == str(grpc).encode()
    assert header(rsp.headers, b"content-type") == b"application/grpc"
    assert header(rsp.headers, b"grpc-message") == header(rsp.headers, b"l5d-proxy-error")
    assert (header(rsp.headers, b"l5d-proxy-connection") == b"close") == fatal


async def test_grpc_over_http1_is_plain_http() -> None:
    rsp = await failing(FailFast())(Request("POST", None, "a", "/", "HTTP/1.1", list(GRPC)))
    assert rsp.status == 504


async def test_headers_not_emitted() -> None:
    svc = failing(LoadShed())
    quiet = RespondErrors(svc.inner, emit_headers=False)
    rsp = await quiet(Request("GET", None, "a", "/", "HTTP/1.1"))
    assert rsp.status == 503 and rsp.headers == []
    assert get_ext(rsp.extensions, CloseConnection) is not None  # still closes
    rsp = await quiet(Request("POST", None, "a", "/", "HTTP/2", list(GRPC)))
    assert rsp.headers == [(b"content-type", b"application/grpc"), (b"grpc-status", b"14")]
    # Inbound: only for identified clients (a predicate on the request).
    only_mtls = RespondErrors(svc.inner, emit_headers=lambda req: req.authority == "mtls")
    rsp = await only_mtls(Request("GET", None, "plain", "/", "HTTP/1.1"))
    assert header(rsp.headers, b"l5d-proxy-error") is None
    rsp = await only_mtls(Request("GET", None, "mtls", "/", "HTTP/1.1"))
    assert header(rsp.headers, b"l5d-proxy-error") == b"service unavailable"


async def test_unencodable_message() -> None:
    rsp = await failing(NoRoute("no route for caf\xe9\n"))(
        Request("GET", None, "a", "/", "HTTP/1.0")
    )
    assert rsp.status == 404 and rsp.version == "HTTP/1.0"
    assert header(rsp.headers, b"l5d-proxy-error") == b"unexpected error"


async def test_h2_stream_errors_propagate() -> None:
    with pytest.raises(StreamReset):
        await failing(StreamReset(2))(Request("GET", None, "a", "/", "HTTP/2"))


async def test_success_passes_through_and_grpc_body_is_rescued() -> None:
    body = PipeBody()

    async def svc(req: Request) -> Response:
        return Response(200, list(GRPC), body, "HTTP/2")

    rsp = await RespondErrors(svc)(Request("POST", None, "a", "/", "HTTP/2", list(GRPC)))
    body.push(b"frame")
    body.fail(ConnectError("x", "reset"))
    assert await rsp.body.read() == b"frame"
    assert await rsp.body.read() == b""
    assert rsp.body.trailers == [
        (b"grpc-status", b"14"),
        (b"grpc-message", b"connect to x failed: reset"),
    ]
    assert await rsp.body.read() == b""

    async def plain(req: Request) -> Response:
        return Response(201, body=BytesBody(b"ok"))

    rsp = await RespondErrors(plain)(Request("GET", None, "a", "/", "HTTP/1.1"))
    assert rsp.status == 201 and await rsp.body.read() == b"ok"


async def test_error_metrics_callback() -> None:
    registry = Registry()
    errors = OutboundHttpErrorMetrics(registry)
    for exc in (LoadShed(), FailFast(), ConnectError("x", "y"), ResponseTimeout(), NoRoute()):
        svc = RespondErrors(
            failing(exc).inner, on_error=lambda e: errors.record(outbound_error_kind(e))
        )
        await svc(Request("GET", None, "a", "/", "HTTP/1.1"))
    text = registry.render()
    for kind in ("loadshed", "failfast", "i/o", "response timeout", "unexpected"):
        assert f'outbound_http_errors_total{{error="{kind}"}} 1' in text


def test_error_kinds_follow_causes() -> None:
    wrapped = RuntimeError("logical service failed")
    wrapped.__cause__ = FailFast()
    assert inbound_error_kind(wrapped) == "failfast"
    assert outbound_error_kind(wrapped) == "failfast"
    assert inbound_error_kind(LoopDetected("x")) == "gateway loop"
    assert inbound_error_kind(ConnectionResetError()) == "i/o"
    assert outbound_error_kind(IdentityRequired("x")) == "identity required"
    assert inbound_error_kind(ValueError()) == "unexpected"


# --- normalize --------------------------------------------------------------------


async def echo_authority(req: Request) -> Response:
    return Response(200, [(b"x-authority", (req.authority or "").encode())])


@pytest.mark.parametrize(
    ("host", "default", "expected"),
    [
        (b"web.ns:8080", None, b"web.ns:8080"),
        (b"web.ns:8080", "10.0.0.1:80", b"web.ns:8080"),
        (None, "10.0.0.1:80", b"10.0.0.1:80"),
        (b"bad host", "10.0.0.1:80", b"10.0.0.1:80"),
        (b"[::1]:80", None, b"[::1]:80"),
    ],
)
async def test_normalize_fills_authority(
    host: bytes | None, default: str | None, expected: bytes
) -> None:
    headers = [(b"host", host)] if host is not None else []
    req = Request("GET", None, None, "/", "HTTP/1.0", headers)
    rsp = await NormalizeUri(echo_authority, default)(req)
    assert header(rsp.headers, b"x-authority") == expected


async def test_normalize_without_authority_is_500() -> None:
    svc = RespondErrors(NormalizeUri(echo_authority))
    rsp = await svc(Request("GET", None, None, "/", "HTTP/1.1"))
    assert rsp.status == 500
    with pytest.raises(NoAuthority):
        await NormalizeUri(echo_authority)(Request("GET", None, None, "/", "HTTP/1.1"))


async def test_normalize_leaves_others_alone() -> None:
    svc = NormalizeUri(echo_authority, "d:1")
    for req in (
        Request("GET", None, None, "/", "HTTP/2"),
        Request("GET", "http", "abs.example", "/", "HTTP/1.1", absolute_form=True),
        Request("GET", None, "set.example", "/", "HTTP/1.1", [(b"host", b"other")]),
    ):
        rsp = await svc(req)
        assert header(rsp.headers, b"x-authority") == (req.authority or "").encode()


def test_parse_authority() -> None:
    assert parse_authority(b"a.b:80") == "a.b:80"
    assert parse_authority("a.b") == "a.b"
    for bad in (b"", b"a b", b"a/b", b"u@h", b"a:99999", b"a:x", b"[::1", b"\xff", b"a:1:2", None):
        assert parse_authority(bad) is None, bad


async def test_normalize_marks_a_default_authority() -> None:
    seen: list[Request] = []

    async def record(req: Request) -> Response:
        seen.append(req)
        return Response(200)

    svc = NormalizeUri(record, "10.0.0.1:80")
    await svc(Request("GET", None, None, "/", "HTTP/1.0"))
    await svc(Request("GET", None, None, "/", "HTTP/1.1", [(b"host", b"h.example")]))
    assert [r.authority for r in seen] == ["10.0.0.1:80", "h.example"]
    assert DefaultAuthority in seen[0].extensions
    assert DefaultAuthority not in seen[1].extensions
