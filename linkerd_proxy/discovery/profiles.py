"""``Destination.GetProfile``: service profiles.

Where it sits: above ``grpc.client.ControlClient`` and ``discovery.endpoint``;
below the inbound and outbound logical stacks, which read a :class:`Profile` for
the opaque flag, per-route metrics/timeouts/retries/classification, traffic
splits (``dst_overrides``) and, for pod-IP lookups, the endpoint itself.

Which targets are looked up at all is :func:`should_lookup_profile`
(``DESTINATION_PROFILE_SUFFIXES`` / ``DESTINATION_PROFILE_NETWORKS``). The
translation (:func:`profile_from_proto`) is pure; :func:`open_profile` watches.

Importing this module loads neither the generated API nor the gRPC bridge: the
outbound stacks read :class:`Profile` and :func:`should_lookup_profile` even
without a control plane, so the gRPC types are annotations only and the codec is
built on first use.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import logging
import re
from collections.abc import AsyncIterator, Iterable
from datetime import timedelta
from typing import TYPE_CHECKING

import attrs
import trio

import linkerd_proxy.api as api
from linkerd_proxy.addrs import NameAddr, SocketAddr
from linkerd_proxy.discovery.destination import get_request
from linkerd_proxy.discovery.endpoint import (
    EndpointMeta,
    Labels,
    endpoint_from_proto,
    is_dns_name,
    labels,
)
from linkerd_proxy.errors import DiscoveryRejected, GrpcError

if TYPE_CHECKING:
    from linkerd_proxy.grpc.bridge import Codec
    from linkerd_proxy.grpc.client import ControlClient, ControlStream

log = logging.getLogger(__name__)

GET_PROFILE = "/io.linkerd.proxy.destination.Destination/GetProfile"


@functools.cache
def profile_codec() -> Codec[api.destination.GetDestination, api.destination.DestinationProfile]:
    """The codec of ``GetProfile`` calls (built once, on first use)."""
    from linkerd_proxy.grpc.bridge import Codec  # not at import: see the module doc

    return Codec(bytes, api.destination.DestinationProfile.parse)


IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def should_lookup_profile(
    target: NameAddr | SocketAddr, suffixes: Iterable[str], networks: Iterable[IpNetwork]
) -> bool:
    """Whether ``target`` may be looked up with GetProfile.

    A name must be under one of ``suffixes`` (whole labels, any case, trailing
    dots ignored; ``.`` allows every name); an IP must be in one of ``networks``.
    """
    if isinstance(target, SocketAddr):
        return any(target.ip in net for net in networks)
    name = target.name.lower().rstrip(".")
    for suffix in suffixes:
        sfx = suffix.lower().rstrip(".")
        if suffix == "." or name == sfx or name.endswith("." + sfx):
            return True
    return False


# ------------------------------------------------------------------ matches


@attrs.frozen
class PathRegex:
    """The request path matches ``regex``, anchored at both ends."""

    regex: re.Pattern[str]

    def matches(self, method: str, path: str) -> bool:
        return self.regex.fullmatch(path) is not None


@attrs.frozen
class MethodIs:
    method: str

    def matches(self, method: str, path: str) -> bool:
        return method == self.method


@attrs.frozen
class AllOf:
    matches_: tuple[RequestMatch, ...]

    def matches(self, method: str, path: str) -> bool:
        return all(m.matches(method, path) for m in self.matches_)


@attrs.frozen
class AnyOf:
    matches_: tuple[RequestMatch, ...]

    def matches(self, method: str, path: str) -> bool:
        return any(m.matches(method, path) for m in self.matches_)


@attrs.frozen
class NotMatch:
    inner: RequestMatch

    def matches(self, method: str, path: str) -> bool:
        return not self.inner.matches(method, path)


RequestMatch = PathRegex | MethodIs | AllOf | AnyOf | NotMatch


@attrs.frozen
class StatusRange:
    min: int
    max: int

    def matches(self, status: int) -> bool:
        return self.min <= status <= self.max


@attrs.frozen
class AllStatus:
    matches_: tuple[ResponseMatch, ...]

    def matches(self, status: int) -> bool:
        return all(m.matches(status) for m in self.matches_)


@attrs.frozen
class AnyStatus:
    matches_: tuple[ResponseMatch, ...]

    def matches(self, status: int) -> bool:
        return any(m.matches(status) for m in self.matches_)


@attrs.frozen
class NotStatus:
    inner: ResponseMatch

    def matches(self, status: int) -> bool:
        return not self.inner.matches(status)


ResponseMatch = StatusRange | AllStatus | AnyStatus | NotStatus


@attrs.frozen
class ResponseClass:
    """Responses matching ``condition`` are failures if ``is_failure``."""

    condition: ResponseMatch
    is_failure: bool


# ------------------------------------------------------------------- profile


@attrs.frozen
class RetryBudget:
    """A TPS retry budget: ``retry_ratio`` retries per request over ``ttl`` seconds,
    plus ``min_retries_per_second``."""

    retry_ratio: float
    min_retries_per_second: int
    ttl: float


@attrs.frozen
class ProfileRoute:
    """One profile route. ``retry_budget`` is set only when the route is retryable
    and the profile has a valid budget (otherwise it is never retried)."""

    condition: RequestMatch
    response_classes: tuple[ResponseClass, ...] = ()
    labels: Labels = ()
    is_retryable: bool = False
    timeout: float | None = None
    retry_budget: RetryBudget | None = None

    def matches(self, method: str, path: str) -> bool:
        return self.condition.matches(method, path)

    def metric_labels(self) -> dict[str, str]:
        """The route's labels as exported (``rt_<name>``)."""
        return {f"rt_{k}": v for k, v in self.labels}


@attrs.frozen
class Target:
    """A traffic-split target (``dst_overrides``): ``addr`` gets ``weight``."""

    addr: NameAddr
    weight: int


@attrs.frozen
class Profile:
    """A service profile.

    ``addr`` is the logical name (``fully_qualified_name`` with the looked-up
    port), ``None`` when the control plane gave no name. ``endpoint`` is the
    endpoint of a pod-IP lookup.
    """

    addr: NameAddr | None = None
    opaque_protocol: bool = False
    routes: tuple[ProfileRoute, ...] = ()
    targets: tuple[Target, ...] = ()
    retry_budget: RetryBudget | None = None
    endpoint: tuple[SocketAddr, EndpointMeta] | None = None

    def route_for(self, method: str, path: str) -> ProfileRoute | None:
        """The first route matching the request, if any."""
        return next((r for r in self.routes if r.matches(method, path)), None)


def _method(pb: api.http_types.HttpMethod | None) -> str | None:
    if pb is None:
        return None
    if pb.registered is not None:
        return api.http_types.HttpMethodRegistered(pb.registered).name
    return pb.unregistered or None


def request_match_from_proto(pb: api.destination.RequestMatch | None) -> RequestMatch | None:
    """A route condition; ``None`` if missing or invalid (the route is then dropped)."""
    if pb is None:
        return None
    if pb.all is not None:
        return AllOf(tuple(m for m in map(request_match_from_proto, pb.all.matches) if m))
    if pb.any is not None:
        return AnyOf(tuple(m for m in map(request_match_from_proto, pb.any.matches) if m))
    if pb.not_ is not None:
        inner = request_match_from_proto(pb.not_)
        return NotMatch(inner) if inner is not None else None
    if pb.path is not None:
        try:
            return PathRegex(re.compile(pb.path.regex.strip()))
        except re.error:
            return None
    method = _method(pb.method)
    return MethodIs(method) if method is not None else None


def response_match_from_proto(pb: api.destination.ResponseMatch | None) -> ResponseMatch | None:
    """A response condition; ``None`` if missing, invalid, or an empty all/any."""
    if pb is None:
        return None
    if pb.all is not None or pb.any is not None:
        seq = pb.all if pb.all is not None else pb.any
        assert seq is not None
        parts = tuple(m for m in map(response_match_from_proto, seq.matches) if m)
        if not parts:
            return None
        return AllStatus(parts) if pb.all is not None else AnyStatus(parts)
    if pb.not_ is not None:
        inner = response_match_from_proto(pb.not_)
        return NotStatus(inner) if inner is not None else None
    if pb.status is not None:
        lo, hi = pb.status.min, pb.status.max
        if not (100 <= lo <= 999 and 100 <= hi <= 999):
            return None
        return StatusRange(lo, hi)
    return None


def retry_budget_from_proto(pb: api.destination.RetryBudget | None) -> RetryBudget | None:
    """The budget, or ``None`` if missing or invalid (ratio 0-1000, ttl 1-60 s)."""
    if pb is None or pb.ttl is None:
        return None
    ttl = pb.ttl.total_seconds()
    if not 0.0 <= pb.retry_ratio <= 1000.0 or not 1.0 <= ttl <= 60.0:
        log.warning("ignoring invalid retry budget: %s", pb)
        return None
    if pb.min_retries_per_second > 2**31 - 1:
        return None
    return RetryBudget(pb.retry_ratio, pb.min_retries_per_second, ttl)


def _seconds(value: timedelta | None) -> float | None:
    if value is None or value.total_seconds() < 0:
        return None
    return value.total_seconds()


def route_from_proto(pb: api.destination.Route, budget: RetryBudget | None) -> ProfileRoute | None:
    condition = request_match_from_proto(pb.condition)
    if condition is None:
        return None
    classes = []
    for rc in pb.response_classes:
        match = response_match_from_proto(rc.condition)
        if match is not None:
            classes.append(ResponseClass(match, rc.is_failure))
    return ProfileRoute(
        condition=condition,
        response_classes=tuple(classes),
        labels=labels(pb.metrics_labels),
        is_retryable=pb.is_retryable,
        timeout=_seconds(pb.timeout),
        retry_budget=budget if pb.is_retryable else None,
    )


def target_from_proto(pb: api.destination.WeightedDst) -> Target | None:
    """A traffic-split target; zero weights and bad authorities are dropped."""
    if pb.weight == 0:
        return None
    try:
        addr = NameAddr.parse(pb.authority)
    except ValueError:
        return None
    return Target(addr, pb.weight)


def profile_from_proto(pb: api.destination.DestinationProfile, port: int) -> Profile:
    """Translate a profile looked up for a target on ``port``."""
    fqn = pb.fully_qualified_name
    budget = retry_budget_from_proto(pb.retry_budget)
    routes = (route_from_proto(r, budget) for r in pb.routes)
    targets = (target_from_proto(t) for t in pb.dst_overrides)
    return Profile(
        addr=NameAddr(fqn, port) if fqn and is_dns_name(fqn) else None,
        opaque_protocol=pb.opaque_protocol,
        routes=tuple(r for r in routes if r is not None),
        targets=tuple(t for t in targets if t is not None),
        retry_budget=budget,
        endpoint=endpoint_from_proto(pb.endpoint) if pb.endpoint is not None else None,
    )


# --------------------------------------------------------------------- watch


class ProfileWatch:
    """The profiles of one GetProfile watch (each message is a whole profile)."""

    def __init__(
        self,
        target: NameAddr | SocketAddr,
        stream: ControlStream[api.destination.DestinationProfile],
    ) -> None:
        self.target = target
        self._stream = stream

    async def receive(self) -> Profile:
        """The next profile.

        Raises:
            DiscoveryRejected: the lookup was rejected for good: use no profile.
            trio.EndOfChannel: the watch was stopped.
        """
        try:
            received = await self._stream.receive()
        except GrpcError as exc:
            raise DiscoveryRejected(str(self.target), exc.status, exc.message) from exc
        return profile_from_proto(received.message, self.target.port)

    def __aiter__(self) -> ProfileWatch:
        return self

    async def __anext__(self) -> Profile:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None


@contextlib.asynccontextmanager
async def open_profile(
    client: ControlClient, target: NameAddr | SocketAddr, context_token: str
) -> AsyncIterator[ProfileWatch]:
    """Watch the profile of ``target`` for the ``async with`` block.

    The caller checks :func:`should_lookup_profile` first, and bounds the wait
    for the first profile (``DESTINATION_PROFILE_INITIAL_TIMEOUT``) itself.

    Cancellation: leaving the block cancels the watch and resets its stream.
    """
    request = get_request(str(target), context_token)
    async with client.open_stream(GET_PROFILE, request, profile_codec(), buffer=4) as stream:
        yield ProfileWatch(target, stream)
