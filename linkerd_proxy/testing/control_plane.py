"""A fake Linkerd control plane that tests drive: Destination, Policy and Identity.

Part of the public test harness (:mod:`linkerd_proxy.testing`). The servers speak the
real API (grpclib, from the generated bases in :mod:`linkerd_proxy.api`); their parts
live in :mod:`linkerd_proxy.testing.control`. Two ways to run it, with the same
methods on both:

- in-process, in a trio test: ``async with open_control_plane() as cp:`` runs the
  servers on a trio-asyncio loop and yields a :class:`FakeControlPlane`;
- as a process, next to a real binary (e.g. in a network namespace):
  ``python -m linkerd_proxy.testing.control_plane --listen ip:port --admin ip:port``,
  driven through its JSON-over-HTTP admin API by :class:`ControlPlaneClient`.

Both offer ``dst`` (:class:`DestinationControl`), ``policy`` (:class:`PolicyControl`),
``identity`` (:class:`IdentityControl`), ``stop()``/``start()`` (an outage of every
service), ``grpc_addr()`` and ``proxy_env()``. See docs/testing.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
from collections.abc import AsyncIterator, Sequence
from typing import Any

import trio
import trio_asyncio

from linkerd_proxy.addrs import SocketAddr
from linkerd_proxy.testing.control.admin import CommandError, decode, dispatch, encode, start_admin
from linkerd_proxy.testing.control.facade import (
    Call,
    ControlFacade,
    DestinationControl,
    IdentityControl,
    PolicyControl,
    poll_until,
)
from linkerd_proxy.testing.control.identity import TestCa
from linkerd_proxy.testing.control.policy import (
    all_unauthenticated,
    outbound_default,
    outbound_opaque,
)
from linkerd_proxy.testing.control.server import ControlPlaneState, GrpcServer
from linkerd_proxy.testing.control.values import (
    Endpoint,
    dst_override,
    retry_budget,
    route,
)


class FakeControlPlane(ControlFacade):
    """The in-process fake control plane, yielded by :func:`open_control_plane`.

    Attributes:
        addr: where the gRPC services listen.
        state: the asyncio-side services (for inspection; mutate them only through
            the methods here, which run on their loop).
    """

    def __init__(self, call: Call, addr: SocketAddr, state: ControlPlaneState) -> None:
        super().__init__(call)
        self.addr = addr
        self.state = state


@contextlib.asynccontextmanager
async def open_control_plane(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    tls_names: Sequence[str] = (),
    cluster_domain: str = "cluster.local",
    identity_lifetime: float = 24 * 3600.0,
) -> AsyncIterator[FakeControlPlane]:
    """Run the fake control plane in this trio test, on a trio-asyncio loop.

    Args:
        host: the address to listen on.
        port: the port (0: any free one; see ``cp.addr``).
        tls_names: when given, serve TLS 1.3 with a certificate for these names from
            the test CA (the names a proxy verifies: ``*_SVC_NAME``).
        cluster_domain: names outside ``svc.<cluster_domain>`` are invalid lookups.
        identity_lifetime: how long issued leaves are valid, in seconds.

    Cancellation: leaving the block stops the servers and closes every stream.
    """
    async with trio_asyncio.open_loop() as loop:
        state = ControlPlaneState(cluster_domain, identity_lifetime)
        ssl_context = state.ca.server_context(tls_names) if tls_names else None
        grpc = GrpcServer(state, host, port, ssl_context)

        async def on_loop(service: str, method: str, args: dict[str, Any]) -> Any:
            return await dispatch(state, grpc, service, method, args)

        async def call(service: str, method: str, args: dict[str, Any]) -> Any:
            return await trio_asyncio.aio_as_trio(on_loop, loop=loop)(service, method, args)

        addr = await call("server", "start", {})
        try:
            yield FakeControlPlane(call, addr, state)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await call("server", "stop", {})


class ControlPlaneClient(ControlFacade):
    """Drives a fake control plane process through its admin API.

    Args:
        admin_addr: the process's ``--admin`` address.
        timeout: bound on each admin request, in seconds.
    """

    def __init__(self, admin_addr: SocketAddr | str, timeout: float = 10.0) -> None:
        super().__init__(self._remote)
        self.admin_addr = (
            admin_addr if isinstance(admin_addr, SocketAddr) else SocketAddr.parse(admin_addr)
        )
        self.timeout = timeout

    async def _request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        host, port = self.admin_addr.to_sockaddr()
        with trio.fail_after(self.timeout):
            stream = await trio.open_tcp_stream(host, port)
            async with stream:
                head = (
                    f"{method} {path} HTTP/1.1\r\nhost: {self.admin_addr}\r\n"
                    f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
                    "connection: close\r\n\r\n"
                )
                await stream.send_all(head.encode() + body)
                data = bytearray()
                while chunk := await stream.receive_some(65536):
                    data += chunk
        head_bytes, _, payload = bytes(data).partition(b"\r\n\r\n")
        status = int(head_bytes.split(b" ", 2)[1])
        return status, payload

    async def _remote(self, service: str, method: str, args: dict[str, Any]) -> Any:
        body = json.dumps({"service": service, "method": method, "args": encode(args)}).encode()
        status, payload = await self._request("POST", "/call", body)
        reply = json.loads(payload)
        if status != 200:
            raise CommandError(reply.get("error", f"admin answered {status}"))
        return decode(reply["result"])

    async def wait_ready(self) -> None:
        """Wait until the process answers on its admin address.

        Cancellation: bound it with ``trio.fail_after``; it polls every 10 ms.
        """

        async def check() -> bool:
            try:
                status, _ = await self._request("GET", "/ready")
            except OSError:
                return False
            return status == 200

        await poll_until(check)


async def _serve(args: argparse.Namespace) -> None:
    ca = TestCa.shared(args.ca_dir, args.cluster_domain) if args.ca_dir else None
    state = ControlPlaneState(args.cluster_domain, args.identity_lifetime, ca)
    listen = SocketAddr.parse(args.listen)
    admin = SocketAddr.parse(args.admin)
    ssl_context = state.ca.server_context(args.tls_name) if args.tls_name else None
    grpc = GrpcServer(state, str(listen.ip), listen.port, ssl_context)
    addr = await grpc.start()
    admin_server = await start_admin(state, grpc, str(admin.ip), admin.port)
    admin_port = admin_server.sockets[0].getsockname()[1]
    print(json.dumps({"grpc": str(addr), "admin": f"{admin.ip}:{admin_port}"}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    admin_server.close()
    await grpc.stop()


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m linkerd_proxy.testing.control_plane``: run until SIGTERM or SIGINT.

    Prints one JSON line ``{"grpc": addr, "admin": addr}`` once both listen.
    """
    parser = argparse.ArgumentParser(prog="python -m linkerd_proxy.testing.control_plane")
    parser.add_argument("--listen", default="127.0.0.1:8086", help="gRPC address (ip:port)")
    parser.add_argument("--admin", default="127.0.0.1:9990", help="admin API address (ip:port)")
    parser.add_argument("--tls-name", action="append", default=[], help="serve TLS as this name")
    parser.add_argument("--cluster-domain", default="cluster.local")
    parser.add_argument("--identity-lifetime", type=float, default=24 * 3600.0)
    parser.add_argument(
        "--ca-dir",
        help="issue from the CA saved in this directory (made and saved there if absent), "
        "so that several control planes share one CA",
    )
    asyncio.run(_serve(parser.parse_args(argv)))


__all__ = [
    "ControlFacade",
    "ControlPlaneClient",
    "DestinationControl",
    "Endpoint",
    "FakeControlPlane",
    "IdentityControl",
    "PolicyControl",
    "all_unauthenticated",
    "dst_override",
    "open_control_plane",
    "outbound_default",
    "outbound_opaque",
    "retry_budget",
    "route",
]

if __name__ == "__main__":
    main()
