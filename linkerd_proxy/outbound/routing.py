"""Which backends an outbound connection uses, from its profile and its policy.

The decision of SPEC.md section 4 (outbound steps 1, 4 and 6), as a pure function
of what discovery said about one original destination:

1. a profile with ``dst_overrides`` takes over: its targets, split by weight, each
   balanced over its ``Destination.Get`` endpoints;
2. otherwise the outbound policy's routes and backends (``Balance`` over a
   ``Destination.Get`` path, ``Forward`` to one address, or ``Fail``);
3. otherwise (no policy controller, or NotFound/Unimplemented) a default is
   synthesized: balance over the profile's logical name when it has one, else
   forward to the profile's endpoint, else to the original destination.

A profile's ``opaque_protocol`` makes the connection opaque (no detection).
Pure: no I/O, no trio.
"""

from __future__ import annotations

import re

import attrs

from linkerd_proxy.addrs import NameAddr, SocketAddr
from linkerd_proxy.discovery import policy_model as pol
from linkerd_proxy.discovery.endpoint import EndpointMeta
from linkerd_proxy.discovery.profiles import Profile
from linkerd_proxy.http.model import Request, header


@attrs.frozen
class BalanceTo:
    """P2C over the endpoints of ``Destination.Get(name)``."""

    name: NameAddr


@attrs.frozen
class ForwardTo:
    """One endpoint; ``meta`` when discovery described it."""

    addr: SocketAddr
    meta: EndpointMeta | None = None


@attrs.frozen
class FailWith:
    """Every request fails (502) with ``message``."""

    message: str


BackendRef = BalanceTo | ForwardTo | FailWith


@attrs.frozen
class Split:
    """Backends chosen by weight per request (or connection)."""

    backends: tuple[tuple[BackendRef, int], ...]

    @classmethod
    def one(cls, backend: BackendRef) -> Split:
        return cls(((backend, 1),))


@attrs.frozen
class HttpRule:
    """A policy route rule: the request matches, then ``split`` serves it."""

    matches: tuple[pol.HttpRouteMatch, ...]
    split: Split


@attrs.frozen
class Routing:
    """Everything the outbound stacks need to route one original destination.

    Attributes:
        opaque: skip protocol detection (the profile says the port is opaque).
        http_rules: policy routes in order; ``None`` means "no policy routes:
            every request goes to ``default``"; an empty tuple means no route
            matches anything (404).
        default: where requests without policy routes go, and TCP connections.
        logical: the logical name (the ``authority`` metric label), if any.
    """

    opaque: bool
    http_rules: tuple[HttpRule, ...] | None
    default: Split
    logical: NameAddr | None = None


class NotFound:
    """The policy controller has no policy for the target (synthesize one)."""


NOT_FOUND = NotFound()


def decide(
    orig_dst: SocketAddr,
    profile: Profile | None,
    policy: pol.OutboundPolicy | NotFound,
) -> Routing:
    """The routing of ``orig_dst`` (see the module docstring)."""
    opaque = profile is not None and profile.opaque_protocol
    if profile is not None and profile.targets:
        split = Split(tuple((BalanceTo(t.addr), t.weight) for t in profile.targets))
        return Routing(opaque, None, split, profile.addr)
    fallback = _synthesized(orig_dst, profile)
    if isinstance(policy, pol.OutboundPolicy):
        rules = _http_rules(policy)
        tcp = _opaque_split(policy) or fallback
        return Routing(opaque, rules, tcp, profile.addr if profile else None)
    return Routing(opaque, None, fallback, profile.addr if profile else None)


def _synthesized(orig_dst: SocketAddr, profile: Profile | None) -> Split:
    if profile is not None and profile.addr is not None:
        return Split.one(BalanceTo(profile.addr))
    if profile is not None and profile.endpoint is not None:
        addr, meta = profile.endpoint
        return Split.one(ForwardTo(addr, meta))
    return Split.one(ForwardTo(orig_dst))


def _backend_ref(backend: pol.Backend) -> BackendRef:
    d = backend.dispatcher
    if isinstance(d, pol.Balance):
        try:
            return BalanceTo(NameAddr.parse(d.path))
        except ValueError:
            return FailWith(f"invalid backend path: {d.path}")
    if isinstance(d, pol.Forward):
        return ForwardTo(d.addr, d.meta)
    return FailWith(d.message)


def _split(rule: pol.Rule) -> Split:
    backends = rule.distribution.backends
    if not backends:
        return Split.one(FailWith("no backends"))
    return Split(tuple((_backend_ref(rb.backend), max(rb.weight, 0)) for rb in backends))


def _routes_of(policy: pol.OutboundPolicy, kind: str) -> pol.RoutesProtocol | None:
    proto = policy.protocol
    if isinstance(proto, pol.Detect):
        return {"http1": proto.http1, "http2": proto.http2, "opaque": proto.opaque}[kind]
    return proto


def _http_rules(policy: pol.OutboundPolicy) -> tuple[HttpRule, ...]:
    proto = _routes_of(policy, "http1")
    if proto is None:
        return ()
    return tuple(
        HttpRule(tuple(m for m in rule.matches if isinstance(m, pol.HttpRouteMatch)), _split(rule))
        for route in proto.routes
        for rule in route.rules
    )


def _opaque_split(policy: pol.OutboundPolicy) -> Split | None:
    proto = _routes_of(policy, "opaque")
    if proto is None or not proto.routes or not proto.routes[0].rules:
        return None
    return _split(proto.routes[0].rules[0])


# ------------------------------------------------------------------ matching


def rule_for(rules: tuple[HttpRule, ...], req: Request) -> HttpRule | None:
    """The first rule one of whose matches the request satisfies (an empty
    match list matches everything)."""
    for rule in rules:
        if not rule.matches or any(_matches(m, req) for m in rule.matches):
            return rule
    return None


def _matches(m: pol.HttpRouteMatch, req: Request) -> bool:
    if m.method is not None and m.method != req.method:
        return False
    if m.path is not None:
        path = req.path.split("?", 1)[0]
        kind, value = m.path.kind, m.path.value
        if kind == "exact" and path != value:
            return False
        if kind == "prefix" and not _prefix_matches(path, value):
            return False
        if kind == "regex" and re.fullmatch(value, path) is None:
            return False
    for h in m.headers:
        got = header(req.headers, h.name.lower().encode("latin-1"))
        if got is None:
            return False
        if h.exact is not None and got != h.exact:
            return False
        if h.regex is not None and re.fullmatch(h.regex, got.decode("latin-1")) is None:
            return False
    return True


def _prefix_matches(path: str, prefix: str) -> bool:
    # Gateway API path prefixes match whole segments.
    if prefix in ("", "/"):
        return True
    prefix = prefix.rstrip("/")
    return path == prefix or path.startswith(prefix + "/")
