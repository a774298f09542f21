"""Turning a parsed HTTP/1 request head into a :class:`~linkerd_proxy.http.model.Request`.

Where it sits: a pure helper of the HTTP/1 server driver (``server.py``); no I/O.

- Authority: from an absolute-form URI, else the ``Host`` header, else ``None``
  (HTTP/1.0 without ``Host``). ``CONNECT`` must use authority-form and HTTP/1.1;
  any other method must use origin-form, absolute-form, or ``*`` (``OPTIONS``).
  Anything else, or two ``Host`` fields, is a :class:`BadRequest` (400), as the
  reference rejects them.
- Headers: hop-by-hop fields (and those the ``Connection`` header names) and
  ``Content-Length`` are removed (the body carries the length), except that an
  explicit ``Content-Length: 0`` is kept so that it reaches the next hop as sent
  (the reference preserves it). ``Host`` is kept as received: the client driver
  sends it on untouched, even when an absolute URI names another authority. An upgrade
  request keeps its ``Upgrade`` field and gets a
  :class:`~linkerd_proxy.http.upgrade.DownstreamUpgrade` handle; an ``h2c``
  upgrade (or any upgrade on HTTP/1.0) is declined: its ``Upgrade`` and
  ``HTTP2-Settings`` fields are dropped and it goes on as a plain request.
"""

from __future__ import annotations

import re

from linkerd_proxy.errors import ProxyError
from linkerd_proxy.http.h1 import codec as h1
from linkerd_proxy.http.model import Headers, Request, Version
from linkerd_proxy.http.upgrade import DownstreamUpgrade

__all__ = ["BadRequest", "build_request", "synthetic_head"]

_SCHEME = re.compile(rb"[A-Za-z][A-Za-z0-9+.\-]*")
_AUTHORITY = re.compile(rb"[^\s/?#@]+")
# authority-form: a host name or an IP literal, and an optional port.
_CONNECT_TARGET = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%]+)(?::[0-9]{1,5})?")
_DROP = h1.HOP_BY_HOP_HEADERS | {b"content-length", b"http2-settings"}


class BadRequest(ProxyError):
    """The request parsed but is not acceptable (400)."""


def _ascii(value: bytes, what: str) -> str:
    try:
        return value.decode("ascii")
    except UnicodeDecodeError:
        raise BadRequest(f"non-ASCII {what}") from None


def _split_absolute(target: bytes) -> tuple[str, str, str]:
    scheme, sep, rest = target.partition(b"://")
    if not sep or not _SCHEME.fullmatch(scheme):
        raise BadRequest(f"invalid request target {target!r}")
    cut = min((i for i in (rest.find(b"/"), rest.find(b"?")) if i >= 0), default=len(rest))
    authority, path = rest[:cut], rest[cut:]
    if not _AUTHORITY.fullmatch(authority):
        raise BadRequest(f"invalid authority in {target!r}")
    if not path.startswith(b"/"):
        path = b"/" + path
    return _ascii(scheme, "scheme").lower(), _ascii(authority, "authority"), _ascii(path, "path")


def build_request(head: h1.RequestHead, extensions: dict[type, object]) -> tuple[Request, bool]:
    """Build the request for ``head`` (without its body).

    Returns:
        The request, and whether an upgrade the codec saw was declined (the
        driver then goes on reading HTTP/1).

    Raises:
        BadRequest: for the cases listed in the module docstring.
    """
    method = _ascii(head.method, "method")
    target = head.target
    version: Version = "HTTP/1.0" if head.version == "1.0" else "HTTP/1.1"
    hosts = head.values(b"host")
    if len(hosts) > 1:
        raise BadRequest("more than one Host field")
    host = _ascii(hosts[0].strip(), "Host") if hosts else None
    scheme: str | None = None
    absolute = False
    if method == "CONNECT":
        if version != "HTTP/1.1":
            raise BadRequest("CONNECT requires HTTP/1.1")
        # A port is not required: the reference accepts ``CONNECT host HTTP/1.1``.
        if not _CONNECT_TARGET.fullmatch(target):
            raise BadRequest(f"CONNECT to an invalid authority {target!r}")
        authority: str | None = _ascii(target, "authority")
        path = ""
    elif target.startswith(b"/"):
        authority, path = host or None, _ascii(target, "path")
    elif target == b"*" and method == "OPTIONS":
        authority, path = host or None, "*"
    else:
        scheme, authority, path = _split_absolute(target)
        absolute = True

    upgrade_values = head.values(b"upgrade")
    tokens = {t.strip().lower() for v in upgrade_values for t in v.split(b",")}
    wants_upgrade = method == "CONNECT" or (
        head.upgrade and version == "HTTP/1.1" and b"h2c" not in tokens and bool(upgrade_values)
    )
    declined = head.upgrade and not wants_upgrade
    drop = _DROP | _tokens(head.values(b"connection"))
    headers: Headers = [(k, v) for k, v in head.headers if k not in drop]
    if method != "CONNECT" and _explicit_zero_length(head):
        headers.append((b"content-length", b"0"))
    request = Request(
        method=method,
        scheme=scheme,
        authority=authority,
        path=path,
        version=version,
        headers=headers,
        absolute_form=absolute,
        extensions=dict(extensions),
    )
    if wants_upgrade:
        protocol = None
        if method != "CONNECT":
            protocol = b", ".join(v.strip() for v in upgrade_values)
            headers.append((b"upgrade", protocol))
        request.extensions[DownstreamUpgrade] = DownstreamUpgrade(protocol)
    return request, declined


def _explicit_zero_length(head: h1.RequestHead) -> bool:
    if head.values(b"transfer-encoding"):
        return False
    lengths = head.values(b"content-length")
    return bool(lengths) and all(v.strip() == b"0" for v in lengths)


def synthetic_head(head: h1.RequestHead) -> bytes:
    """A minimal request head with ``head``'s body framing and no upgrade, to
    re-parse the body of a declined upgrade request."""
    out = [b"POST / HTTP/%s\r\n" % head.version.encode("ascii")]
    for name in (b"content-length", b"transfer-encoding"):
        out.extend(b"%s: %s\r\n" % (name, v) for v in head.values(name))
    out.append(b"\r\n")
    return b"".join(out)


def _tokens(values: list[bytes]) -> frozenset[bytes]:
    if not values:
        return frozenset()
    return frozenset(t.strip().lower() for v in values for t in v.split(b",") if t.strip())
