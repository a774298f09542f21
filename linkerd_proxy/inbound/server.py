"""Inbound accept path: orig-dst, the INBOUND_IPS filter, the direct path, forward.

The order is the reference's (SPEC.md section 4, inbound steps 1-3):

1. read the original destination (SO_ORIGINAL_DST) of the accepted connection;
2. refuse it unless its IP is one of ``INBOUND_IPS`` (when that list is set);
3. if its port is the inbound listener's own port, it is a *direct* connection
   from another proxy, which must be mutually authenticated: without identity
   (standalone) it is refused;
4. otherwise the connection is forwarded to the original destination, the
   application, through a per-target stack cached for the discovery idle timeout.

Errors are counted in ``inbound_tcp_errors_total`` and logged; the client's
connection is closed. Nothing here affects any other connection.
"""

from __future__ import annotations

import logging

import attrs
import trio

from linkerd_proxy.addrs import SocketAddr
from linkerd_proxy.app.config import InboundConfig
from linkerd_proxy.errors import ConnectError, ConnectTimeout, ForbiddenOrigDst, OrigDstError
from linkerd_proxy.metrics.errors import InboundErrorKind, TcpErrorMetrics
from linkerd_proxy.metrics.labels import NoServerTls, ServerLabels, TargetAddrLabels
from linkerd_proxy.metrics.tcp import InboundConnectLabels, TcpAcceptLabels, TcpMetrics
from linkerd_proxy.stack import Cached, stack
from linkerd_proxy.tcp import Accepted, Forward, dialer
from linkerd_proxy.transport.orig_dst import OrigDstLookup, peer_addr

log = logging.getLogger(__name__)


class DirectConnectionRefused(ForbiddenOrigDst):
    """A connection to the inbound port itself that is not mutually authenticated."""


@attrs.frozen
class InboundTarget:
    """The per-destination cache key: the application address to forward to."""

    addr: SocketAddr


class InboundServer:
    """The inbound proxy's per-connection entry point (a listener's handler).

    Args:
        config: the inbound configuration.
        tcp: transport metrics.
        errors: ``inbound_tcp_errors_total``.
        orig_dst: how to read a connection's original destination.
        listen_addr: the address the inbound listener is bound to (its port
            marks direct connections).
        background: where the per-target cache's sweeper runs.
    """

    def __init__(
        self,
        config: InboundConfig,
        *,
        tcp: TcpMetrics,
        errors: TcpErrorMetrics,
        orig_dst: OrigDstLookup,
        listen_addr: SocketAddr,
        background: trio.Nursery,
    ) -> None:
        self.config = config
        self.tcp = tcp
        self.errors = errors
        self.orig_dst = orig_dst
        self.listen_addr = listen_addr
        c = config.connect
        dial = dialer(timeout=c.timeout, keepalive=c.keepalive, user_timeout=c.user_timeout)
        # Every connection to the app shares one connect-side series (the
        # reference labels it by direction, peer and TLS only).
        app_labels = InboundConnectLabels()

        def new_forward(target: InboundTarget) -> Forward:
            return Forward(target.addr, dial, lambda: tcp.connect(app_labels))

        self._stack = stack(new_forward).push_idle_cached(config.discovery_idle_timeout, background)

    def _route(self, target: InboundTarget) -> Cached[Accepted, None]:
        return self._stack(target)

    async def __call__(self, stream: trio.SocketStream) -> None:
        """Handle one accepted connection until it ends (never raises ``Exception``)."""
        try:
            client = peer_addr(stream)
            orig = self.orig_dst(stream)
        except (OrigDstError, OSError) as exc:
            log.warning("inbound connection rejected: %s", exc)
            self.errors.record(InboundErrorKind.UNEXPECTED, TargetAddrLabels(self.listen_addr))
            return
        target = TargetAddrLabels(orig)
        try:
            self._check(orig)
        except ForbiddenOrigDst as exc:
            log.info("inbound connection from %s rejected: %s", client, exc)
            self.errors.record(InboundErrorKind.UNEXPECTED, target)
            return
        srv = ServerLabels.default_policy(self.config.default_policy, orig.port)
        metrics = self.tcp.accept(TcpAcceptLabels.inbound(target, srv, NoServerTls.NO_CLIENT_HELLO))
        conn = Accepted(stream, client, metrics)
        try:
            await self._route(InboundTarget(orig))(conn)
        except ConnectTimeout as exc:
            log.info("inbound connection from %s: %s", client, exc)
            self.errors.record(InboundErrorKind.UNEXPECTED, target)
        except ConnectError as exc:
            log.info("inbound connection from %s: %s", client, exc)
            self.errors.record(InboundErrorKind.IO, target)
        finally:
            metrics.close(conn.close_errno)

    def _check(self, orig: SocketAddr) -> None:
        ips = self.config.ips
        if ips and orig.ip not in ips:
            raise ForbiddenOrigDst(f"original destination {orig.ip} is not one of INBOUND_IPS")
        if orig.port == self.listen_addr.port:
            raise DirectConnectionRefused("direct connections must be mutually authenticated")
