"""The fake control plane's command surface, and its JSON-over-HTTP admin server.

Part of the fake control plane (:mod:`linkerd_proxy.testing.control`), on its
asyncio loop. Every test action is a *command*: a service (``dst``, ``outbound``,
``inbound``, ``identity``, ``server``), a method from :data:`COMMANDS`, and keyword
arguments. :func:`dispatch` runs one against the state; in-process tests reach it
through trio-asyncio, the process mode through the admin server here:

- ``POST /call`` with ``{"service": s, "method": m, "args": {...}}`` answers
  ``200 {"result": ...}``, or ``400 {"error": "..."}`` when the command is unknown
  or its arguments are wrong.
- ``GET /ready`` answers ``200 ok``.

Arguments and results cross as JSON through :func:`encode` / :func:`decode`, which
keep socket addresses, :class:`Endpoint` values and API messages (protobuf bytes,
base64) intact.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib
import json
from typing import Any

import betterproto2

from linkerd_proxy.addrs import SocketAddr
from linkerd_proxy.testing.control.server import ControlPlaneState, GrpcServer
from linkerd_proxy.testing.control.values import Endpoint

#: The methods each service offers to tests (anything else is refused).
COMMANDS: dict[str, frozenset[str]] = {
    "dst": frozenset(
        {
            "set_endpoints",
            "add",
            "remove",
            "no_endpoints",
            "forget",
            "reject",
            "fail_streams",
            "go_silent",
            "resume",
            "get_count",
            "active_gets",
            "endpoints",
            "profile",
            "profile_not_found",
            "fail_profile_streams",
            "profile_count",
        }
    ),
    "outbound": frozenset({"set", "not_found", "fail_streams", "count"}),
    "inbound": frozenset({"set", "not_found", "count"}),
    "identity": frozenset({"fail", "go_down", "come_up", "set_lifetime"}),
    "server": frozenset({"start", "stop"}),
    "info": frozenset({"addr", "certify_count", "issued", "trust_anchors_pem", "running"}),
}

_API_PREFIX = "linkerd_proxy.api."


class CommandError(Exception):
    """A command that does not exist, or whose arguments do not fit."""


def encode(value: Any) -> Any:
    """``value`` as JSON-compatible data that :func:`decode` turns back into it."""
    if isinstance(value, SocketAddr):
        return {"$addr": str(value)}
    if isinstance(value, Endpoint):
        return {
            "$endpoint": {
                "addr": str(value.addr),
                "labels": dict(value.labels),
                "tls_identity": value.tls_identity,
                "protocol_hint": value.protocol_hint,
                "opaque_port": value.opaque_port,
                "weight": value.weight,
                "authority_override": value.authority_override,
            }
        }
    if isinstance(value, betterproto2.Message):
        cls = type(value)
        return {
            "$msg": f"{cls.__module__}:{cls.__qualname__}",
            "b64": base64.b64encode(bytes(value)).decode(),
        }
    if isinstance(value, list | tuple):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise CommandError(f"cannot encode {type(value).__name__}")


def _message_class(name: str) -> type[betterproto2.Message]:
    module_name, _, qualname = name.partition(":")
    if not module_name.startswith(_API_PREFIX):
        raise CommandError(f"not an API message: {name}")
    cls = getattr(importlib.import_module(module_name), qualname, None)
    if not (isinstance(cls, type) and issubclass(cls, betterproto2.Message)):
        raise CommandError(f"not an API message: {name}")
    return cls


def decode(data: Any) -> Any:
    """The value :func:`encode` made ``data`` from.

    Raises:
        CommandError: ``data`` names something that is not an API message.
    """
    if isinstance(data, list):
        return [decode(v) for v in data]
    if isinstance(data, dict):
        if "$addr" in data:
            return SocketAddr.parse(data["$addr"])
        if "$endpoint" in data:
            return Endpoint(**data["$endpoint"])
        if "$msg" in data:
            return _message_class(data["$msg"]).parse(base64.b64decode(data["b64"]))
        return {k: decode(v) for k, v in data.items()}
    return data


async def dispatch(
    state: ControlPlaneState, grpc: GrpcServer, service: str, method: str, args: dict[str, Any]
) -> Any:
    """Run one command on the control plane's loop and return its result.

    Raises:
        CommandError: unknown command or arguments that do not fit.
    """
    if method not in COMMANDS.get(service, frozenset()):
        raise CommandError(f"unknown command {service}.{method}")
    if service == "server":
        if args:
            raise CommandError(f"server.{method} takes no arguments")
        return await (grpc.start() if method == "start" else grpc.stop())
    if service == "info":
        return _info(state, grpc, method)
    target = {
        "dst": state.dst,
        "outbound": state.outbound,
        "inbound": state.inbound,
        "identity": state.identity,
    }[service]
    try:
        return getattr(target, method)(**args)
    except TypeError as exc:
        raise CommandError(f"{service}.{method}: {exc}") from exc


def _info(state: ControlPlaneState, grpc: GrpcServer, what: str) -> Any:
    if what == "addr":
        return grpc.addr
    if what == "running":
        return grpc.running
    if what == "certify_count":
        return state.identity.certify_count
    if what == "issued":
        return list(state.identity.issued)
    return state.ca.trust_anchors_pem


def _response(status: int, reason: str, body: bytes, content_type: str) -> bytes:
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


async def _handle(
    state: ControlPlaneState,
    grpc: GrpcServer,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> None:
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        body = await asyncio.wait_for(reader.readexactly(length), 10) if length else b""
        if method == "GET" and path == "/ready":
            reply = _response(200, "OK", b"ok\n", "text/plain")
        elif method == "POST" and path == "/call":
            try:
                request = json.loads(body)
                result = await dispatch(
                    state,
                    grpc,
                    request["service"],
                    request["method"],
                    decode(request.get("args", {})),
                )
                payload = json.dumps({"result": encode(result)}).encode()
                reply = _response(200, "OK", payload, "application/json")
            except (CommandError, KeyError, ValueError) as exc:
                payload = json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode()
                reply = _response(400, "Bad Request", payload, "application/json")
        else:
            reply = _response(404, "Not Found", b"not found\n", "text/plain")
        writer.write(reply)
        await writer.drain()
    except (OSError, ValueError, TimeoutError, asyncio.IncompleteReadError):
        pass  # a broken admin client; nothing to answer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def start_admin(
    state: ControlPlaneState, grpc: GrpcServer, host: str, port: int
) -> asyncio.Server:
    """Start the admin server on ``host:port`` (0: any) and return it."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _handle(state, grpc, reader, writer)

    return await asyncio.start_server(handle, host, port, reuse_address=True)


__all__ = ["COMMANDS", "CommandError", "decode", "dispatch", "encode", "start_admin"]
