"""What a test calls: the trio-side faces of the fake control plane's services.

Part of the fake control plane (:mod:`linkerd_proxy.testing.control`), on the trio
side. Each method is a command (service, method, keyword arguments) handed to a
``call`` function: in-process it runs on the control plane's asyncio loop, in the
process mode it goes over the admin API. So :class:`ControlFacade` has the same
methods in both; :mod:`linkerd_proxy.testing.control_plane` builds the two.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import trio

import linkerd_proxy.api as api
from linkerd_proxy.addrs import SocketAddr
from linkerd_proxy.grpc.status import Code
from linkerd_proxy.testing.control.policy import outbound_default
from linkerd_proxy.testing.control.values import Endpoint

#: How a facade runs a command: ``(service, method, kwargs) -> result``.
Call = Callable[[str, str, dict[str, Any]], Awaitable[Any]]


async def poll_until(check: Callable[[], Awaitable[bool]]) -> None:
    # Polling, not an event: the state may be in another process.
    while not await check():  # noqa: ASYNC110
        await trio.sleep(0.01)


class DestinationControl:
    """What a test does to the Destination service (``Get`` and ``GetProfile``).

    Names are lookup paths, ``name:port`` (``:80`` is added when there is none).
    Every change reaches the open streams at once.
    """

    def __init__(self, call: Call) -> None:
        self._call = call

    async def set_endpoints(
        self, name: str, endpoints: Sequence[Endpoint], set_labels: Mapping[str, str] | None = None
    ) -> None:
        """Make ``endpoints`` the whole set of ``name``: watchers get the ``Add``/``Remove`` diff
        (``NoEndpoints{exists: true}`` when empty)."""
        args = {"name": name, "endpoints": list(endpoints), "set_labels": set_labels}
        await self._call("dst", "set_endpoints", args)

    async def add(
        self, name: str, endpoints: Sequence[Endpoint], set_labels: Mapping[str, str] | None = None
    ) -> None:
        """Add (or update) ``endpoints`` of ``name``."""
        args = {"name": name, "endpoints": list(endpoints), "set_labels": set_labels}
        await self._call("dst", "add", args)

    async def remove(self, name: str, addrs: Sequence[SocketAddr | str]) -> None:
        """Remove the endpoints at ``addrs`` from ``name``."""
        await self._call("dst", "remove", {"name": name, "addrs": [str(a) for a in addrs]})

    async def no_endpoints(self, name: str, exists: bool = True) -> None:
        """Clear ``name``: ``NoEndpoints{exists}`` (``exists=False``: it does not exist)."""
        await self._call("dst", "no_endpoints", {"name": name, "exists": exists})

    async def forget(self, name: str) -> None:
        """Make ``name`` unknown: new lookups get ``NOT_FOUND``/``INVALID_ARGUMENT``."""
        await self._call("dst", "forget", {"name": name})

    async def reject(self, name: str, code: int = Code.INVALID_ARGUMENT, message: str = "") -> None:
        """Refuse lookups of ``name`` with ``code`` from now on (ends its open streams so)."""
        await self._call("dst", "reject", {"name": name, "code": int(code), "message": message})

    async def fail_streams(
        self, name: str | None = None, code: int = Code.UNAVAILABLE, message: str = ""
    ) -> int:
        """End the open ``Get`` streams of ``name`` (``None``: all) with ``code``; returns how
        many. ``Code.OK`` ends them cleanly."""
        args = {"name": name, "code": int(code), "message": message}
        return int(await self._call("dst", "fail_streams", args))

    async def go_silent(self, name: str | None = None) -> int:
        """Keep ``name``'s ``Get`` streams open but send nothing more, new ones too; returns
        how many open streams went silent."""
        return int(await self._call("dst", "go_silent", {"name": name}))

    async def resume(self, name: str | None = None) -> None:
        """Answer new ``Get`` streams of ``name`` again (silent ones stay silent)."""
        await self._call("dst", "resume", {"name": name})

    async def get_count(self, name: str) -> int:
        """How many ``Get`` streams were opened for ``name``."""
        return int(await self._call("dst", "get_count", {"name": name}))

    async def active_gets(self, name: str) -> int:
        """How many ``Get`` streams for ``name`` are open now."""
        return int(await self._call("dst", "active_gets", {"name": name}))

    async def endpoints(self, name: str) -> list[str]:
        """The addresses ``name`` has now, sorted."""
        return list(await self._call("dst", "endpoints", {"name": name}))

    async def wait_for_gets(self, name: str, count: int) -> None:
        """Wait until ``count`` ``Get`` streams were opened for ``name`` (a reconnect).

        Cancellation: bound it with ``trio.fail_after``; it polls every 10 ms.
        """

        async def check() -> bool:
            return await self.get_count(name) >= count

        await poll_until(check)

    async def profile(
        self,
        target: str,
        *,
        routes: Sequence[api.destination.Route] = (),
        retry_budget: api.destination.RetryBudget | None = None,
        dst_overrides: Sequence[api.destination.WeightedDst] = (),
        opaque_protocol: bool = False,
        fqn: str | None = None,
        endpoint: Endpoint | None = None,
    ) -> None:
        """Set the profile of ``target`` (``name:port`` or ``ip:port``); watchers get it whole.

        See :func:`route`, :func:`retry_budget` and :func:`dst_override` for the parts.
        ``fqn=None`` gives a name's host (and nothing for an IP), as the controller does.
        """
        args = {
            "target": target,
            "routes": list(routes),
            "retry_budget": retry_budget,
            "dst_overrides": list(dst_overrides),
            "opaque_protocol": opaque_protocol,
            "fqn": fqn,
            "endpoint": endpoint,
        }
        await self._call("dst", "profile", args)

    async def profile_not_found(
        self, target: str, code: int = Code.INVALID_ARGUMENT, message: str = ""
    ) -> None:
        """Refuse ``GetProfile`` of ``target`` with ``code`` (the proxy uses no profile)."""
        args = {"target": target, "code": int(code), "message": message}
        await self._call("dst", "profile_not_found", args)

    async def fail_profile_streams(
        self, target: str | None = None, code: int = Code.UNAVAILABLE, message: str = ""
    ) -> int:
        """End the open ``GetProfile`` streams of ``target`` (``None``: all) with ``code``."""
        args = {"target": target, "code": int(code), "message": message}
        return int(await self._call("dst", "fail_profile_streams", args))

    async def profile_count(self, target: str) -> int:
        """How many ``GetProfile`` streams were opened for ``target``."""
        return int(await self._call("dst", "profile_count", {"target": target}))


class PolicyControl:
    """What a test does to the policy service (``OutboundPolicies``, ``InboundServerPolicies``).

    Targets with no policy are answered ``NOT_FOUND``, so the proxy synthesizes one.
    """

    def __init__(self, call: Call) -> None:
        self._call = call

    async def outbound_policy(
        self, target: str | SocketAddr, policy: api.outbound.OutboundPolicy
    ) -> None:
        """Set the policy of ``target`` (``ip:port`` or an authority); watchers get it."""
        await self._call("outbound", "set", {"target": str(target), "policy": policy})

    async def outbound_default(self, target: str | SocketAddr, dst_path: str) -> None:
        """Set the controller's default policy for a Service: HTTP detection and one route
        to a backend balanced over ``Destination.Get(dst_path)``."""
        await self.outbound_policy(target, outbound_default(dst_path))

    async def outbound_not_found(self, target: str | SocketAddr | None = None) -> int:
        """Forget ``target``'s policy (``None``: all): ``NOT_FOUND`` from now on (open watches
        end so); returns how many watches ended."""
        args = {"target": None if target is None else str(target)}
        return int(await self._call("outbound", "not_found", args))

    async def fail_outbound_streams(
        self, target: str | SocketAddr | None = None, code: int = Code.UNAVAILABLE
    ) -> int:
        """End the open outbound watches of ``target`` (``None``: all) with ``code``."""
        args = {"target": None if target is None else str(target), "code": int(code)}
        return int(await self._call("outbound", "fail_streams", args))

    async def outbound_count(self, target: str | SocketAddr) -> int:
        """How many outbound watches were opened for ``target``."""
        return int(await self._call("outbound", "count", {"target": str(target)}))

    async def inbound_policy(self, port: int, server: api.inbound.Server | None = None) -> None:
        """Set the policy of inbound ``port`` (default: detect, everyone authorized)."""
        await self._call("inbound", "set", {"port": port, "server": server})

    async def inbound_not_found(self, port: int | None = None) -> int:
        """Forget the policy of ``port`` (``None``: all): ``NOT_FOUND`` from now on."""
        return int(await self._call("inbound", "not_found", {"port": port}))

    async def inbound_count(self, port: int) -> int:
        """How many inbound watches were opened for ``port``."""
        return int(await self._call("inbound", "count", {"port": port}))


class IdentityControl:
    """What a test does to the identity service (a test CA answering ``Certify``)."""

    def __init__(self, call: Call) -> None:
        self._call = call

    async def fail(self, n: int = 1, code: int = Code.UNAVAILABLE) -> None:
        """Fail the next ``n`` ``Certify`` calls with ``code``."""
        await self._call("identity", "fail", {"n": n, "code": int(code)})

    async def go_down(self, code: int = Code.UNAVAILABLE) -> None:
        """Fail every call with ``code`` until :meth:`come_up`."""
        await self._call("identity", "go_down", {"code": int(code)})

    async def come_up(self) -> None:
        """Answer calls again."""
        await self._call("identity", "come_up", {})

    async def set_lifetime(self, seconds: float) -> None:
        """Issue later leaves valid for ``seconds`` (e.g. 30 for refresh tests)."""
        await self._call("identity", "set_lifetime", {"seconds": seconds})

    async def certify_count(self) -> int:
        """How many ``Certify`` calls arrived (failed ones included)."""
        return int(await self._call("info", "certify_count", {}))

    async def issued(self) -> list[str]:
        """The identities certified so far, in order."""
        return list(await self._call("info", "issued", {}))

    async def trust_anchors_pem(self) -> str:
        """The test CA's root, PEM (``LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS``)."""
        return str(await self._call("info", "trust_anchors_pem", {}))


class ControlFacade:
    """The whole control plane: ``dst``, ``policy``, ``identity``, and outages."""

    def __init__(self, call: Call) -> None:
        self._call = call
        self.dst = DestinationControl(call)
        self.policy = PolicyControl(call)
        self.identity = IdentityControl(call)

    async def stop(self) -> None:
        """An outage: stop listening and drop every connection and stream."""
        await self._call("server", "stop", {})

    async def start(self) -> None:
        """Listen again on the same address, with the state kept."""
        await self._call("server", "start", {})

    async def grpc_addr(self) -> SocketAddr:
        """Where the gRPC services listen (all of them on one port)."""
        addr = await self._call("info", "addr", {})
        assert isinstance(addr, SocketAddr)
        return addr

    async def proxy_env(self, workload: str = "test:test") -> dict[str, str]:
        """The ``LINKERD2_PROXY_*`` variables pointing a proxy at this control plane."""
        addr = str(await self.grpc_addr())
        return {
            "LINKERD2_PROXY_DESTINATION_SVC_ADDR": addr,
            "LINKERD2_PROXY_POLICY_SVC_ADDR": addr,
            "LINKERD2_PROXY_POLICY_WORKLOAD": workload,
            "LINKERD2_PROXY_IDENTITY_SVC_ADDR": addr,
        }


__all__ = [
    "Call",
    "ControlFacade",
    "DestinationControl",
    "IdentityControl",
    "PolicyControl",
    "poll_until",
]
