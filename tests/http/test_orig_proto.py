"""Tests for linkerd_proxy.http.orig_proto: upgrade and downgrade, end to end."""

from __future__ import annotations

import pytest

from linkerd_proxy.errors import DowngradedH2Error
from linkerd_proxy.http.body import BytesBody, PipeBody, StreamReset
from linkerd_proxy.http.errors import RespondErrors
from linkerd_proxy.http.model import Request, Response, get_ext, header, header_all
from linkerd_proxy.http.orig_proto import L5D_ORIG_PROTO, Downgrade, Upgrade, WasUpgrade


class Recorder:
    """An "application" that records what it received and answers HTTP/1.1."""

    def __init__(self, version: str = "HTTP/1.1") -> None:
        self.seen: list[Request] = []
        self.version = version

    async def __call__(self, req: Request, /) -> Response:
        self.seen.append(req)
        rsp = Response(200, [(b"x-app", b"1")], BytesBody(b"hi"))
        rsp.version = "HTTP/1.0" if self.version == "HTTP/1.0" else "HTTP/1.1"
        return rsp


async def unused(req: Request) -> Response:
    raise AssertionError("the HTTP/1 client must not be used")


@pytest.mark.parametrize(
    ("version", "absolute", "value"),
    [
        ("HTTP/1.1", False, b"HTTP/1.1"),
        ("HTTP/1.1", True, b"HTTP/1.1; absolute-form"),
        ("HTTP/1.0", False, b"HTTP/1.0"),
        ("HTTP/1.0", True, b"HTTP/1.0; absolute-form"),
    ],
)
async def test_round_trip(version: str, absolute: bool, value: bytes) -> None:
    app = Recorder(version)
    wire: list[Request] = []

    async def h2_client(req: Request) -> Response:
        # What the HTTP/2 client would send, and the peer inbound proxy's Downgrade.
        wire.append(req)
        assert req.version == "HTTP/2"
        assert header_all(req.headers, L5D_ORIG_PROTO) == [value]
        assert header(req.headers, b"transfer-encoding") is None
        rsp = await Downgrade(app)(req)
        assert rsp.version == "HTTP/2"
        assert header(rsp.headers, L5D_ORIG_PROTO) == version.encode()
        return rsp

    req = Request(
        "GET", "http", "web.ns:80", "/p", version,  # type: ignore[arg-type]
        [(b"transfer-encoding", b"chunked"), (b"x", b"y")], absolute_form=absolute,
    )  # fmt: skip
    rsp = await Upgrade(h2_client, unused)(req)
    assert len(wire) == 1
    seen = app.seen[0]
    assert seen.version == version
    assert seen.absolute_form is absolute
    assert header(seen.headers, L5D_ORIG_PROTO) is None  # never leaks to the app
    assert header(seen.headers, b"x") == b"y"
    assert get_ext(seen.extensions, WasUpgrade) is not None
    assert rsp.version == version
    assert header(rsp.headers, L5D_ORIG_PROTO) is None  # nor to the client
    assert await rsp.body.read() == b"hi"


async def test_upgrades_of_the_connection_are_not_orig_proto() -> None:
    http1 = Recorder()

    async def h2(req: Request) -> Response:
        raise AssertionError("must not be upgraded")

    for req in (
        Request("GET", None, "a", "/ws", "HTTP/1.1", [(b"upgrade", b"websocket")]),
        Request("CONNECT", None, "a:443", "", "HTTP/1.1"),
    ):
        await Upgrade(h2, http1)(req)
    assert len(http1.seen) == 2
    assert all(header(r.headers, L5D_ORIG_PROTO) is None for r in http1.seen)


async def test_h2_requests_go_to_h2_unchanged() -> None:
    h2 = Recorder()
    await Upgrade(h2, unused)(Request("GET", None, "a", "/", "HTTP/2"))
    assert h2.seen[0].headers == []


async def test_downgrade_leaves_plain_requests() -> None:
    app = Recorder()
    rsp = await Downgrade(app)(Request("GET", None, "a", "/", "HTTP/2"))
    assert app.seen[0].version == "HTTP/2" and get_ext(app.seen[0].extensions, WasUpgrade) is None
    # The response is whatever the inner service said (no l5d-orig-proto added).
    assert header(rsp.headers, L5D_ORIG_PROTO) is None
    rsp = await Downgrade(app)(Request("GET", None, "a", "/", "HTTP/1.1", [(L5D_ORIG_PROTO, b"x")]))
    assert rsp.version == "HTTP/1.1"


async def test_unknown_value_is_removed_but_version_kept() -> None:
    app = Recorder()
    await Downgrade(app)(Request("GET", None, "a", "/", "HTTP/2", [(L5D_ORIG_PROTO, b"HTTP/3")]))
    assert app.seen[0].version == "HTTP/2"
    assert header(app.seen[0].headers, L5D_ORIG_PROTO) is None


async def test_reset_becomes_502() -> None:
    async def resetting(req: Request) -> Response:
        raise StreamReset(11)

    svc = RespondErrors(Upgrade(resetting, unused))
    rsp = await svc(Request("GET", None, "a", "/", "HTTP/1.1"))
    assert rsp.status == 502
    assert b"ENHANCE_YOUR_CALM" in (header(rsp.headers, b"l5d-proxy-error") or b"")
    with pytest.raises(DowngradedH2Error):
        await Upgrade(resetting, unused)(Request("GET", None, "a", "/", "HTTP/1.1"))


async def test_reset_in_body_is_downgraded() -> None:
    body = PipeBody()

    async def h2(req: Request) -> Response:
        return Response(200, [(L5D_ORIG_PROTO, b"HTTP/1.1")], body, "HTTP/2")

    rsp = await Upgrade(h2, unused)(Request("GET", None, "a", "/", "HTTP/1.1"))
    body.push(b"part")
    body.fail(StreamReset(2))
    assert await rsp.body.read() == b"part"
    with pytest.raises(DowngradedH2Error) as info:
        await rsp.body.read()
    assert info.value.code == 2
