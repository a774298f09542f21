"""orig-proto: carry HTTP/1 requests between proxies over HTTP/2, and back.

Two request-level layers over the HTTP model (they only rewrite messages; the
HTTP/1 and HTTP/2 client drivers do the I/O):

- :class:`Upgrade` (outbound endpoint, when the endpoint is meshed, hints H2 and
  is not local): an HTTP/1 request goes to the HTTP/2 client with
  ``l5d-orig-proto: HTTP/1.1`` (or ``HTTP/1.0``, plus ``; absolute-form`` when it
  arrived in absolute form) and without ``Transfer-Encoding``. The response's
  ``l5d-orig-proto`` is removed and gives the version to answer with. Requests
  that upgrade the HTTP/1.1 connection (``Upgrade``/``CONNECT``) are not
  upgraded: they go to the HTTP/1 client as they are. An HTTP/2 reset of an
  upgraded request becomes :class:`~linkerd_proxy.errors.DowngradedH2Error`
  (synthesized as 502).
- :class:`Downgrade` (inbound server): an HTTP/2 request carrying
  ``l5d-orig-proto`` becomes the HTTP/1 request it was (header removed, version
  and absolute form restored, :class:`WasUpgrade` set in its extensions); an
  HTTP/1 response to it gets ``l5d-orig-proto: HTTP/1.x``, loses
  ``Transfer-Encoding`` and goes back as HTTP/2.

Behaviour follows the reference's ``linkerd/proxy/http/src/orig_proto.rs``; the
header never reaches an application.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from ..errors import DowngradedH2Error
from ..stack import Service
from .body import Body, StreamReset
from .classify import h2_reason_name
from .model import Request, Response, Version, header, remove_header, set_ext, set_header

__all__ = [
    "L5D_ORIG_PROTO",
    "Downgrade",
    "DowngradeLayer",
    "Upgrade",
    "WasUpgrade",
    "is_http11_upgrade",
]

L5D_ORIG_PROTO = b"l5d-orig-proto"
_ABSOLUTE_FORM = b"; absolute-form"

HttpService = Service[Request, Response]


@attrs.frozen
class WasUpgrade:
    """Request extension: this request arrived as an orig-proto upgraded HTTP/2 request."""


def is_http11_upgrade(req: Request) -> bool:
    """True for HTTP/1.1 requests that take over the connection (``Upgrade``, ``CONNECT``).

    The HTTP/1 server driver keeps the ``upgrade`` header only on requests it
    will upgrade, so its presence marks them.
    """
    return req.method == "CONNECT" or header(req.headers, b"upgrade") is not None


def _downgraded(exc: StreamReset) -> DowngradedH2Error:
    err = DowngradedH2Error(exc.code, h2_reason_name(exc.code))
    err.__cause__ = exc
    return err


class _UpgradedBody(Body):
    """A response body whose HTTP/2 resets surface as :class:`DowngradedH2Error`."""

    def __init__(self, inner: Body) -> None:
        self._inner = inner
        self.content_length = inner.content_length

    @property
    def is_end_stream(self) -> bool:
        return self._inner.is_end_stream

    async def read(self) -> bytes:
        try:
            chunk = await self._inner.read()
        except StreamReset as exc:
            raise _downgraded(exc) from exc
        if not chunk:
            self.trailers = self._inner.trailers
        return chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


@attrs.frozen
class Upgrade:
    """Send HTTP/1 requests over HTTP/2 to a meshed endpoint.

    Attributes:
      h2: the HTTP/2 client service for the endpoint.
      http1: the HTTP/1 client service, for requests that cannot be upgraded.
      skip: which HTTP/1 requests to send as they are (default: connection upgrades).
    """

    h2: HttpService
    http1: HttpService
    skip: Callable[[Request], bool] = is_http11_upgrade

    async def __call__(self, req: Request, /) -> Response:
        """Upgrade ``req`` (unless it is HTTP/2 already, or skipped) and call the endpoint.

        Raises:
          DowngradedH2Error: the peer reset the upgraded request.
          Exception: whatever the client service raises otherwise.

        Cancellation: the inner call is cancelled with this one (the HTTP/2 client
        resets the stream).
        """
        if req.version == "HTTP/2":
            return await self.h2(req)
        if self.skip(req):
            return await self.http1(req)
        orig_version: Version = req.version
        value = orig_version.encode()
        if req.absolute_form:
            value += _ABSOLUTE_FORM
        set_header(req.headers, L5D_ORIG_PROTO, value)
        remove_header(req.headers, b"transfer-encoding")
        req.version = "HTTP/2"
        req.absolute_form = False
        try:
            rsp = await self.h2(req)
        except StreamReset as exc:
            raise _downgraded(exc) from exc
        proto = remove_header(rsp.headers, L5D_ORIG_PROTO)
        version: Version = orig_version
        if proto and proto[0] == b"HTTP/1.1":
            version = "HTTP/1.1"
        elif proto and proto[0] == b"HTTP/1.0":
            version = "HTTP/1.0"
        rsp.version = version
        rsp.body = _UpgradedBody(rsp.body)
        return rsp


@attrs.frozen
class Downgrade:
    """Turn orig-proto HTTP/2 requests back into HTTP/1 for the application.

    Attributes:
      inner: the service that talks to the application.
    """

    inner: HttpService

    async def __call__(self, req: Request, /) -> Response:
        """Downgrade ``req`` if it carries ``l5d-orig-proto``, call ``inner``, re-mark
        the response.

        Raises:
          Exception: whatever ``inner`` raises.
        """
        if req.version != "HTTP/2":
            return await self.inner(req)
        values = remove_header(req.headers, L5D_ORIG_PROTO)
        if not values:
            return await self.inner(req)
        value = values[0]
        if value.startswith(b"HTTP/1.1"):
            req.version = "HTTP/1.1"
        elif value.startswith(b"HTTP/1.0"):
            req.version = "HTTP/1.0"
        # else: unknown value; the reference keeps the version (and says so in logs).
        if len(value) >= len(b"HTTP/1.1; absolute-form") and value[10:23] == b"absolute-form":
            req.absolute_form = True
        set_ext(req.extensions, WasUpgrade())
        rsp = await self.inner(req)
        if rsp.version in ("HTTP/1.1", "HTTP/1.0"):
            set_header(rsp.headers, L5D_ORIG_PROTO, rsp.version.encode())
            remove_header(rsp.headers, b"transfer-encoding")
            rsp.version = "HTTP/2"
        return rsp

    @staticmethod
    def layer() -> DowngradeLayer:
        """A service layer: ``Service -> Downgrade``."""
        return DowngradeLayer()


@attrs.frozen
class DowngradeLayer:
    """The layer made by :meth:`Downgrade.layer`."""

    def __call__(self, inner: HttpService, /) -> Downgrade:
        return Downgrade(inner)
