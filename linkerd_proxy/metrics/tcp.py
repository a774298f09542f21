"""TCP transport metrics: ``tcp_{open,close}_total``, open connections, bytes.

Sits on the metrics registry; the transport layer calls it once per connection
(accept side and connect side) and then reports bytes through the returned
:class:`TcpConnMetrics`, which holds its series so an open connection's gauge is
never evicted by METRICS_RETAIN_IDLE. Pure: no I/O, no trio.

Label layouts are the reference's (``linkerd/app/core/src/transport/labels.rs``,
checked against ``linkerd/app/integration/src/tests/telemetry.rs``):

- accept (``peer="src"``): ``direction,peer,target_addr,target_ip,target_port,tls...``
  then ``srv_*`` on inbound; the outbound accept side's TLS is always
  ``tls="no_identity",no_tls_reason="loopback"`` and it has no ``srv_*``.
- outbound connect (``peer="dst"``): ``direction,peer,[authority],target_*,tls...,dst_*``
  (``authority`` only when the logical target is a name).
- inbound connect to the app: ``direction="inbound",peer="dst",tls="no_identity",
  no_tls_reason="loopback"`` and nothing else.
- ``tcp_close_total`` adds ``errno=""`` or ``errno="ECONNRESET"`` (names as the
  reference's ``linkerd-errno``: Linux numbers 1..131, else ``UNKNOWN_ERRNO``).
"""

from __future__ import annotations

import errno as _errno
from types import TracebackType

import attrs

from linkerd_proxy.metrics.labels import (
    ClientTlsLabels,
    Direction,
    DstLabels,
    NoClientTls,
    NoServerTls,
    Peer,
    ServerLabels,
    ServerTlsLabels,
    TargetAddrLabels,
    join,
    label,
)
from linkerd_proxy.metrics.registry import Counter, CounterFamily, Gauge, GaugeFamily, Registry

# The reference prints glibc's primary names where Python's table has an alias.
_ERRNO_ALIASES = {"EDEADLOCK": "EDEADLK", "ENOTSUP": "EOPNOTSUPP"}
_MAX_NAMED_ERRNO = 131


def errno_name(code: int | None) -> str:
    """The ``errno`` label value for a close: ``""`` for a clean close, else a name.

    Args:
      code: the OS error number that ended the connection, or ``None``.

    Returns:
      ``""``, a symbolic name such as ``"ECONNRESET"``, or ``"UNKNOWN_ERRNO"``.
    """
    if code is None:
        return ""
    name = _errno.errorcode.get(code) if 0 < code <= _MAX_NAMED_ERRNO else None
    if name is None:
        return "UNKNOWN_ERRNO"
    return _ERRNO_ALIASES.get(name, name)


@attrs.frozen
class TcpAcceptLabels:
    """Labels of an accepted connection (``peer="src"``)."""

    direction: Direction
    target: TargetAddrLabels
    tls: ServerTlsLabels
    srv: ServerLabels | None = None

    @classmethod
    def inbound(
        cls,
        target: TargetAddrLabels,
        srv: ServerLabels,
        tls: ServerTlsLabels = NoServerTls.NO_CLIENT_HELLO,
    ) -> TcpAcceptLabels:
        """An inbound accept; standalone plaintext is ``no_tls_from_remote``."""
        return cls(Direction.INBOUND, target, tls, srv)

    @classmethod
    def outbound(cls, target: TargetAddrLabels) -> TcpAcceptLabels:
        """An outbound accept (from the local app: always loopback, no ``srv_*``)."""
        return cls(Direction.OUTBOUND, target, NoServerTls.LOOPBACK, None)

    def render(self) -> str:
        return join(
            self.direction.render(),
            Peer.SRC.render(),
            self.target.render(),
            self.tls.render(),
            self.srv.render() if self.srv is not None else "",
        )


@attrs.frozen
class OutboundConnectLabels:
    """Labels of a connection the outbound proxy opens to an endpoint (``peer="dst"``)."""

    target: TargetAddrLabels
    tls: ClientTlsLabels = NoClientTls.NOT_PROVIDED_BY_SERVICE_DISCOVERY
    authority: str | None = None
    dst: DstLabels = attrs.field(factory=DstLabels)

    def render(self) -> str:
        return join(
            Direction.OUTBOUND.render(),
            Peer.DST.render(),
            label("authority", self.authority) if self.authority is not None else "",
            self.target.render(),
            self.tls.render(),
            self.dst.render(),
        )


@attrs.frozen
class InboundConnectLabels:
    """Labels of a connection the inbound proxy opens to the local app (``peer="dst"``)."""

    tls: ClientTlsLabels = NoClientTls.LOOPBACK

    def render(self) -> str:
        return join(Direction.INBOUND.render(), Peer.DST.render(), self.tls.render())


TcpConnectLabels = OutboundConnectLabels | InboundConnectLabels
TcpConnLabels = TcpAcceptLabels | OutboundConnectLabels | InboundConnectLabels


@attrs.frozen
class TcpCloseLabels:
    """A connection's labels plus ``errno`` (the symbolic name, ``""`` for none)."""

    conn: TcpConnLabels
    errno: str

    def render(self) -> str:
        return join(self.conn.render(), label("errno", self.errno))


class TcpMetrics:
    """The TCP transport families, registered on ``registry`` in the reference's order.

    Args:
      registry: where to register ``tcp_open_total``, ``tcp_open_connections``,
        ``tcp_read_bytes_total``, ``tcp_write_bytes_total`` and ``tcp_close_total``.

    Raises:
      ValueError: the families are already registered on ``registry``.
    """

    def __init__(self, registry: Registry) -> None:
        self.open_total = registry.register(
            CounterFamily[TcpConnLabels]("tcp_open_total", "Total count of opened connections")
        )
        self.open_connections = registry.register(
            GaugeFamily[TcpConnLabels](
                "tcp_open_connections", "Number of currently-open connections"
            )
        )
        self.read_bytes_total = registry.register(
            CounterFamily[TcpConnLabels](
                "tcp_read_bytes_total", "Total count of bytes read from peers"
            )
        )
        self.write_bytes_total = registry.register(
            CounterFamily[TcpConnLabels](
                "tcp_write_bytes_total", "Total count of bytes written to peers"
            )
        )
        self.close_total = registry.register(
            CounterFamily[TcpCloseLabels]("tcp_close_total", "Total count of closed connections")
        )

    def accept(self, labels: TcpAcceptLabels) -> TcpConnMetrics:
        """Count an accepted connection open; returns its per-connection handle."""
        return TcpConnMetrics(self, labels)

    def connect(self, labels: TcpConnectLabels) -> TcpConnMetrics:
        """Count an established outgoing connection open; returns its handle."""
        return TcpConnMetrics(self, labels)


class TcpConnMetrics:
    """One connection's metrics; ``close()`` (or leaving ``with``) ends it once.

    ``bytes read`` are bytes read from the peer this labels describe; ``bytes
    written`` are bytes written to it.
    """

    __slots__ = ("_close_total", "_closed", "_held", "_labels", "_open", "_read", "_write")

    def __init__(self, metrics: TcpMetrics, labels: TcpConnLabels) -> None:
        self._close_total = metrics.close_total
        self._labels = labels
        self._closed = False
        self._read: Counter = metrics.read_bytes_total.get(labels)
        self._write: Counter = metrics.write_bytes_total.get(labels)
        self._open: Gauge = metrics.open_connections.get(labels)
        opened = metrics.open_total.get(labels)
        self._held = (opened, self._open, self._read, self._write)
        for series in self._held:
            series.hold()
        opened.inc()
        self._open.inc()

    def add_read(self, n: int) -> None:
        self._read.add(n)

    def add_write(self, n: int) -> None:
        self._write.add(n)

    def close(self, errno: int | None = None) -> None:
        """Record the close (idempotent: only the first call counts).

        Args:
          errno: the OS error number that ended the connection, or ``None`` for a
            clean close.
        """
        if self._closed:
            return
        self._closed = True
        self._open.dec()
        self._close_total.get(TcpCloseLabels(self._labels, errno_name(errno))).inc()
        for series in self._held:
            series.release()

    def __enter__(self) -> TcpConnMetrics:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(None)
