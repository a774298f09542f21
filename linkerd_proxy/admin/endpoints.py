"""Routing and handlers of the admin API: /live, /ready, /metrics, /proxy-log-level,
/env.json and /shutdown.

Where it sits: ``server.py`` reads requests off the wire and calls
:func:`handle_request`; everything here is a plain function of an
:class:`AdminRequest` and the :class:`~linkerd_proxy.admin.state.AdminState`, with no
I/O, so every status path can be checked on its own. Status codes, bodies, content
types and the order of the checks are the reference proxy's.
"""

from __future__ import annotations

import gzip
import ipaddress
import json
import logging
from collections.abc import Callable, Mapping

import attrs

from linkerd_proxy.addrs import SocketAddr
from linkerd_proxy.admin.state import AdminState
from linkerd_proxy.http.h1.codec import Headers, header_values

log = logging.getLogger(__name__)

TEXT_PLAIN = b"text/plain"
APPLICATION_JSON = b"application/json"
FORBIDDEN_BODY = b"Requests are only permitted from localhost."


@attrs.frozen
class AdminRequest:
    """One complete request to the admin server.

    Attributes:
        method: the request method, as sent (``b"GET"``).
        target: the request target (origin form, or absolute form).
        headers: header fields, names in lower case.
        body: the whole request body.
        from_loopback: whether the peer is on this host; gates the endpoints that
            change or reveal process state.
    """

    method: bytes
    target: bytes
    headers: Headers = attrs.Factory(list)
    body: bytes = b""
    from_loopback: bool = False


@attrs.frozen
class AdminResponse:
    """A complete response; the server adds framing, ``date`` and ``connection``."""

    status: int
    headers: Headers = attrs.Factory(list)
    body: bytes = b""


def peer_is_loopback(peer: SocketAddr | None) -> bool:
    """Whether ``peer`` is a loopback address (an IPv4-mapped IPv6 one included).

    An unknown peer (None) is not.
    """
    if peer is None:
        return False
    ip = peer.ip
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def split_target(target: bytes) -> tuple[str, str | None]:
    """Split a request target into its path and its query (None when there is no
    ``?``; an empty string for a bare ``?``)."""
    text = target.decode("latin-1").split("#", 1)[0]
    if not text.startswith("/") and "://" in text:
        rest = text.split("://", 1)[1]
        cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
        text = rest[cut:]
        if not text.startswith("/"):
            text = "/" + text
    path, sep, query = text.partition("?")
    return path, (query if sep else None)


def handle_request(req: AdminRequest, state: AdminState) -> AdminResponse:
    """Route ``req`` to its handler and return the response.

    Errors from the state's callables (metrics rendering, the log handle, the
    shutdown trigger) become 500 responses, as in the reference; they are logged.
    """
    path, _ = split_target(req.target)
    handler = _ROUTES.get(path)
    if handler is None:
        return AdminResponse(404)
    return handler(req, state)


# --- handlers -------------------------------------------------------------------------


def _text(status: int, body: bytes) -> AdminResponse:
    return AdminResponse(status, [(b"content-type", TEXT_PLAIN)], body)


def _forbidden() -> AdminResponse:
    return _text(403, FORBIDDEN_BODY)


def _internal_error(error: BaseException) -> AdminResponse:
    return _text(500, str(error).encode("utf-8", "replace"))


def _live(req: AdminRequest, state: AdminState) -> AdminResponse:
    return _text(200, b"live\n")


def _ready(req: AdminRequest, state: AdminState) -> AdminResponse:
    if state.readiness.is_ready():
        return _text(200, b"ready\n")
    return AdminResponse(503, [], b"not ready\n")


def _visible_ascii(value: bytes) -> str | None:
    # The reference only reads header values made of visible ASCII (and tabs).
    if all(0x20 <= b < 0x7F or b == 0x09 for b in value):
        return value.decode("ascii")
    return None


def _metrics(req: AdminRequest, state: AdminState) -> AdminResponse:
    try:
        text = state.render_metrics()
    except Exception as exc:
        log.error("Failed to format metrics: %s", exc)
        return _internal_error(exc)
    body = text.encode("utf-8")
    gzipped = any(
        "gzip" in (_visible_ascii(value) or "")
        for value in header_values(req.headers, b"accept-encoding")
    )
    if gzipped:
        return AdminResponse(
            200,
            [(b"content-encoding", b"gzip"), (b"content-type", TEXT_PLAIN)],
            gzip.compress(body, compresslevel=1, mtime=0),
        )
    return _text(200, body)


def _log_level(req: AdminRequest, state: AdminState) -> AdminResponse:
    if not req.from_loopback:
        return _forbidden()
    handle = state.log_level
    if handle is None:
        return AdminResponse(404)
    if req.method == b"GET":
        try:
            return AdminResponse(200, [], handle.get().encode("utf-8"))
        except Exception as exc:
            log.error("Failed to get the log level: %s", exc)
            return _internal_error(exc)
    if req.method == b"PUT":
        try:
            text = req.body.decode("utf-8")
        except UnicodeDecodeError as exc:
            return AdminResponse(400, [], f"invalid UTF-8 in log filter: {exc.reason}".encode())
        try:
            handle.set(text)
        except ValueError as exc:
            log.warning("Setting log level failed: %s", exc)
            return AdminResponse(400, [], str(exc).encode("utf-8", "replace"))
        except Exception as exc:
            log.error("Failed to set the log level: %s", exc)
            return _internal_error(exc)
        return AdminResponse(204)
    return AdminResponse(405, [(b"allow", b"GET"), (b"allow", b"PUT")])


def _json(status: int, value: object) -> AdminResponse:
    body = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return AdminResponse(status, [(b"content-type", APPLICATION_JSON)], body)


def _json_error(message: str, status: int) -> AdminResponse:
    return _json(status, {"error": message, "status": status})


def _accepts_json(req: AdminRequest) -> AdminResponse | None:
    """None if the client takes JSON, else the response refusing the request."""
    values = header_values(req.headers, b"accept")
    if not values:
        return None
    try:
        accept = values[0].decode("utf-8")
    except UnicodeDecodeError:
        return _json_error("Accept header must be UTF-8", 400)
    if "application/json" in accept or "application/*" in accept or "*/*" in accept:
        return None
    log.warning("Accept header will not accept 'application/json': %r", accept)
    return AdminResponse(406, [], APPLICATION_JSON)


def _lossy(text: str) -> str:
    # os.environ carries undecodable bytes as surrogates; show them as U+FFFD.
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _env_json(req: AdminRequest, state: AdminState) -> AdminResponse:
    if req.method != b"GET":
        return AdminResponse(405)
    refusal = _accepts_json(req)
    if refusal is not None:
        return refusal
    _, query = split_target(req.target)
    env: Mapping[str, str] = state.env
    if query is None:
        return _json(200, {_lossy(k): _lossy(v) for k, v in env.items()})
    if "=" in query:
        return _json_error("env.json query parameters may not contain key-value pairs", 400)
    selected: dict[str, str | None] = {}
    for name in query.split("&"):
        value = env.get(name) if name else None
        selected[name] = None if value is None else _lossy(value)
    return _json(200, selected)


def _shutdown(req: AdminRequest, state: AdminState) -> AdminResponse:
    if req.method != b"POST":
        return AdminResponse(405)
    if not req.from_loopback:
        return _forbidden()
    if state.shutdown is None:
        return _text(404, b"shutdown endpoint is not enabled\n")
    try:
        state.shutdown()
    except Exception as exc:
        log.error("Failed to trigger shutdown: %s", exc)
        return _text(500, b"shutdown listener dropped\n")
    return _text(200, b"shutdown\n")


_ROUTES: dict[str, Callable[[AdminRequest, AdminState], AdminResponse]] = {
    "/live": _live,
    "/ready": _ready,
    "/metrics": _metrics,
    "/proxy-log-level": _log_level,
    "/env.json": _env_json,
    "/shutdown": _shutdown,
}
