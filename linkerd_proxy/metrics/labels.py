"""Typed label sets: the only things a metric series may be keyed by.

This module sits at the bottom of the metrics layer (pure: no I/O, no trio). Every
metric family's labels are small frozen classes whose fields are *exactly* what they
render. The registry (``registry.py``) keys series by the rendered text, so two label
values that render the same are one series by construction; and because every field
is rendered, and values are escaped, two values render the same only when they are
equal. Together this rules out the reference's duplicate-series bug (linkerd2#13821:
keys compared TLS fields that the labels did not print).

A structure that carries more than its labels (a TLS session, a policy object, a
resolved endpoint) converts to one of these at the boundary; it is never a key.

Rendering follows the reference's legacy text: ``k="v",k2="v2"`` in its label order,
no braces (the family adds them), no empty parts, no ``,,``. Values are escaped per
the Prometheus text format (the reference does not escape; for values without ``\\``,
``"`` or a newline the output is identical).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from typing import Protocol, runtime_checkable

import attrs

from linkerd_proxy.addrs import SocketAddr

_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_NOT_NAME_CHAR = re.compile(r"[^a-zA-Z0-9_]")


@runtime_checkable
class LabelSet(Protocol):
    """Anything that renders itself as Prometheus label text.

    Implementations are frozen (``@attrs.frozen`` or an ``enum.Enum``) and render
    every field they hold, so that equality and rendered text agree.
    """

    def render(self) -> str:
        """Return ``k="v",...`` (no braces); ``""`` for no labels."""
        ...


def escape_label_value(value: str) -> str:
    """Escape a label value for the Prometheus text format (``\\``, ``"``, newline)."""
    if "\\" not in value and '"' not in value and "\n" not in value:
        return value
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def label(name: str, value: object) -> str:
    """Render one ``name="value"`` pair (``value`` through ``str()`` and escaped)."""
    return f'{name}="{escape_label_value(str(value))}"'


def join(*parts: str) -> str:
    """Join rendered label parts with commas, skipping empty ones (never ``,,``)."""
    return ",".join(p for p in parts if p)


def is_label_name(name: str) -> bool:
    """True when ``name`` is a valid Prometheus label name."""
    return _LABEL_NAME.match(name) is not None


@attrs.frozen
class NoLabels:
    """The label set of a family with a single unlabelled series."""

    def render(self) -> str:
        return ""


NO_LABELS = NoLabels()


class Direction(enum.Enum):
    """``direction="inbound"|"outbound"``."""

    INBOUND = "inbound"
    OUTBOUND = "outbound"

    def render(self) -> str:
        return f'direction="{self.value}"'


class Peer(enum.Enum):
    """``peer="src"`` (the accepted side) or ``peer="dst"`` (the connected side)."""

    SRC = "src"
    DST = "dst"

    def render(self) -> str:
        return f'peer="{self.value}"'


@attrs.frozen
class TargetAddrLabels:
    """``target_addr="1.2.3.4:80",target_ip="1.2.3.4",target_port="80"``.

    All three labels are functions of ``addr`` and together determine it.
    IPv6 renders as the reference does: ``target_addr="[::1]:80",target_ip="::1"``.
    """

    addr: SocketAddr

    def render(self) -> str:
        addr = self.addr
        return join(
            label("target_addr", addr), label("target_ip", addr.ip), label("target_port", addr.port)
        )


@attrs.frozen
class AuthorityLabels:
    """``authority="name:port"`` (a logical HTTP authority)."""

    authority: str

    def render(self) -> str:
        return label("authority", self.authority)


# --- server-side (accepted connection) TLS ---------------------------------------


def _none_to_empty(value: str | None) -> str:
    return "" if value is None else value


@attrs.frozen
class ServerTlsEstablished:
    """``tls="true",client_id="<id>"``; an unauthenticated client renders ``client_id=""``."""

    client_id: str = attrs.field(default="", converter=_none_to_empty)

    def render(self) -> str:
        return join('tls="true"', label("client_id", self.client_id))


@attrs.frozen
class ServerTlsPassthru:
    """``tls="opaque",sni="<name>"``: TLS we forward without terminating."""

    sni: str

    def render(self) -> str:
        return join('tls="opaque"', label("sni", self.sni))


class NoServerTls(enum.Enum):
    """Why an accepted connection is not mTLS; ``DISABLED`` renders ``tls="disabled"``."""

    DISABLED = "disabled"
    LOOPBACK = "loopback"
    PORT_SKIPPED = "port_skipped"
    NO_CLIENT_HELLO = "no_tls_from_remote"

    def render(self) -> str:
        if self is NoServerTls.DISABLED:
            return 'tls="disabled"'
        return f'tls="no_identity",no_tls_reason="{self.value}"'


ServerTlsLabels = ServerTlsEstablished | ServerTlsPassthru | NoServerTls

# --- client-side (connection we open) TLS ----------------------------------------


@attrs.frozen
class ClientTlsEstablished:
    """``tls="true",server_id="<id>"``."""

    server_id: str

    def render(self) -> str:
        return join('tls="true"', label("server_id", self.server_id))


class NoClientTls(enum.Enum):
    """Why a connection we open is not mTLS; ``DISABLED`` renders ``tls="disabled"``."""

    DISABLED = "disabled"
    LOOPBACK = "loopback"
    NOT_PROVIDED_BY_SERVICE_DISCOVERY = "not_provided_by_service_discovery"
    INGRESS_WITHOUT_OVERRIDE = "ingress_without_override"

    def render(self) -> str:
        if self is NoClientTls.DISABLED:
            return 'tls="disabled"'
        return f'tls="no_identity",no_tls_reason="{self.value}"'


ClientTlsLabels = ClientTlsEstablished | NoClientTls

# --- policy resources ------------------------------------------------------------


@attrs.frozen
class ServerLabels:
    """``srv_group,srv_kind,srv_name,srv_port``: the inbound policy ``Server``.

    The reference's synthesized default policies render ``srv_group=""``,
    ``srv_kind="default"`` and ``srv_name`` the policy name (e.g.
    ``all-unauthenticated``); use :meth:`default_policy`.
    """

    group: str
    kind: str
    name: str
    port: int

    @classmethod
    def default_policy(cls, name: str, port: int) -> ServerLabels:
        """Labels of a default (synthesized) policy such as ``all-unauthenticated``."""
        return cls(group="", kind="default", name=name, port=port)

    def render(self) -> str:
        return join(
            label("srv_group", self.group),
            label("srv_kind", self.kind),
            label("srv_name", self.name),
            label("srv_port", self.port),
        )


@attrs.frozen
class RouteLabels:
    """``route_group,route_kind,route_name``: an inbound policy route."""

    group: str
    kind: str
    name: str

    def render(self) -> str:
        return join(
            label("route_group", self.group),
            label("route_kind", self.kind),
            label("route_name", self.name),
        )


@attrs.frozen
class AuthzLabels:
    """``authz_group,authz_kind,authz_name``: an inbound authorization."""

    group: str
    kind: str
    name: str

    def render(self) -> str:
        return join(
            label("authz_group", self.group),
            label("authz_kind", self.kind),
            label("authz_name", self.name),
        )


# --- free-form labels from the control plane (dst_*, rt_*) -----------------------


def _normalize_pairs(
    pairs: Mapping[str, str] | Iterable[tuple[str, str]],
) -> tuple[tuple[str, str], ...]:
    items = pairs.items() if isinstance(pairs, Mapping) else pairs
    out: dict[str, str] = {}
    for key, value in sorted(items):
        if not key:
            continue
        name = _NOT_NAME_CHAR.sub("_", key)
        # Two keys that sanitize alike (``a-b``, ``a_b``) would print one label
        # twice; the first in key order wins.
        out.setdefault(name, value)
    return tuple(sorted(out.items()))


def _render_prefixed(prefix: str, pairs: tuple[tuple[str, str], ...]) -> str:
    return join(*(label(f"{prefix}_{k}", v) for k, v in pairs))


@attrs.frozen
class DstLabels:
    """``dst_<key>="value"``, sorted by key: an endpoint's metric labels from discovery.

    Keys are normalized on construction (empty keys dropped, characters invalid in
    a label name replaced by ``_``, first of colliding keys kept, sorted), so equal
    values are exactly those that render the same. The prefix is fixed per class,
    never a field: ``("dst", "a_b")`` and ``("dst_a", "b")`` would render alike.
    """

    pairs: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_normalize_pairs)

    @classmethod
    def of(cls, labels: Mapping[str, str] | None = None) -> DstLabels:
        return cls(labels or {})

    def render(self) -> str:
        return _render_prefixed("dst", self.pairs)


@attrs.frozen
class RtLabels:
    """``rt_<key>="value"``, sorted by key: a profile route's metrics labels.

    Normalized like :class:`DstLabels`.
    """

    pairs: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_normalize_pairs)

    @classmethod
    def of(cls, labels: Mapping[str, str] | None = None) -> RtLabels:
        return cls(labels or {})

    def render(self) -> str:
        return _render_prefixed("rt", self.pairs)
