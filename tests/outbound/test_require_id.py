"""``l5d-require-id`` (linkerd_proxy.outbound.require_id)."""

from __future__ import annotations

import pytest

from linkerd_proxy.errors import IdentityRequired
from linkerd_proxy.http.errors import outbound_error_kind
from linkerd_proxy.http.model import Request, Response
from linkerd_proxy.outbound.require_id import RequireIdentity

B_ID = "b.ns.serviceaccount.identity.linkerd.cluster.local"


class Recorder:
    def __init__(self) -> None:
        self.seen: list[Request] = []

    async def __call__(self, req: Request, /) -> Response:
        self.seen.append(req)
        return Response(200)


def _req(*headers: tuple[bytes, bytes]) -> Request:
    return Request("GET", "http", "web:80", "/", "HTTP/1.1", headers=[(b"x", b"1"), *headers])


async def test_matching_identity_passes_without_the_header() -> None:
    inner = Recorder()
    rsp = await RequireIdentity(inner, B_ID)(_req((b"l5d-require-id", B_ID.encode())))
    assert rsp.status == 200
    assert inner.seen[0].headers == [(b"x", b"1")]


async def test_no_header_passes_untouched_even_in_plaintext() -> None:
    inner = Recorder()
    assert (await RequireIdentity(inner, None)(_req())).status == 200
    assert inner.seen[0].headers == [(b"x", b"1")]


async def test_mismatch_fails_before_the_endpoint() -> None:
    inner = Recorder()
    with pytest.raises(IdentityRequired) as info:
        await RequireIdentity(inner, B_ID)(_req((b"l5d-require-id", b"hey-its-me")))
    assert inner.seen == []
    assert "hey-its-me" in str(info.value) and B_ID in str(info.value)
    assert outbound_error_kind(info.value) == "identity required"


async def test_plaintext_endpoint_fails_any_required_identity() -> None:
    inner = Recorder()
    with pytest.raises(IdentityRequired):
        await RequireIdentity(inner, None)(_req((b"l5d-require-id", B_ID.encode())))
    assert inner.seen == []
