"""Synthetic error responses: turn a failed request into an HTTP (or gRPC) answer.

The "rescue" layer of the inbound and outbound HTTP server stacks (and of the
outbound endpoint). Everything below it raises project errors
(:mod:`linkerd_proxy.errors`); :class:`RespondErrors` catches them, counts them
(``on_error``, e.g. ``{inbound,outbound}_http_errors_total`` through
:func:`inbound_error_kind`/:func:`outbound_error_kind`) and answers as the
reference does (``linkerd/app/core/src/errors/respond.rs`` and the rescues of
``app/{inbound,outbound}/src/http/{server,endpoint}.rs``):

========================================  ======  ====  =====
error                                     HTTP    gRPC  fatal
========================================  ======  ====  =====
FailFast                                  504     4     yes
LoadShed                                  503     14    yes
ResponseTimeout                           504     4     yes
ConnectTimeout                            504     4     yes
ConnectError, OSError, BodyError,         502     14    yes
DowngradedH2Error, IdentityRequired
NoRoute                                   404     5     no
LoopDetected                              508     10    yes
StreamReset (an HTTP/2 error)             re-raised: the server resets the stream
anything else                             500     13    yes
========================================  ======  ====  =====

HTTP/2 requests with ``content-type: application/grpc*`` get HTTP 200 with
``content-type: application/grpc`` and ``grpc-status`` (a trailers-only
response); errors in a gRPC *response body* become ``grpc-status`` trailers.
When ``emit_headers`` holds, responses carry ``l5d-proxy-error: <message>`` (gRPC:
also ``grpc-message``) and fatal ones ``l5d-proxy-connection: close``. The
reference emits them outbound unless ``OUTBOUND_DISABLE_INFORMATIONAL_HEADERS``,
and inbound only to clients with an mTLS identity: pass a predicate.

Fatal errors also put :class:`CloseConnection` in the response's extensions: the
server driver closes the client connection after this response (an HTTP/1.1
response goes out with ``connection: close``; HTTP/1.0 just closes; HTTP/2 sends
a graceful GOAWAY, as the reference's ``ClientHandle::close``). A response to an
orig-proto request leaves as HTTP/2, so it never carries ``connection: close``.
Layers never set framing headers, so the synthesized body is an ``EmptyBody``
(``content_length == 0``) and the driver writes ``content-length: 0``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import attrs
import trio

from ..errors import (
    BackendFailed,
    ConnectError,
    ConnectTimeout,
    DowngradedH2Error,
    FailFast,
    IdentityRequired,
    LoadShed,
    LoopDetected,
    NoRoute,
    ResponseTimeout,
    Unauthorized,
)
from ..stack import Service
from .body import Body, BodyError, EmptyBody, StreamReset
from .classify import is_grpc
from .model import Headers, Request, Response, Version, set_ext

__all__ = [
    "L5D_PROXY_CONNECTION",
    "L5D_PROXY_ERROR",
    "CloseConnection",
    "RespondErrors",
    "RespondErrorsLayer",
    "SyntheticResponse",
    "inbound_error_kind",
    "outbound_error_kind",
    "rescue",
]

log = logging.getLogger("linkerd.proxy.http.errors")

L5D_PROXY_ERROR = b"l5d-proxy-error"
L5D_PROXY_CONNECTION = b"l5d-proxy-connection"
_GRPC_CONTENT_TYPE = b"application/grpc"

HttpService = Service[Request, Response]


@attrs.frozen
class CloseConnection:
    """Response extension: close the client connection after this response."""


@attrs.frozen
class SyntheticResponse:
    """What to answer for an error.

    Attributes:
      http_status: the HTTP status for non-gRPC requests.
      grpc_status: the ``grpc-status`` for gRPC requests.
      close_connection: the error is fatal to the client connection.
      message: the ``l5d-proxy-error``/``grpc-message`` text.
      location: a ``location`` header (redirects), if any.
    """

    http_status: int
    grpc_status: int
    close_connection: bool
    message: str
    location: bytes | None = None

    @classmethod
    def internal_error(cls, message: str = "unexpected error") -> SyntheticResponse:
        return cls(500, 13, True, message)

    @classmethod
    def bad_gateway(cls, message: str) -> SyntheticResponse:
        return cls(502, 14, True, message)

    @classmethod
    def gateway_timeout(cls, message: str, *, fatal: bool = True) -> SyntheticResponse:
        return cls(504, 4, fatal, message)

    @classmethod
    def unavailable(cls, message: str) -> SyntheticResponse:
        return cls(503, 14, True, message)

    @classmethod
    def not_found(cls, message: str) -> SyntheticResponse:
        return cls(404, 5, False, message)

    @classmethod
    def permission_denied(cls, message: str) -> SyntheticResponse:
        return cls(403, 7, False, message)

    @classmethod
    def rate_limited(cls, message: str) -> SyntheticResponse:
        return cls(429, 8, False, message)

    @classmethod
    def loop_detected(cls, message: str) -> SyntheticResponse:
        return cls(508, 10, True, message)

    def header_message(self) -> bytes:
        """The message as a header value; ``unexpected error`` if it cannot be one."""
        msg = self.message
        if all(c == "\t" or " " <= c <= "~" for c in msg):
            return msg.encode("ascii")
        log.warning("Failed to encode error header: %r", msg)
        return b"unexpected error"

    def grpc_trailers(self, emit_headers: bool) -> Headers:
        """The trailers that report this error at the end of a gRPC response body."""
        trailers: Headers = [(b"grpc-status", str(self.grpc_status).encode())]
        if emit_headers:
            trailers.append((b"grpc-message", self.header_message()))
        return trailers

    def to_response(
        self,
        *,
        version: Version,
        grpc: bool,
        emit_headers: bool,
    ) -> Response:
        """Build the response for a request of ``version`` (gRPC if ``grpc``)."""
        headers: Headers
        if grpc:
            headers = [
                (b"content-type", _GRPC_CONTENT_TYPE),
                (b"grpc-status", str(self.grpc_status).encode()),
            ]
            if emit_headers:
                msg = self.header_message()
                headers += [(b"grpc-message", msg), (L5D_PROXY_ERROR, msg)]
            if self.close_connection and emit_headers:
                headers.append((L5D_PROXY_CONNECTION, b"close"))
            rsp = Response(200, headers, EmptyBody(), "HTTP/2")
        else:
            headers = []
            if emit_headers:
                headers.append((L5D_PROXY_ERROR, self.header_message()))
            if self.close_connection and emit_headers:
                headers.append((L5D_PROXY_CONNECTION, b"close"))
            if self.location is not None:
                headers.append((b"location", self.location))
            rsp = Response(self.http_status, headers, EmptyBody(), version)
        if self.close_connection:
            set_ext(rsp.extensions, CloseConnection())
        return rsp


def _causes(error: BaseException) -> list[BaseException]:
    """``error`` and its explicit causes (``raise ... from``), outermost first."""
    chain: list[BaseException] = []
    e: BaseException | None = error
    while e is not None and len(chain) < 16:
        chain.append(e)
        e = e.__cause__
    return chain


def _is_io(e: BaseException) -> bool:
    return isinstance(
        e, ConnectError | OSError | BodyError | trio.BrokenResourceError | DowngradedH2Error
    ) and not isinstance(e, StreamReset)


def rescue(error: BaseException) -> SyntheticResponse | None:
    """The reference's mapping from an error to a synthetic response.

    Returns:
      The response to send, or ``None`` when the error must propagate (an HTTP/2
      stream error: the server resets the client's stream instead).
    """
    chain = _causes(error)
    msg = str(error) or type(error).__name__

    def caused_by(*kinds: type[BaseException]) -> bool:
        return any(isinstance(e, kinds) for e in chain)

    if caused_by(FailFast):
        return SyntheticResponse.gateway_timeout(msg)
    if caused_by(LoadShed):
        return SyntheticResponse.unavailable(msg)
    if caused_by(ResponseTimeout):
        return SyntheticResponse.gateway_timeout(msg)
    if caused_by(IdentityRequired, DowngradedH2Error, BackendFailed):
        return SyntheticResponse.bad_gateway(msg)
    if caused_by(Unauthorized):
        return SyntheticResponse.permission_denied(msg)
    if caused_by(NoRoute):
        return SyntheticResponse.not_found(msg)
    if caused_by(LoopDetected):
        return SyntheticResponse.loop_detected(msg)
    if caused_by(ConnectTimeout):
        return SyntheticResponse.gateway_timeout(msg)
    if caused_by(StreamReset):
        return None
    if any(_is_io(e) for e in chain):
        return SyntheticResponse.bad_gateway(msg)
    log.warning("Unexpected error: %s", msg)
    return SyntheticResponse.internal_error()


def inbound_error_kind(error: BaseException) -> str:
    """The ``inbound_http_errors_total`` ``error`` label for ``error``."""
    for e in _causes(error):
        if isinstance(e, FailFast):
            return "failfast"
        if isinstance(e, LoadShed):
            return "loadshed"
        if isinstance(e, LoopDetected):
            return "gateway loop"
        if _is_io(e):
            return "i/o"
    return "unexpected"


def outbound_error_kind(error: BaseException) -> str:
    """The ``outbound_http_errors_total`` ``error`` label for ``error``."""
    for e in _causes(error):
        if _is_io(e):
            return "i/o"
        if isinstance(e, IdentityRequired):
            return "identity required"
        if isinstance(e, FailFast):
            return "failfast"
        if isinstance(e, ResponseTimeout):
            return "response timeout"
        if isinstance(e, LoadShed):
            return "loadshed"
    return "unexpected"


class _GrpcRescueBody(Body):
    """A gRPC response body whose failure ends it with ``grpc-status`` trailers."""

    def __init__(
        self,
        inner: Body,
        rescue: Callable[[BaseException], SyntheticResponse | None],
        emit_headers: bool,
    ) -> None:
        self._inner = inner
        self._rescue = rescue
        self._emit = emit_headers
        self._rescued = False
        self.content_length = inner.content_length

    @property
    def is_end_stream(self) -> bool:
        return self._rescued or self._inner.is_end_stream

    @property
    def buffered(self) -> int:
        return 0 if self._rescued else self._inner.buffered

    async def read(self) -> bytes:
        if self._rescued:
            return b""
        try:
            chunk = await self._inner.read()
        except Exception as exc:
            synth = self._rescue(exc)
            if synth is None:
                raise
            log.debug("Synthesizing gRPC trailers for %s", exc)
            self._rescued = True
            self.trailers = synth.grpc_trailers(self._emit)
            return b""
        if not chunk:
            self.trailers = self._inner.trailers
        return chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


@attrs.frozen
class RespondErrors:
    """Answer errors from ``inner`` with synthetic responses.

    Attributes:
      inner: the rest of the stack.
      emit_headers: whether to send ``l5d-proxy-error`` and friends; a bool, or a
        predicate on the request (inbound: "the client has an mTLS identity").
      rescue: error -> response mapping (``None``: re-raise); :func:`rescue` by default.
      on_error: called with every error ``inner`` raises (error metrics).
    """

    inner: HttpService
    emit_headers: bool | Callable[[Request], bool] = True
    rescue: Callable[[BaseException], SyntheticResponse | None] = rescue
    on_error: Callable[[BaseException], None] | None = None

    async def __call__(self, req: Request, /) -> Response:
        """Call ``inner``; turn what it raises into a response.

        Raises:
          Exception: errors the rescue declines (HTTP/2 stream errors).

        Cancellation: passes through (``trio.Cancelled`` is not an ``Exception``).
        """
        # Judge the request before the inner layers rewrite it (orig-proto).
        version = req.version
        grpc = version == "HTTP/2" and is_grpc(req.headers)
        emit = self.emit_headers(req) if callable(self.emit_headers) else self.emit_headers
        try:
            rsp = await self.inner(req)
        except Exception as exc:
            if self.on_error is not None:
                self.on_error(exc)
            synth = self.rescue(exc)
            if synth is None:
                raise
            log.info(
                "%s request failed: %s (path=%s)",
                "gRPC" if grpc else version,
                exc,
                req.path,
            )
            return synth.to_response(version=version, grpc=grpc, emit_headers=emit)
        if grpc:
            rsp.body = _GrpcRescueBody(rsp.body, self.rescue, emit)
        return rsp

    @staticmethod
    def layer(
        emit_headers: bool | Callable[[Request], bool] = True,
        *,
        rescue: Callable[[BaseException], SyntheticResponse | None] = rescue,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> RespondErrorsLayer:
        """A service layer: ``Service -> RespondErrors``."""
        return RespondErrorsLayer(emit_headers, rescue, on_error)


@attrs.frozen
class RespondErrorsLayer:
    """The layer made by :meth:`RespondErrors.layer`."""

    emit_headers: bool | Callable[[Request], bool] = True
    rescue: Callable[[BaseException], SyntheticResponse | None] = rescue
    on_error: Callable[[BaseException], None] | None = None

    def __call__(self, inner: HttpService, /) -> RespondErrors:
        return RespondErrors(inner, self.emit_headers, self.rescue, self.on_error)
