"""The HTTP message model every HTTP layer speaks, whatever the wire version.

HTTP/1 and HTTP/2 server drivers turn what they read into a :class:`Request`, call
an ``HttpService`` (``Service[Request, Response]``), and write the
:class:`Response` back; client drivers do the reverse. Layers in between (metrics,
classification, orig-proto, routing, retries) see only these types.

Conventions:

- Header names are lower-case ``bytes``; values are ``bytes``; order and repeats
  are kept (``Headers`` is a plain list of pairs, cheap to build and to scan).
- Hop-by-hop headers are removed by the server driver that reads a message and
  never reach the layers; each client driver adds its own framing headers.
- ``authority`` is the request's ``:authority`` (h2), or the absolute-form URI's
  authority, or the ``Host`` header (HTTP/1), or ``None`` when there is none.
- ``path`` is the origin-form request target (``/a/b?q``); for ``CONNECT`` it is
  empty and ``authority`` is the target. ``absolute_form`` records that an HTTP/1
  request arrived with an absolute URI, so that it can be sent on the same way.
- Bodies are streams (:mod:`linkerd_proxy.http.body`): nothing buffers a whole
  body unless a layer asks to (retries, with a bound).
- ``extensions`` carries per-message context between layers, keyed by type
  (see :func:`get_ext`): the client's address, its TLS identity, the upgrade
  handle, the matched route, and so on. Extensions never go on the wire.

No I/O here; bodies (see ``body``) wait on trio.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, TypeVar

import attrs

from linkerd_proxy.http.body import Body, EmptyBody

Headers = list[tuple[bytes, bytes]]
Version = Literal["HTTP/1.0", "HTTP/1.1", "HTTP/2"]

E = TypeVar("E")


def header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """The first value of header ``name`` (lower-case), or ``None``."""
    for k, v in headers:
        if k == name:
            return v
    return None


def header_all(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    """Every value of header ``name`` (lower-case), in order."""
    return [v for k, v in headers if k == name]


def set_header(headers: Headers, name: bytes, value: bytes) -> None:
    """Replace every ``name`` header with one ``name: value`` (appended at the end)."""
    headers[:] = [(k, v) for k, v in headers if k != name]
    headers.append((name, value))


def remove_header(headers: Headers, name: bytes) -> list[bytes]:
    """Remove every ``name`` header; return the removed values."""
    removed = [v for k, v in headers if k == name]
    if removed:
        headers[:] = [(k, v) for k, v in headers if k != name]
    return removed


@attrs.define(eq=False)
class Request:
    """An HTTP request on its way through the proxy.

    Attributes:
        method: e.g. ``"GET"`` (upper-case as received; methods are case-sensitive).
        scheme: ``"http"``/``"https"`` when known (h2 ``:scheme``, absolute-form).
        authority: ``host[:port]`` or ``None`` (see the module docstring).
        path: origin-form target, ``""`` for CONNECT.
        version: the version it was received with.
        headers: end-to-end headers.
        body: the request body stream.
        absolute_form: an HTTP/1 request that used an absolute URI.
        extensions: per-request context for the layers (never sent).
    """

    method: str
    scheme: str | None
    authority: str | None
    path: str
    version: Version
    headers: Headers = attrs.field(factory=list)
    body: Body = attrs.field(factory=EmptyBody)
    absolute_form: bool = False
    extensions: dict[type, object] = attrs.field(factory=dict)

    def header(self, name: bytes) -> bytes | None:
        return header(self.headers, name)


@attrs.define(eq=False)
class Response:
    """An HTTP response on its way back.

    Attributes:
        status: the status code.
        headers: end-to-end headers.
        body: the response body stream (trailers at its end).
        version: the version it was received with (or synthesized for).
        extensions: per-response context for the layers (never sent).
    """

    status: int
    headers: Headers = attrs.field(factory=list)
    body: Body = attrs.field(factory=EmptyBody)
    version: Version = "HTTP/1.1"
    extensions: dict[type, object] = attrs.field(factory=dict)

    def header(self, name: bytes) -> bytes | None:
        return header(self.headers, name)


def set_ext(extensions: dict[type, object], value: object) -> None:
    """Store ``value`` in ``extensions`` under its own type."""
    extensions[type(value)] = value


def get_ext(extensions: dict[type, object], kind: type[E]) -> E | None:
    """The extension of type ``kind``, or ``None``."""
    value = extensions.get(kind)
    if value is None:
        return None
    assert isinstance(value, kind)
    return value
