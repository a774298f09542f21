"""Remove headers that must not cross this hop (``l5d-client-id`` from untrusted peers...)."""

from __future__ import annotations

import attrs

from linkerd_proxy.http.model import Request, Response, remove_header, set_header
from linkerd_proxy.stack import Service


@attrs.frozen
class StripRequestHeaders:
    """``Service[Request, Response]``: drop ``names`` from every request.

    The inbound proxy strips ``l5d-client-id`` from requests that did not come
    over mTLS, so an application can trust the header when it is present.
    """

    inner: Service[Request, Response]
    names: tuple[bytes, ...]

    async def __call__(self, req: Request, /) -> Response:
        for name in self.names:
            remove_header(req.headers, name)
        return await self.inner(req)


@attrs.frozen
class SetRequestHeader:
    """``Service[Request, Response]``: set ``name: value`` on every request."""

    inner: Service[Request, Response]
    name: bytes
    value: bytes

    async def __call__(self, req: Request, /) -> Response:
        set_header(req.headers, self.name, self.value)
        return await self.inner(req)
