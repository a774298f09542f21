"""Pure parsers for ``LINKERD2_PROXY_*`` values (sans-IO; no trio, no env access).

This is the bottom of the configuration layer: ``app.config`` looks a variable up
in the environment and hands its raw text to one of these functions. Each parser
accepts exactly the syntax the reference proxy accepts and raises ``ValueError``
whose message is the reason shown to the user (``config`` wraps it into a
``ConfigError`` naming the variable and the value).

Each parser is paired with a one-line description of its syntax in a :class:`Kind`
(``DURATION``, ``PORT_SET``, ...), which is what the variable table refers to.

Empty strings: lists (port sets, CIDR lists, DNS suffix lists) read ``""`` as the
empty list, as the reference does; every scalar kind (durations, bools, numbers,
addresses, names) rejects it, and so does an IP set (``INBOUND_IPS``).
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable, Iterable

import attrs

from linkerd_proxy.addrs import IpAddr, NameAddr, SocketAddr

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DURATION_REASON = "expected a duration like 100ms, 10s, 5m (units ms, s, m, h, d; or 0)"

# The reference trims surrounding whitespace but allows none between number and unit.
_DURATION_RE = re.compile(r"^\s*([0-9]+)(ms|s|m|h|d)?\s*$", re.ASCII)
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_U64_MAX = 2**64 - 1
_INT_RE = re.compile(r"^\+?[0-9]+$", re.ASCII)
_LABEL_RE = re.compile(r"^[A-Za-z0-9_-]{1,63}$", re.ASCII)
_URI_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:\S+$", re.ASCII)
PEM_CERT_MARKER = "-----BEGIN CERTIFICATE-----"


def parse_duration(text: str) -> float:
    """Parse ``<int>(ms|s|m|h|d)`` or a bare ``0`` into seconds.

    Raises:
        ValueError: for fractions, signs, inner spaces, unknown units or a bare
            non-zero number.
    """
    match = _DURATION_RE.match(text)
    if match is None:
        raise ValueError(DURATION_REASON)
    magnitude = int(match.group(1))
    unit = match.group(2)
    if unit is None:
        if magnitude != 0:
            raise ValueError(DURATION_REASON)
        return 0.0
    if magnitude > _U64_MAX or magnitude * max(_UNIT_SECONDS[unit], 1) > _U64_MAX:
        raise ValueError("duration is too large")
    if unit == "ms":
        return magnitude / 1000
    return float(magnitude * int(_UNIT_SECONDS[unit]))


def parse_optional_duration(text: str) -> float | None:
    """Like :func:`parse_duration`, but ``""`` means "no limit" (``None``)."""
    if text == "":
        return None
    return parse_duration(text)


def format_duration(seconds: float) -> str:
    """Render seconds in the largest unit that represents them exactly (ms precision).

    ``parse_duration(format_duration(x)) == x`` for every whole number of ms.

    Raises:
        ValueError: if ``seconds`` is negative or not a whole number of milliseconds.
    """
    millis = round(seconds * 1000)
    if seconds < 0 or not math.isclose(millis / 1000, seconds, rel_tol=0, abs_tol=1e-9):
        raise ValueError(f"not a whole number of milliseconds: {seconds}")
    if millis == 0:
        return "0"
    if millis % 1000:
        return f"{millis}ms"
    secs = millis // 1000
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs % size == 0:
            return f"{secs // size}{unit}"
    return f"{secs}s"


def parse_bool(text: str) -> bool:
    """Parse exactly ``true`` or ``false`` (case-sensitive, as Rust's ``bool``)."""
    if text == "true":
        return True
    if text == "false":
        return False
    raise ValueError("expected true or false")


def parse_uint(text: str, *, max_value: int = _U64_MAX, min_value: int = 0) -> int:
    """Parse a non-negative decimal integer (an optional leading ``+`` is allowed).

    Raises:
        ValueError: if not an integer or outside ``[min_value, max_value]``.
    """
    if not _INT_RE.match(text):
        raise ValueError("expected a non-negative integer")
    value = int(text)
    if not min_value <= value <= max_value:
        raise ValueError(f"expected an integer from {min_value} to {max_value}")
    return value


def parse_float(text: str) -> float:
    """Parse a decimal floating-point number (no whitespace or ``_``)."""
    if text != text.strip() or "_" in text or text == "":
        raise ValueError("expected a number")
    try:
        return float(text)
    except ValueError:
        raise ValueError("expected a number") from None


def parse_ip(text: str) -> IpAddr:
    """Parse a bare IPv4 or IPv6 address (no brackets, no zone, no prefix)."""
    if "%" in text:
        raise ValueError("expected an IP address (zone ids are not supported)")
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise ValueError("expected an IP address like 10.0.0.1 or fd00::1") from None


def parse_socket_addr(text: str) -> SocketAddr:
    """Parse ``ip:port`` or ``[v6]:port``; a DNS name is not accepted here."""
    try:
        if "%" in text:
            raise ValueError(text)
        return SocketAddr.parse(text)
    except ValueError:
        raise ValueError("expected an address like 127.0.0.1:4140 or [::1]:4140") from None


def parse_socket_addrs(text: str) -> tuple[SocketAddr, ...]:
    """Parse one or two comma-separated socket addresses (no spaces)."""
    parts = text.split(",")
    if len(parts) > 2:
        raise ValueError("only two addresses are supported")
    return tuple(parse_socket_addr(p) for p in parts)


def parse_ip_set(text: str) -> frozenset[IpAddr]:
    """Parse comma-separated IP addresses (no spaces, no empty entries)."""
    return frozenset(parse_ip(p) for p in text.split(","))


def parse_dns_name(text: str) -> str:
    """Validate a DNS name (RFC 5280 preferred syntax plus ``_``) and lowercase it.

    A trailing dot is allowed and kept. The last label may not be all digits, so
    an IP address is never a name.
    """
    if not 0 < len(text) <= 253 or not text.isascii():
        raise ValueError("not a valid DNS name")
    labels = (text[:-1] if text.endswith(".") else text).split(".")
    for label in labels:
        if not _LABEL_RE.match(label) or label.startswith("-") or label.endswith("-"):
            raise ValueError("not a valid DNS name")
    if labels[-1].isdigit():
        raise ValueError("not a valid DNS name")
    return text.lower()


def is_localhost_name(name: str) -> bool:
    """The reference treats only the absolute name ``localhost.`` as loopback."""
    return name.lower() == "localhost."


def parse_identity(text: str) -> str:
    """Parse a TLS identity: a DNS-like name without trailing dot, or a URI.

    DNS identities are lowercased; URIs (``spiffe://td/ns/x/sa/y``) are kept as given.
    """
    try:
        name = parse_dns_name(text)
    except ValueError:
        name = ""
    if name and not name.endswith("."):
        return name
    if _URI_RE.match(text):
        return text
    raise ValueError("not a valid identity name (a DNS name without trailing dot, or a URI)")


def parse_control_target(text: str) -> SocketAddr | NameAddr:
    """Parse a control-plane address: ``ip:port``, ``[v6]:port`` or ``name:port``."""
    try:
        return SocketAddr.parse(text)
    except ValueError:
        pass
    host, sep, port_text = text.rpartition(":")
    if not sep:
        raise ValueError("address is missing a port (expected host:port)")
    try:
        port = parse_uint(port_text, max_value=65535)
    except ValueError:
        raise ValueError("address is missing a port (expected host:port)") from None
    try:
        return NameAddr(parse_dns_name(host), port)
    except ValueError:
        raise ValueError("address contains an invalid host (expected an IP or DNS name)") from None


def parse_port_set(text: str) -> frozenset[int]:
    """Parse ``a,b-c`` port lists; ranges are inclusive and empty entries ignored.

    Raises:
        ValueError: for non-numbers, ports above 65535, half-open or backwards ranges.
    """
    ports: set[int] = set()
    for raw in text.split(","):
        part = raw.strip()
        if not part:
            continue
        low_text, dash, high_text = part.partition("-")
        try:
            low = parse_uint(low_text.strip(), max_value=65535)
            high = parse_uint(high_text.strip(), max_value=65535) if dash else low
        except ValueError:
            raise ValueError(f"not a valid port range: {part!r}") from None
        if high < low:
            raise ValueError(f"not a valid port range: {part!r} ({low} > {high})")
        ports.update(range(low, high + 1))
    return frozenset(ports)


def format_port_set(ports: Iterable[int]) -> str:
    """Render ports in the compact ``a,b-c`` form that :func:`parse_port_set` reads."""
    out: list[str] = []
    ordered = sorted(set(ports))
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        out.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(out)


def parse_network(text: str) -> IpNetwork:
    """Parse one CIDR ``addr/len``; host bits may be set (they are masked off)."""
    addr_text, slash, len_text = text.partition("/")
    if not slash or not len_text.isascii() or not len_text.isdigit():
        raise ValueError(f"not a valid network: {text!r} (expected CIDR like 10.0.0.0/8)")
    try:
        addr = parse_ip(addr_text)
    except ValueError:
        raise ValueError(f"not a valid network: {text!r} (expected CIDR like 10.0.0.0/8)") from None
    prefix = int(len_text)
    if prefix > addr.max_prefixlen:
        raise ValueError(f"not a valid network: {text!r} (prefix longer than the address)")
    return ipaddress.ip_network((addr, prefix), strict=False)


def parse_networks(text: str) -> frozenset[IpNetwork]:
    """Parse a comma-separated CIDR list; whitespace and empty entries are ignored."""
    return frozenset(parse_network(p.strip()) for p in text.split(",") if p.strip())


def parse_dns_suffixes(text: str) -> frozenset[str]:
    """Parse a comma-separated suffix list; ``.`` means every name.

    Whitespace around entries and empty entries are ignored; names are lowercased
    and keep a trailing dot if given.
    """
    out: set[str] = set()
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        if item == ".":
            out.add(".")
            continue
        try:
            out.add(parse_dns_name(item))
        except ValueError:
            raise ValueError(f"not a valid DNS domain suffix: {item!r}") from None
    return frozenset(out)


def parse_trust_anchors(text: str) -> str:
    """Check that PEM text holds at least one certificate; return it unchanged."""
    if PEM_CERT_MARKER not in text:
        raise ValueError(f"invalid trust anchors: expected PEM text with {PEM_CERT_MARKER}")
    return text


def parse_trace_attributes(text: str) -> dict[str, str]:
    """Parse ``key=value`` lines (downward-API style); quotes around values are trimmed.

    Lines without ``=`` are skipped; the first ``=`` splits key from value.
    """
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key] = value.strip('"')
    return out


# ------------------------------------------------ kinds: parser + doc syntax


@attrs.frozen
class Kind:
    """A value syntax: the parser and how the docs describe it."""

    syntax: str
    parse: Callable[[str], object]


def _bounded_float(lo: float, hi: float, lo_open: bool) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = parse_float(text)
        if not math.isfinite(value) or value > hi or value < lo or (lo_open and value == lo):
            raise ValueError(f"expected a number in {'(' if lo_open else '['}{lo}, {hi}]")
        return value

    return parse


def _choice(*choices: str, fold: bool = True, empty: object = ...) -> Callable[[str], object]:
    """One of ``choices``; ``fold`` ignores case and surrounding space (as the reference
    does for the log formats, but not for policy names)."""

    def parse(text: str) -> object:
        if text == "" and empty is not ...:
            return empty
        key = text.strip().lower() if fold else text
        if key in choices:
            return key
        raise ValueError(f"expected one of: {', '.join(choices)}")

    return parse


def _authority_labels(text: str) -> bool:
    if text == "":
        return False
    if text.lower() == "unsafe":
        return True
    raise ValueError("authority labels may only be set to 'unsafe'")


def _uint(max_value: int, min_value: int = 0) -> Callable[[str], int]:
    return lambda text: parse_uint(text, max_value=max_value, min_value=min_value)


DURATION = Kind("duration: `<int>(ms|s|m|h|d)` or `0`", parse_duration)
OPT_DURATION = Kind("duration, or empty for no limit", parse_optional_duration)
BOOL = Kind("`true` or `false`", parse_bool)
USIZE = Kind("integer >= 0", _uint(2**64 - 1))
U32 = Kind("integer, 0 to 4294967295", _uint(2**32 - 1))
WINDOW = Kind("integer, 0 to 2147483647", _uint(2**31 - 1))
FRAME = Kind("integer, 16384 to 16777215", _uint(2**24 - 1, 2**14))
CORES = Kind("integer >= 1", _uint(2**32 - 1, 1))
RATIO = Kind("number in (0, 1]", _bounded_float(0.0, 1.0, lo_open=True))
JITTER = Kind("number in [0, 100]", _bounded_float(0.0, 100.0, lo_open=False))
TEXT = Kind("text", str)
IGNORED = Kind("ignored", str)
SOCKET_ADDR = Kind("`ip:port` or `[v6]:port`", parse_socket_addr)
SOCKET_ADDRS = Kind("1 or 2 socket addrs, comma-separated", parse_socket_addrs)
IP_SET = Kind("IPs, comma-separated", parse_ip_set)
PORT_SET = Kind("ports `a,b-c` (inclusive ranges)", parse_port_set)
NETWORKS = Kind("CIDRs, comma-separated", parse_networks)
SUFFIXES = Kind("DNS suffixes, comma-separated; `.` = all", parse_dns_suffixes)
DNS_NAME = Kind("DNS name", parse_dns_name)
IDENTITY = Kind("TLS identity (DNS-like name or URI)", parse_identity)
CONTROL = Kind("`host:port` (IP or DNS name)", parse_control_target)
PEM = Kind("PEM certificates (the text itself)", parse_trust_anchors)
LOG_FORMAT = Kind("`plain` or `json`", _choice("plain", "json"))
ACCESS_LOG = Kind("`apache` or `json`", _choice("apache", "json", empty=None))
AUTHORITY = Kind("`unsafe` or empty", _authority_labels)
POLICIES = (
    "all-unauthenticated",
    "all-authenticated",
    "cluster-unauthenticated",
    "cluster-authenticated",
    "deny",
    "audit",
)
POLICY = Kind("a default policy name", _choice(*POLICIES, fold=False))
