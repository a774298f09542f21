"""Rendering a request for an HTTP/1 upstream: target, header fields, framing.

Where it sits: called by :class:`~linkerd_proxy.http.h1.client.H1Connection` before
it writes a request; the server side's counterpart is ``server_request.py``.
Hop-by-hop fields (and those named in ``Connection``) are dropped, ``Host`` is kept
as the client sent it (or comes from the authority of a request that had none),
an upgrade the client asked for is asked again, and the body's framing is chosen:
``Content-Length`` when known, chunked otherwise, and for HTTP/1.0 (which has no
chunked encoding) the body is buffered to learn its length.
"""

from __future__ import annotations

from linkerd_proxy.errors import H1ProtocolError
from linkerd_proxy.http.body import Body, BytesBody
from linkerd_proxy.http.h1 import codec as h1
from linkerd_proxy.http.h1.client_codec import serialize_request_head
from linkerd_proxy.http.model import Headers, Request, get_ext, header
from linkerd_proxy.http.normalize import DefaultAuthority
from linkerd_proxy.http.upgrade import DownstreamUpgrade

__all__ = ["render_request", "request_target"]

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# Never forwarded upstream: hop-by-hop, plus what the client sets itself.
_DROP = h1.HOP_BY_HOP_HEADERS | {b"host", b"content-length"}


def request_target(request: Request) -> bytes:
    """The request-target to send: authority-form for ``CONNECT``, absolute-form
    when the request came that way, else origin-form.

    Raises:
        H1ProtocolError: ``CONNECT`` (or absolute-form) without an authority.
    """
    if request.method == "CONNECT" or request.absolute_form:
        if not request.authority:
            raise H1ProtocolError(f"{request.method} request without an authority")
        if request.method == "CONNECT":
            return request.authority.encode("ascii")
        scheme = request.scheme or "http"
        return f"{scheme}://{request.authority}{request.path or '/'}".encode("ascii")
    return (request.path or "/").encode("ascii")


async def render_request(
    request: Request, *, max_buffered_body: int
) -> tuple[bytes, Body | None, bool]:
    """The request head to write, the body to upload after it (``None`` if none),
    and whether the body was read here (an HTTP/1.0 body of unknown length,
    buffered up to ``max_buffered_body`` to compute its ``Content-Length``).

    Raises:
        H1ProtocolError: the request cannot be sent as HTTP/1 (a target or field
            that could split it, ``CONNECT`` without an authority).
        BodyError: the HTTP/1.0 body failed or was larger than the bound.
    """
    consumed = False
    version: h1.HttpVersion = "1.0" if request.version == "HTTP/1.0" else "1.1"
    connect = request.method == "CONNECT"
    upgrade = get_ext(request.extensions, DownstreamUpgrade)
    tokens = h1.lower_connection_tokens(request.headers)
    headers: Headers = []
    # Host goes on as the client sent it; only a request that had none (an
    # HTTP/2 one) gets it from its authority, unless that is a default.
    host = header(request.headers, b"host")
    if host is not None:
        headers.append((b"host", host))
    elif request.authority and DefaultAuthority not in request.extensions:
        headers.append((b"host", request.authority.encode("ascii")))
    headers.extend((k, v) for k, v in request.headers if k not in _DROP and k not in tokens)
    if upgrade is not None and upgrade.protocol is not None and version == "1.1":
        headers.append((b"connection", b"upgrade"))
        headers.append((b"upgrade", upgrade.protocol))
    body: Body | None = request.body
    if connect:
        body = None
    else:
        assert body is not None
        length = body.content_length
        if length is None and body.is_end_stream:
            length = 0
        if length is None and version == "1.0":
            consumed = True
            data = await body.read_all(max_buffered_body)
            body = BytesBody(data, None)
            length = len(data)
        if length is None:
            headers.append((b"transfer-encoding", b"chunked"))
        elif (
            length
            or request.method in _BODY_METHODS
            or header(request.headers, b"content-length") == b"0"
        ):
            headers.append((b"content-length", b"%d" % length))
        if length == 0:
            body = None
    try:
        head = serialize_request_head(
            request.method.encode("ascii"), request_target(request), headers, version
        )
    except ValueError as exc:
        raise H1ProtocolError(str(exc)) from exc
    return head, body, consumed
