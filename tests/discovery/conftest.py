"""Fixtures for the discovery tests: fake Destination and OutboundPolicies servers.

The servers are the generated grpclib ``*Base`` classes, run on their own
trio-asyncio loop on 127.0.0.1 (as a control plane runs apart from the proxy).
Each call takes the next :class:`Script`: messages to stream, then how to end
(hang open, end cleanly, or fail with a gRPC status).
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator
from typing import Any

import attrs
import pytest
import trio
import trio_asyncio
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.server import Server

import linkerd_proxy.api as api
from linkerd_proxy.addrs import SocketAddr
from linkerd_proxy.grpc.bridge import Bridge, open_bridge
from linkerd_proxy.grpc.client import ControlClient
from linkerd_proxy.grpc.dns import DnsResolver, DnsSettings
from linkerd_proxy.transport.backoff import ExponentialBackoff

LOCAL = ipaddress.IPv4Address("127.0.0.1")
BACKOFF = ExponentialBackoff(0.01, 0.05)


@attrs.define
class Script:
    """One call's behaviour: stream ``messages``, then hang (``end=None``), end
    (``end="eos"``) or fail with a status."""

    messages: list[Any]
    end: Status | str | None = None


class Scripted:
    """The calls seen and the scripts left, shared by a fake service's methods."""

    def __init__(self, scripts: list[Script]) -> None:
        self.scripts = scripts
        self.requests: list[Any] = []

    async def run(self, request: Any) -> AsyncIterator[Any]:
        self.requests.append(request)
        script = self.scripts.pop(0) if self.scripts else Script([])
        for message in script.messages:
            yield message
        if script.end is None:
            await asyncio.sleep(3600)
        elif isinstance(script.end, Status):
            raise GRPCError(script.end, "scripted failure")


class FakeDestination(api.destination.DestinationBase):
    def __init__(self, get: list[Script] | None = None, profile: list[Script] | None = None):
        self.get_calls = Scripted(get or [])
        self.profile_calls = Scripted(profile or [])

    async def get(self, message: api.destination.GetDestination) -> AsyncIterator[Any]:
        async for m in self.get_calls.run(message):
            yield m

    async def get_profile(self, message: api.destination.GetDestination) -> AsyncIterator[Any]:
        async for m in self.profile_calls.run(message):
            yield m


class FakePolicies(api.outbound.OutboundPoliciesBase):
    def __init__(self, watch: list[Script]) -> None:
        self.calls = Scripted(watch)

    async def watch(self, message: api.outbound.TrafficSpec) -> AsyncIterator[Any]:
        async for m in self.calls.run(message):
            yield m


class Servers:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.running: list[Server] = []

    async def start(self, service: Any) -> int:
        server = Server([service])
        await trio_asyncio.aio_as_trio(server.start, loop=self.loop)("127.0.0.1", 0)
        assert server._server is not None
        self.running.append(server)
        port: int = server._server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return port

    async def stop_all(self) -> None:
        for server in self.running:
            server.close()
            await trio_asyncio.aio_as_trio(server.wait_closed, loop=self.loop)()
        self.running.clear()


@pytest.fixture
async def servers() -> AsyncIterator[Servers]:
    async with trio_asyncio.open_loop() as loop:
        s = Servers(loop)
        try:
            yield s
        finally:
            with trio.move_on_after(5):
                await s.stop_all()


@pytest.fixture
async def bridge() -> AsyncIterator[Bridge]:
    async with open_bridge() as b:
        yield b


def client_for(bridge: Bridge, port: int, **kw: Any) -> ControlClient:
    resolver = DnsResolver(DnsSettings(assumed_ttl=0.1, floor=0.05), lookup=_local)
    return ControlClient(bridge, SocketAddr(LOCAL, port), resolver=resolver, backoff=BACKOFF, **kw)


async def _local(name: str) -> list[Any]:
    return [LOCAL]
