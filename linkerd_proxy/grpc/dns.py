"""DNS for control-plane addresses: a name to a set of socket addresses, with TTLs.

Part of the control-plane client stack (``grpc/client.py`` asks it for the
endpoints to balance over). The data plane never uses DNS (SPEC 8).

The lookup is the system resolver through ``trio.socket.getaddrinfo``, so
``/etc/hosts``, search domains and nsswitch behave as for any process on the
host. getaddrinfo does not report record TTLs; the resolver therefore assumes
one, ``assumed_ttl`` (5 s by default: the TTL CoreDNS gives Kubernetes service
records, the control-plane addresses' usual case), and treats it like a record
TTL: clamped to ``DNS_MIN_TTL``/``DNS_MAX_TTL`` when those are set and never below
the reference's 5 s floor (``floor``), which keeps a failing lookup from spinning.
Failed lookups and empty answers are cached the same way (the negative TTL).
Real TTLs would need a stub resolver of our own (dnspython), re-implementing the
system's configuration; with Kubernetes' uniform 5 s TTLs that buys nothing.

Special cases, as in the reference: a socket address needs no lookup and never
expires; the name ``localhost.`` is ``127.0.0.1`` without asking DNS.
"""

from __future__ import annotations

import ipaddress
import math
import socket
from collections.abc import Awaitable, Callable

import attrs
import trio

from linkerd_proxy.addrs import IpAddr, NameAddr, SocketAddr
from linkerd_proxy.errors import DnsError

#: Looks up a host name and returns its IPs; raises ``OSError`` when it cannot.
Lookup = Callable[[str], Awaitable[list[IpAddr]]]

#: The reference's lower bound on positive and negative TTLs, in seconds.
MINIMUM_TTL = 5.0


def is_localhost(name: str) -> bool:
    """The absolute name ``localhost.`` (the only name the reference treats as loopback)."""
    return name.lower() == "localhost."


async def system_lookup(name: str) -> list[IpAddr]:
    """Resolve ``name`` to its IPv4 and IPv6 addresses with the system resolver.

    Raises:
        OSError: (``socket.gaierror``) when the name does not resolve.
    """
    infos = await trio.socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    ips: list[IpAddr] = []
    for family, _, _, _, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            ips.append(ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0]))
    return ips


@attrs.frozen
class DnsSettings:
    """How long answers are trusted.

    Attributes:
        min_ttl: ``DNS_MIN_TTL``: the least a TTL may be, or ``None``.
        max_ttl: ``DNS_MAX_TTL``: the most a TTL may be, or ``None``.
        assumed_ttl: the TTL taken for every answer (getaddrinfo reports none).
        floor: no TTL, positive or negative, is shorter than this.
    """

    min_ttl: float | None = None
    max_ttl: float | None = None
    assumed_ttl: float = 5.0
    floor: float = MINIMUM_TTL

    def ttl(self) -> float:
        """The seconds an answer (or a failure) stays valid."""
        ttl = self.assumed_ttl
        if self.min_ttl is not None:
            ttl = max(ttl, self.min_ttl)
        if self.max_ttl is not None:
            ttl = min(ttl, self.max_ttl)
        return max(ttl, self.floor)


@attrs.frozen
class Resolution:
    """The socket addresses a control address stands for, valid until ``expires``.

    ``addrs`` is sorted and free of duplicates; ``expires`` is on the trio clock
    (``math.inf`` for addresses that need no lookup).
    """

    addrs: tuple[SocketAddr, ...]
    expires: float


class DnsResolver:
    """Resolves control addresses and caches answers and failures for their TTL.

    Args:
        settings: TTL handling.
        lookup: the name lookup; :func:`system_lookup` by default (tests inject one).
    """

    def __init__(self, settings: DnsSettings | None = None, lookup: Lookup | None = None) -> None:
        self.settings = settings if settings is not None else DnsSettings()
        self._lookup = lookup if lookup is not None else system_lookup
        self._cache: dict[NameAddr, Resolution | DnsError] = {}
        self._expiry: dict[NameAddr, float] = {}
        self._lock = trio.Lock()

    async def resolve(self, addr: SocketAddr | NameAddr) -> Resolution:
        """The current addresses of ``addr``, looked up again once the TTL has passed.

        Raises:
            DnsError: the name did not resolve, or had no address; the error is
                cached for its ``negative_ttl`` and raised again until then.

        Cancellation: safe; a cancelled lookup caches nothing.
        """
        if isinstance(addr, SocketAddr):
            return Resolution((addr,), math.inf)
        if is_localhost(addr.name):
            return Resolution(
                (SocketAddr(ipaddress.IPv4Address("127.0.0.1"), addr.port),), math.inf
            )
        # One lookup at a time: callers arriving during a lookup share its answer.
        async with self._lock:
            cached = self._cache.get(addr)
            if cached is None or trio.current_time() >= self._expiry[addr]:
                cached = await self._refresh(addr)
        if isinstance(cached, DnsError):
            raise cached
        return cached

    async def _refresh(self, addr: NameAddr) -> Resolution | DnsError:
        ttl = self.settings.ttl()
        result: Resolution | DnsError
        try:
            ips = await self._lookup(addr.name)
        except OSError as exc:
            result = DnsError(addr.name, str(exc) or type(exc).__name__, ttl)
        else:
            expires = trio.current_time() + ttl
            addrs = tuple(sorted({SocketAddr(ip, addr.port) for ip in ips}, key=_sort_key))
            if addrs:
                result = Resolution(addrs, expires)
            else:
                result = DnsError(addr.name, "no addresses", ttl)
        self._cache[addr] = result
        self._expiry[addr] = trio.current_time() + ttl
        return result


def _sort_key(addr: SocketAddr) -> tuple[int, bytes, int]:
    return (addr.ip.version, addr.ip.packed, addr.port)
