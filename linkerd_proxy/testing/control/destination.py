"""The fake Destination service: ``Get`` (endpoints) and ``GetProfile`` (profiles).

Part of the fake control plane (:mod:`linkerd_proxy.testing.control`), on its
asyncio loop. A test sets the endpoints of a destination path (``name:port``) and the
profile of a target; :class:`FakeDestination` answers streams as the real destination
controller does:

- ``Get``: the first message of a stream is the current state (``Add`` of every
  endpoint, or ``NoEndpoints``); later changes are sent as diffs (``Add``, ``Remove``,
  ``NoEndpoints``). Unknown paths are refused as the controller refuses them: an IP
  (``INVALID_ARGUMENT``), a name outside ``<svc>.<ns>.svc.<cluster-domain>``
  (``INVALID_ARGUMENT``), an unknown service (``NOT_FOUND``).
- ``GetProfile``: the current profile, re-sent whole on every change. Unknown targets:
  a service name in the cluster domain gets the default (empty) profile with its fully
  qualified name, an IP gets a profile whose ``endpoint`` is that address, any other
  name ``INVALID_ARGUMENT``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence

import attrs

import linkerd_proxy.api as api
from linkerd_proxy.addrs import SocketAddr
from linkerd_proxy.grpc.status import Code
from linkerd_proxy.testing.control.streams import Streams, grpc_error
from linkerd_proxy.testing.control.values import (
    Endpoint,
    normalize_path,
    tcp_address,
    to_socket_addr,
)

dst = api.destination


def _split(path: str) -> tuple[str, str]:
    host, _, port = path.rpartition(":")
    return host.strip("[]"), port


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _service_name(host: str, cluster_domain: str) -> str | None:
    """``svc.ns`` if ``host`` is ``<svc>.<ns>.svc.<cluster-domain>`` (or a pod's name in it)."""
    labels = host.rstrip(".").split(".")
    suffix = ["svc", *cluster_domain.split(".")]
    if labels[-len(suffix) :] != suffix or len(labels) - len(suffix) not in (2, 3):
        return None
    svc, ns = labels[-len(suffix) - 2], labels[-len(suffix) - 1]
    return f"{svc}.{ns}"


def _add(endpoints: Iterable[Endpoint], set_labels: Mapping[str, str]) -> api.destination.Update:
    addrs = [ep.to_proto() for ep in endpoints]
    return dst.Update(add=dst.WeightedAddrSet(addrs=addrs, metric_labels=dict(set_labels)))


def _remove(addrs: Iterable[SocketAddr]) -> api.destination.Update:
    return dst.Update(remove=dst.AddrSet(addrs=[tcp_address(a) for a in addrs]))


def _no_endpoints(exists: bool) -> api.destination.Update:
    return dst.Update(no_endpoints=dst.NoEndpoints(exists=exists))


@attrs.define
class _Service:
    endpoints: dict[SocketAddr, Endpoint] = attrs.field(factory=dict)
    set_labels: dict[str, str] = attrs.field(factory=dict)
    exists: bool = True

    def snapshot(self) -> api.destination.Update:
        if self.endpoints:
            return _add(self.endpoints.values(), self.set_labels)
        return _no_endpoints(self.exists)


@attrs.frozen
class _Rejection:
    code: int
    message: str


class FakeDestination(api.destination.DestinationBase):
    """The Destination service's state and handlers (asyncio side).

    Every method but the two handlers is synchronous and must be called on the
    control plane's loop (:mod:`linkerd_proxy.testing.control_plane` does).

    Args:
        cluster_domain: the cluster domain names are checked against.
    """

    def __init__(self, cluster_domain: str = "cluster.local") -> None:
        self.cluster_domain = cluster_domain
        self._services: dict[str, _Service] = {}
        self._rejected: dict[str, _Rejection] = {}
        self._silent: set[str] = set()
        self._profiles: dict[str, api.destination.DestinationProfile] = {}
        self._profile_rejected: dict[str, _Rejection] = {}
        self.gets: Streams[str, api.destination.Update] = Streams()
        self.profiles: Streams[str, api.destination.DestinationProfile] = Streams()

    # ------------------------------------------------------------ endpoints

    def set_endpoints(
        self,
        name: str,
        endpoints: Sequence[Endpoint],
        set_labels: Mapping[str, str] | None = None,
    ) -> None:
        """Make ``endpoints`` the whole endpoint set of ``name``; watchers get the diff."""
        path = normalize_path(name)
        self._rejected.pop(path, None)
        svc = self._services.setdefault(path, _Service())
        new = {ep.addr: ep for ep in endpoints}
        labels_changed = set_labels is not None and dict(set_labels) != svc.set_labels
        if set_labels is not None:
            svc.set_labels = dict(set_labels)
        svc.exists = True
        if not new:
            svc.endpoints = {}
            self.gets.push(path, _no_endpoints(True))
            return
        gone = [addr for addr in svc.endpoints if addr not in new]
        changed = [
            ep for addr, ep in new.items() if labels_changed or svc.endpoints.get(addr) != ep
        ]
        svc.endpoints = new
        if gone:
            self.gets.push(path, _remove(gone))
        if changed:
            self.gets.push(path, _add(changed, svc.set_labels))

    def add(
        self,
        name: str,
        endpoints: Sequence[Endpoint],
        set_labels: Mapping[str, str] | None = None,
    ) -> None:
        """Add ``endpoints`` to ``name`` (replacing any at the same address)."""
        path = normalize_path(name)
        self._rejected.pop(path, None)
        svc = self._services.setdefault(path, _Service())
        if set_labels is not None:
            svc.set_labels = dict(set_labels)
        svc.exists = True
        for ep in endpoints:
            svc.endpoints[ep.addr] = ep
        if endpoints:
            self.gets.push(path, _add(endpoints, svc.set_labels))

    def remove(self, name: str, addrs: Sequence[SocketAddr | str]) -> None:
        """Remove the endpoints at ``addrs`` from ``name``; watchers get a ``Remove``."""
        path = normalize_path(name)
        svc = self._services.setdefault(path, _Service())
        gone = [a for a in map(to_socket_addr, addrs) if svc.endpoints.pop(a, None) is not None]
        if gone:
            self.gets.push(path, _remove(gone))

    def no_endpoints(self, name: str, exists: bool = True) -> None:
        """Clear ``name``; watchers get ``NoEndpoints{exists}`` (false: it does not exist)."""
        path = normalize_path(name)
        self._rejected.pop(path, None)
        svc = self._services.setdefault(path, _Service())
        svc.endpoints = {}
        svc.exists = exists
        self.gets.push(path, _no_endpoints(exists))

    def forget(self, name: str) -> None:
        """Make ``name`` unknown again (open streams keep what they had)."""
        path = normalize_path(name)
        self._services.pop(path, None)
        self._rejected.pop(path, None)

    def reject(self, name: str, code: int = Code.INVALID_ARGUMENT, message: str = "") -> None:
        """Refuse ``Get`` of ``name`` with ``code`` from now on, and end its open streams so."""
        path = normalize_path(name)
        self._rejected[path] = _Rejection(int(code), message or f"Invalid authority: {path}")
        self.gets.end(path, int(code), self._rejected[path].message)

    def fail_streams(
        self, name: str | None = None, code: int = Code.UNAVAILABLE, message: str = ""
    ) -> int:
        """End the open ``Get`` streams of ``name`` (``None``: all) with ``code``.

        Returns:
            How many streams were ended. A client reconnecting gets the current state.
        """
        path = None if name is None else normalize_path(name)
        return self.gets.end(path, int(code), message or "fake destination: stream failed")

    def go_silent(self, name: str | None = None) -> int:
        """Keep ``name``'s ``Get`` streams open but send nothing more, on new streams too.

        Returns:
            How many open streams went silent.
        """
        if name is None:
            self._silent.add("*")
            return self.gets.silence(None)
        path = normalize_path(name)
        self._silent.add(path)
        return self.gets.silence(path)

    def resume(self, name: str | None = None) -> None:
        """New ``Get`` streams of ``name`` (``None``: all) are answered again.

        Streams that went silent stay silent, as a stalled stream would.
        """
        if name is None:
            self._silent.clear()
        else:
            self._silent.discard(normalize_path(name))

    def get_count(self, name: str) -> int:
        """How many ``Get`` streams were opened for ``name``."""
        return self.gets.opened[normalize_path(name)]

    def active_gets(self, name: str) -> int:
        """How many ``Get`` streams for ``name`` are open now."""
        return self.gets.active(normalize_path(name))

    def endpoints(self, name: str) -> list[str]:
        """The addresses ``name`` has now, sorted."""
        svc = self._services.get(normalize_path(name))
        return sorted(str(a) for a in svc.endpoints) if svc else []

    # ------------------------------------------------------------ profiles

    def profile(
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

        Args:
            fqn: the fully qualified name; ``None`` gives the target's host for names
                and nothing for IPs, as the controller does.
        """
        path = normalize_path(target)
        host, _ = _split(path)
        if fqn is None:
            fqn = "" if _is_ip(host) else host
        profile = dst.DestinationProfile(
            routes=list(routes),
            retry_budget=retry_budget,
            dst_overrides=list(dst_overrides),
            opaque_protocol=opaque_protocol,
            fully_qualified_name=fqn,
            endpoint=endpoint.to_proto() if endpoint is not None else None,
        )
        self._profile_rejected.pop(path, None)
        self._profiles[path] = profile
        self.profiles.push(path, profile)

    def profile_not_found(
        self, target: str, code: int = Code.INVALID_ARGUMENT, message: str = ""
    ) -> None:
        """Refuse ``GetProfile`` of ``target`` with ``code``, ending its open streams so."""
        path = normalize_path(target)
        self._profiles.pop(path, None)
        self._profile_rejected[path] = _Rejection(
            int(code), message or f"Invalid authority: {path}"
        )
        self.profiles.end(path, int(code), self._profile_rejected[path].message)

    def fail_profile_streams(
        self, target: str | None = None, code: int = Code.UNAVAILABLE, message: str = ""
    ) -> int:
        """End the open ``GetProfile`` streams of ``target`` (``None``: all) with ``code``."""
        path = None if target is None else normalize_path(target)
        return self.profiles.end(path, int(code), message or "fake destination: stream failed")

    def profile_count(self, target: str) -> int:
        """How many ``GetProfile`` streams were opened for ``target``."""
        return self.profiles.opened[normalize_path(target)]

    # ------------------------------------------------------------ handlers

    def _first_update(self, path: str) -> api.destination.Update:
        rejected = self._rejected.get(path)
        if rejected is not None:
            raise grpc_error(rejected.code, rejected.message)
        svc = self._services.get(path)
        if svc is not None:
            return svc.snapshot()
        host, _ = _split(path)
        if _is_ip(host):
            raise grpc_error(
                Code.INVALID_ARGUMENT, f"IP queries not supported by Get API: host={host}"
            )
        service = _service_name(host, self.cluster_domain)
        if service is None:
            raise grpc_error(Code.INVALID_ARGUMENT, f"Invalid authority: {path}")
        raise grpc_error(Code.NOT_FOUND, f"Service {service} not found")

    async def get(self, message: api.destination.GetDestination) -> AsyncIterator[dst.Update]:
        path = normalize_path(message.path)
        stream = self.gets.open(path)
        try:
            first = self._first_update(path)
            if path in self._silent or "*" in self._silent:
                stream.silent = True
            else:
                yield first
            async for update in stream.messages():
                yield update
        finally:
            self.gets.close(path, stream)

    def _first_profile(self, path: str) -> api.destination.DestinationProfile:
        rejected = self._profile_rejected.get(path)
        if rejected is not None:
            raise grpc_error(rejected.code, rejected.message)
        profile = self._profiles.get(path)
        if profile is not None:
            return profile
        host, _ = _split(path)
        if _is_ip(host):
            ep = Endpoint(SocketAddr.parse(path))
            return dst.DestinationProfile(endpoint=ep.to_proto())
        if _service_name(host, self.cluster_domain) is None:
            raise grpc_error(Code.INVALID_ARGUMENT, f"invalid service {host!r}")
        return dst.DestinationProfile(fully_qualified_name=host.rstrip("."))

    async def get_profile(
        self, message: api.destination.GetDestination
    ) -> AsyncIterator[dst.DestinationProfile]:
        path = normalize_path(message.path)
        stream = self.profiles.open(path)
        try:
            yield self._first_profile(path)
            async for profile in stream.messages():
                yield profile
        finally:
            self.profiles.close(path, stream)


__all__ = ["FakeDestination"]
