"""Outbound discovery for one original destination: profile and policy, watched.

One :class:`Discovery` per original destination lives in an idle cache (outbound
5 s by default) and is held by every connection to that destination. On first use
it starts, in the background nursery, ``GetProfile`` (when the IP is in
``DESTINATION_PROFILE_NETWORKS``) and ``OutboundPolicies.Watch`` in parallel, and
recomputes its :class:`~linkerd_proxy.outbound.routing.Routing` on every update.
Without a control plane nothing here starts, and nothing gRPC is imported: the
clients are annotations only, and ``discovery.policy`` is imported by the first
policy watch.

A connection waits for the first decision at most the fail-fast timeout (a silent
controller gives 504, as the reference's discovery tests expect); a policy lookup
the controller rejects (InvalidArgument/FailedPrecondition) fails the connection.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import attrs
import trio

from linkerd_proxy.addrs import SocketAddr
from linkerd_proxy.discovery.profiles import open_profile, should_lookup_profile
from linkerd_proxy.errors import DiscoveryRejected, FailFast, PolicyNotFound
from linkerd_proxy.outbound.routing import NOT_FOUND, NotFound, Routing, decide

if TYPE_CHECKING:
    from linkerd_proxy.discovery.policy_model import OutboundPolicy
    from linkerd_proxy.discovery.profiles import IpNetwork, Profile
    from linkerd_proxy.grpc.client import ControlClient

log = logging.getLogger(__name__)


@attrs.frozen
class DiscoveryClients:
    """The control-plane clients and lookup settings of the outbound proxy.

    ``destination`` or ``policy`` is ``None`` when that service is not configured
    (no profile lookups; every policy is "not found").
    """

    destination: ControlClient | None
    policy: ControlClient | None
    context_token: str = ""
    workload: str = ""
    profile_suffixes: frozenset[str] = frozenset()
    profile_networks: frozenset[IpNetwork] = frozenset()
    detect_timeout: float = 10.0


class _Pending:
    """Not answered yet."""


_PENDING = _Pending()


class Discovery:
    """What discovery says about one original destination.

    Args:
        orig_dst: the destination.
        clients: the control-plane clients.
        background: where the watches run (started on first use).
    """

    def __init__(
        self, orig_dst: SocketAddr, clients: DiscoveryClients, background: trio.Nursery
    ) -> None:
        self.orig_dst = orig_dst
        self._clients = clients
        self._background = background
        self._scope: trio.CancelScope | None = None
        self._profile: Profile | _Pending | None = _PENDING
        self._policy: OutboundPolicy | NotFound | _Pending = _PENDING
        self._routing: Routing | None = None
        self._error: BaseException | None = None
        self._changed = trio.Event()

    @property
    def current(self) -> Routing | None:
        """The latest decision (``None`` until both lookups answered)."""
        return self._routing

    async def routing(self, timeout: float) -> Routing:  # noqa: ASYNC109 (fail-fast budget)
        """The current decision, waiting for the first at most ``timeout`` seconds.

        Raises:
            FailFast: discovery did not answer in time.
            DiscoveryRejected: the policy controller rejected the lookup.
        """
        if self._routing is not None:
            return self._routing
        self._start()
        with trio.move_on_after(timeout):
            while self._routing is None and self._error is None:
                await self._changed.wait()
        if self._error is not None:
            raise self._error
        if self._routing is None:
            raise FailFast(f"no discovery answer for {self.orig_dst} in {timeout:g}s")
        return self._routing

    def _start(self) -> None:
        if self._scope is None:
            self._scope = trio.CancelScope()
            self._background.start_soon(self._run)

    async def aclose(self) -> None:
        """Stop watching (idle-cache eviction)."""
        if self._scope is not None:
            self._scope.cancel()
        await trio.lowlevel.checkpoint()

    async def _run(self) -> None:
        assert self._scope is not None
        with self._scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_profile)
                nursery.start_soon(self._watch_policy)

    def _changed_now(self) -> None:
        if not isinstance(self._profile, _Pending) and not isinstance(self._policy, _Pending):
            self._routing = decide(self.orig_dst, self._profile, self._policy)
            log.debug("%s routes to %s", self.orig_dst, self._routing)
        self._changed.set()
        self._changed = trio.Event()

    async def _watch_profile(self) -> None:
        c = self._clients
        if c.destination is None or not should_lookup_profile(
            self.orig_dst, c.profile_suffixes, c.profile_networks
        ):
            self._profile = None
            self._changed_now()
            return
        # Errors leave the watch's nursery as exception groups: hence except*.
        try:
            async with open_profile(c.destination, self.orig_dst, c.context_token) as watch:
                async for profile in watch:
                    self._profile = profile
                    self._changed_now()
        except* DiscoveryRejected as group:
            log.debug("no profile for %s: %s", self.orig_dst, group.exceptions[0])
            self._profile = None
            self._changed_now()

    async def _watch_policy(self) -> None:
        c = self._clients
        if c.policy is None:
            self._policy = NOT_FOUND
            self._changed_now()
            return
        from linkerd_proxy.discovery.policy import open_policy  # see the module doc

        try:
            async with open_policy(
                c.policy, c.workload, self.orig_dst, detect_timeout=c.detect_timeout
            ) as watch:
                async for policy in watch:
                    self._policy = policy
                    self._changed_now()
        except* PolicyNotFound:
            self._policy = NOT_FOUND
            self._changed_now()
        except* DiscoveryRejected as group:
            exc = group.exceptions[0]
            log.info("outbound policy for %s rejected: %s", self.orig_dst, exc)
            self._error = exc
            self._changed_now()
