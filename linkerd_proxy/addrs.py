"""Small value types for addresses, shared by every layer.

These are frozen and hashable so that they can be parts of stack targets (cache
keys). They do no I/O.
"""

from __future__ import annotations

import ipaddress

import attrs

IpAddr = ipaddress.IPv4Address | ipaddress.IPv6Address


def _check_port(port: int) -> int:
    if not 0 <= port <= 65535:
        raise ValueError(f"port out of range: {port}")
    return port


@attrs.frozen
class SocketAddr:
    """An IP address and a port, rendered as Rust's ``SocketAddr`` is.

    ``str()`` gives ``10.0.0.1:80`` or ``[::1]:80``, the form used in metric
    labels (``target_addr``) and in configuration.
    """

    ip: IpAddr
    port: int = attrs.field(converter=_check_port)

    @classmethod
    def parse(cls, text: str) -> SocketAddr:
        """Parse ``a.b.c.d:port`` or ``[v6]:port``.

        Raises:
            ValueError: if ``text`` is not a socket address.
        """
        host, sep, port_text = text.rpartition(":")
        if not sep or not host or not port_text.isdigit() or len(port_text) > 5:
            raise ValueError(f"not a socket address: {text!r}")
        if host.startswith("[") and host.endswith("]"):
            ip: IpAddr = ipaddress.IPv6Address(host[1:-1])
        else:
            ip = ipaddress.IPv4Address(host)
        return cls(ip, int(port_text))

    @classmethod
    def from_sockaddr(cls, sockaddr: tuple[object, ...]) -> SocketAddr:
        """Build from a Python socket address tuple (``(host, port, ...)``)."""
        host = str(sockaddr[0]).split("%", 1)[0]
        port = sockaddr[1]
        assert isinstance(port, int)
        return cls(ipaddress.ip_address(host), port)

    def to_sockaddr(self) -> tuple[str, int]:
        return (str(self.ip), self.port)

    @property
    def family(self) -> int:
        import socket

        return socket.AF_INET6 if self.ip.version == 6 else socket.AF_INET

    def __str__(self) -> str:
        if self.ip.version == 6:
            return f"[{self.ip}]:{self.port}"
        return f"{self.ip}:{self.port}"


@attrs.frozen
class NameAddr:
    """A DNS name and a port (``web.ns.svc.cluster.local:8080``)."""

    name: str
    port: int = attrs.field(converter=_check_port)

    @classmethod
    def parse(cls, text: str) -> NameAddr:
        """Parse ``name:port``.

        Raises:
            ValueError: if ``text`` has no port or an empty name.
        """
        name, sep, port_text = text.rpartition(":")
        if not sep or not name or not port_text.isdigit() or len(port_text) > 5:
            raise ValueError(f"not a name:port address: {text!r}")
        if name.startswith("["):
            raise ValueError(f"not a name:port address: {text!r}")
        return cls(name, int(port_text))

    def __str__(self) -> str:
        return f"{self.name}:{self.port}"


Addr = SocketAddr | NameAddr


def parse_addr(text: str) -> Addr:
    """Parse a socket address if it is one, else a ``name:port``."""
    try:
        return SocketAddr.parse(text)
    except ValueError:
        return NameAddr.parse(text)
