"""An accepted connection as it flows down a server stack.

Connection-level services are ``Service[Accepted, None]``: the accept loop wraps
the stream with what is known about it (the client's address, the bytes already
read while detecting its protocol, the accept-side metrics), and the innermost
service owns it until the connection ends.
"""

from __future__ import annotations

from typing import Protocol

import attrs
import trio

from linkerd_proxy.addrs import SocketAddr


class ConnMetrics(Protocol):
    """What a connection reports as it runs (see ``metrics.tcp.TcpConnMetrics``)."""

    def add_read(self, n: int, /) -> None: ...

    def add_write(self, n: int, /) -> None: ...

    def close(self, errno: int | None = None, /) -> None: ...


class NoConnMetrics:
    """A :class:`ConnMetrics` that records nothing."""

    def add_read(self, n: int, /) -> None:
        pass

    def add_write(self, n: int, /) -> None:
        pass

    def close(self, errno: int | None = None, /) -> None:
        pass


@attrs.define(eq=False)
class Accepted:
    """An accepted connection.

    Attributes:
        stream: the connection (a plain ``trio.SocketStream`` until a TLS layer
            wraps it).
        client: the peer's address.
        metrics: the accept side's byte and close counters.
        prefix: bytes already read from ``stream`` (protocol detection) that the
            next consumer must see first.
        close_errno: set by the service that ran the connection when it ended
            with an OS error, for the ``tcp_close_total{errno}`` label.
    """

    stream: trio.abc.Stream
    client: SocketAddr
    metrics: ConnMetrics = attrs.field(factory=NoConnMetrics)
    prefix: bytes = b""
    close_errno: int | None = None


@attrs.frozen
class ConnInfo:
    """What an HTTP layer may need to know about the connection a request came on.

    Set by the accept paths as a request extension (``get_ext(req.extensions,
    ConnInfo)``).

    Attributes:
        client: the peer's address.
        orig_dst: the connection's original destination.
    """

    client: SocketAddr
    orig_dst: SocketAddr
    #: The server-side TLS label set of the connection (inbound), if known.
    tls: object = None
    #: The client's mTLS identity (inbound, terminated TLS), if any.
    client_id: str | None = None
