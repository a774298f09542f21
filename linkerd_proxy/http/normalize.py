"""URI normalisation for HTTP/1 requests: every request leaves with an authority.

A request-level layer of the inbound and outbound HTTP server stacks, just after
the server driver, as the reference's ``normalize_uri.rs``: an HTTP/1 request in
origin form (``GET /path``) gets its authority from the ``Host`` header, else
from the target's default authority (inbound: the original destination), and
fails with :class:`~linkerd_proxy.errors.NoAuthority` when there is neither (the
reference answers that with 500 through the synthetic-error layer). Requests in
absolute form, ``CONNECT`` requests and HTTP/2 requests are left alone (HTTP/2
may lack ``:authority``; the reference accepts that).

An authority taken from the default is marked with :class:`DefaultAuthority`: it
routes the request, but the HTTP/1 client neither invents a ``Host`` header from it
nor pools the connection (the reference gives requests without a Host their own
connection and sends them without one).

The HTTP/1 server driver may already fill ``authority`` from ``Host``; the layer
then has nothing to do. A ``Host`` value that is not a valid authority is
ignored, as the reference does, and the default applies.
"""

from __future__ import annotations

import attrs

from ..errors import NoAuthority
from ..stack import Service
from .model import Request, Response, header, set_ext

__all__ = ["DefaultAuthority", "NormalizeUri", "NormalizeUriLayer", "parse_authority"]

HttpService = Service[Request, Response]

# Bytes an authority (RFC 3986 host[:port], reg-name or IP literal) may hold.
_AUTHORITY_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:[]%"
)


def parse_authority(value: bytes | str | None) -> str | None:
    """Validate an authority (``host[:port]``) as the reference's parser would.

    Returns:
      The authority as text, or ``None`` if ``value`` is missing or invalid
      (empty, userinfo, a path, bad characters, a non-numeric or too large port).
    """
    if value is None:
        return None
    if isinstance(value, bytes):
        try:
            text = value.decode("ascii")
        except UnicodeDecodeError:
            return None
    else:
        text = value
    if not text or len(text) > 0xFFFF or any(c not in _AUTHORITY_CHARS for c in text):
        return None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        rest = text[end + 1 :]
        if "[" in text[1:end] or (rest and not rest.startswith(":")):
            return None
        port = rest[1:] if rest else None
    else:
        if "[" in text or "]" in text:
            return None
        host, sep, port_text = text.rpartition(":")
        if sep and ":" in host:
            return None
        port = port_text if sep else None
    if port is not None and port != "" and (not port.isdigit() or int(port) > 0xFFFF):
        return None
    return text


@attrs.frozen
class DefaultAuthority:
    """Request extension: the authority is the target's default, not the request's."""


@attrs.frozen
class NormalizeUri:
    """Give origin-form HTTP/1 requests an authority (Host, else ``default``).

    Attributes:
      inner: the rest of the stack.
      default: the authority to use when the request has none (``None``: reject).
    """

    inner: HttpService
    default: str | None = None

    async def __call__(self, req: Request, /) -> Response:
        """Fill ``req.authority`` if needed and call ``inner``.

        Raises:
          NoAuthority: an HTTP/1 request with no authority, no valid Host, no default.
        """
        if (
            req.version != "HTTP/2"
            and not req.absolute_form
            and req.method != "CONNECT"
            and req.authority is None
        ):
            authority = parse_authority(header(req.headers, b"host"))
            if authority is None:
                if self.default is None:
                    raise NoAuthority()
                authority = self.default
                set_ext(req.extensions, DefaultAuthority())
            req.authority = authority
        return await self.inner(req)

    @staticmethod
    def layer(default: str | None = None) -> NormalizeUriLayer:
        """A service layer with a fixed default authority."""
        return NormalizeUriLayer(default)


@attrs.frozen
class NormalizeUriLayer:
    """The layer made by :meth:`NormalizeUri.layer`."""

    default: str | None = None

    def __call__(self, inner: HttpService, /) -> NormalizeUri:
        return NormalizeUri(inner, self.default)
