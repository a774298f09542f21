"""The original destination of an accepted connection, and its peer addresses.

Sits right after accept: the inbound and outbound listeners receive connections
that iptables REDIRECTed to the proxy, and the address the client meant to reach
is read back from conntrack with ``getsockopt(SO_ORIGINAL_DST)``. The stacks take
an :data:`OrigDstLookup` so that tests and harnesses without iptables can swap in
:func:`local_addr_as_orig_dst` or :func:`fixed_orig_dst`.

As in linkerd2-proxy, the option's family follows the *client* address once an
IPv4-mapped IPv6 address (``::ffff:a.b.c.d``) is unwrapped: a v4 client on a
dual-stack ``[::]`` listener is looked up with the IPv4 option.

The sockaddr decoders are pure functions, tested on byte layouts.
"""

from __future__ import annotations

import errno as errno_mod
import ipaddress
import os
import socket
import struct
from collections.abc import Callable

import trio

from ..addrs import SocketAddr
from ..errors import OrigDstError

#: Reads the original destination of an accepted stream; raises OrigDstError.
OrigDstLookup = Callable[[trio.SocketStream], SocketAddr]

# <linux/netfilter_ipv4.h> SO_ORIGINAL_DST and <linux/netfilter_ipv6/ip6_tables.h>
# IP6T_SO_ORIGINAL_DST are both 80, at levels SOL_IP (0) and SOL_IPV6 (41).
SOL_IP = 0
SOL_IPV6 = 41
SO_ORIGINAL_DST = 80
IP6T_SO_ORIGINAL_DST = 80

SOCKADDR_IN_LEN = 16
SOCKADDR_IN6_LEN = 28

# sa_family is in host byte order; port, address and flowinfo in network order.
_SOCKADDR_IN = struct.Struct("=H")
_PORT = struct.Struct("!H")


def decode_sockaddr_in(raw: bytes) -> SocketAddr:
    """Decode a ``struct sockaddr_in`` (16 bytes: family, port, address, zero pad).

    Raises:
        ValueError: if ``raw`` is too short or is not an ``AF_INET`` address.
    """
    if len(raw) < 8:
        raise ValueError(f"sockaddr_in too short: {len(raw)} bytes")
    (family,) = _SOCKADDR_IN.unpack_from(raw, 0)
    if family != socket.AF_INET:
        raise ValueError(f"not an AF_INET sockaddr (family {family})")
    (port,) = _PORT.unpack_from(raw, 2)
    return SocketAddr(ipaddress.IPv4Address(bytes(raw[4:8])), port)


def decode_sockaddr_in6(raw: bytes) -> SocketAddr:
    """Decode a ``struct sockaddr_in6`` (28 bytes: family, port, flowinfo,
    address, scope id). Flow info and scope id are dropped, as in the reference.

    Raises:
        ValueError: if ``raw`` is too short or is not an ``AF_INET6`` address.
    """
    if len(raw) < 24:
        raise ValueError(f"sockaddr_in6 too short: {len(raw)} bytes")
    (family,) = _SOCKADDR_IN.unpack_from(raw, 0)
    if family != socket.AF_INET6:
        raise ValueError(f"not an AF_INET6 sockaddr (family {family})")
    (port,) = _PORT.unpack_from(raw, 2)
    return SocketAddr(ipaddress.IPv6Address(bytes(raw[8:24])), port)


def unmap_v4(addr: SocketAddr) -> SocketAddr:
    """Turn ``[::ffff:a.b.c.d]:p`` into ``a.b.c.d:p``; other addresses unchanged."""
    if isinstance(addr.ip, ipaddress.IPv6Address) and addr.ip.ipv4_mapped is not None:
        return SocketAddr(addr.ip.ipv4_mapped, addr.port)
    return addr


def peer_addr(stream: trio.SocketStream) -> SocketAddr:
    """The client's address, IPv4-mapped addresses unwrapped (the ``src`` peer).

    Raises:
        OSError: if the socket is no longer connected.
    """
    return unmap_v4(SocketAddr.from_sockaddr(stream.socket.getpeername()))


def local_addr(stream: trio.SocketStream) -> SocketAddr:
    """The local address of the stream, IPv4-mapped addresses unwrapped."""
    return unmap_v4(SocketAddr.from_sockaddr(stream.socket.getsockname()))


def _describe(exc: OSError) -> str:
    code = exc.errno
    name = errno_mod.errorcode.get(code, str(code)) if code is not None else "unknown"
    if code == errno_mod.ENOENT:
        return f"no iptables redirect: SO_ORIGINAL_DST failed with {name}"
    reason = os.strerror(code) if code is not None else str(exc)
    return f"SO_ORIGINAL_DST failed with {name}: {reason}"


def orig_dst_addr(stream: trio.SocketStream) -> SocketAddr:
    """Read the connection's original destination from conntrack.

    Args:
        stream: a TCP stream returned by accept on a REDIRECT target port.

    Returns:
        The address the client connected to before iptables rewrote it.

    Raises:
        OrigDstError: the lookup failed; the message says why (``ENOENT`` means
            the connection was not redirected).
    """
    sock = stream.socket
    try:
        use_v6 = sock.family == socket.AF_INET6 and peer_addr(stream).ip.version == 6
        if use_v6:
            raw = sock.getsockopt(SOL_IPV6, IP6T_SO_ORIGINAL_DST, SOCKADDR_IN6_LEN)
            return decode_sockaddr_in6(raw)
        raw = sock.getsockopt(SOL_IP, SO_ORIGINAL_DST, SOCKADDR_IN_LEN)
        return decode_sockaddr_in(raw)
    except OSError as exc:
        raise OrigDstError(_describe(exc)) from exc
    except ValueError as exc:
        raise OrigDstError(f"SO_ORIGINAL_DST returned an invalid address: {exc}") from exc


def local_addr_as_orig_dst(stream: trio.SocketStream) -> SocketAddr:
    """Use the socket's own local address as the original destination.

    This is what a connection looks like when no REDIRECT happened: the client
    connected to the listener directly. For test harnesses and local runs.

    Raises:
        OrigDstError: if the socket has no local address any more.
    """
    try:
        return local_addr(stream)
    except OSError as exc:
        raise OrigDstError(f"getsockname failed: {exc}") from exc


def fixed_orig_dst(addr: SocketAddr) -> OrigDstLookup:
    """Return a lookup that always answers ``addr`` (for tests)."""

    def lookup(stream: trio.SocketStream) -> SocketAddr:
        return addr

    return lookup
