"""The fake control plane's gRPC server: every service on one port, stopped at will.

Part of the fake control plane (:mod:`linkerd_proxy.testing.control`), on its
asyncio loop. :class:`ControlPlaneState` holds the four fake services;
:class:`GrpcServer` serves them with grpclib on one address. :meth:`GrpcServer.stop`
is an outage as a dying process makes one: the listener closes, running handlers
are cancelled and every connection is dropped; :meth:`GrpcServer.start` listens
again on the same port, with the services' state intact.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Sequence
from typing import Any

from grpclib.server import Server

from linkerd_proxy.addrs import SocketAddr
from linkerd_proxy.testing.control.destination import FakeDestination
from linkerd_proxy.testing.control.identity import FakeIdentity, TestCa
from linkerd_proxy.testing.control.policy import FakeInboundPolicies, FakeOutboundPolicies


class ControlPlaneState:
    """The fake services and the CA, created together.

    Args:
        cluster_domain: the cluster domain of destination names.
        identity_lifetime: the lifetime of issued leaves, in seconds.
        ca: the CA to issue from (default: a fresh one).
    """

    def __init__(
        self,
        cluster_domain: str = "cluster.local",
        identity_lifetime: float = 24 * 3600.0,
        ca: TestCa | None = None,
    ) -> None:
        self.ca = ca if ca is not None else TestCa(cluster_domain)
        self.dst = FakeDestination(cluster_domain)
        self.outbound = FakeOutboundPolicies()
        self.inbound = FakeInboundPolicies()
        self.identity = FakeIdentity(self.ca, identity_lifetime)

    @property
    def services(self) -> list[Any]:
        return [self.dst, self.outbound, self.inbound, self.identity]


class GrpcServer:
    """Serves a :class:`ControlPlaneState` over gRPC (plaintext, or TLS when given).

    Args:
        state: the services.
        host: the address to listen on.
        port: the port (0: any; the first start fixes it for later starts).
        ssl_context: a TLS server context, or ``None`` for plaintext.
    """

    def __init__(
        self,
        state: ControlPlaneState,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._state = state
        self._host = host
        self._port = port
        self._ssl = ssl_context
        self._server: Server | None = None
        self._protocols: list[Any] = []
        self.starts = 0

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def addr(self) -> SocketAddr:
        """Where the server listens (known after the first start)."""
        if self._port == 0:
            raise RuntimeError("the control plane has not started yet")
        return SocketAddr.parse(
            f"[{self._host}]:{self._port}" if ":" in self._host else f"{self._host}:{self._port}"
        )

    async def start(self) -> SocketAddr:
        """Listen (again); a no-op when running.

        Raises:
            OSError: the port cannot be bound.
        """
        if self._server is None:
            server = Server(self._state.services)
            protocols = self._protocols
            make_protocol = server._protocol_factory

            def recording_factory() -> Any:
                protocol = make_protocol()
                protocols.append(protocol)
                return protocol

            # Recorded so that stop() can drop the connections, as a dying process would.
            server._protocol_factory = recording_factory  # type: ignore[method-assign]
            family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
            await server.start(
                self._host, self._port, ssl=self._ssl, reuse_address=True, family=family
            )
            listener = server._server
            assert isinstance(listener, asyncio.Server)
            self._port = listener.sockets[0].getsockname()[1]
            self._server = server
            self.starts += 1
        return self.addr

    async def stop(self) -> None:
        """Stop listening, cancel every handler and drop every connection."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for protocol in self._protocols:
            connection = getattr(protocol, "connection", None)
            transport = getattr(connection, "_transport", None)
            if transport is not None:
                transport.abort()
        self._protocols.clear()
        await asyncio.wait_for(server.wait_closed(), 5)


def server_context(state: ControlPlaneState, names: Sequence[str]) -> ssl.SSLContext:
    """A TLS context for the server, its certificate for ``names`` from the state's CA."""
    return state.ca.server_context(names)


__all__ = ["ControlPlaneState", "GrpcServer", "server_context"]
