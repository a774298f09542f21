"""Inbound accept path: orig-dst, INBOUND_IPS, direct path, detection, HTTP or TCP.

The order is the reference's (SPEC.md section 4, inbound):

1. read the original destination (SO_ORIGINAL_DST) of the accepted connection;
2. refuse it unless its IP is one of ``INBOUND_IPS`` (when that list is set);
3. if its port is the inbound listener's own port, it is a *direct* connection
   from another proxy, which must be mutually authenticated: without identity
   (standalone) it is refused;
4. ports in ``INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION`` are opaque at once (TLS
   label ``port_skipped``), so server-speaks-first protocols do not wait;
5. otherwise HTTP detection (``INBOUND_DETECT_TIMEOUT``): HTTP/1 or HTTP/2 go to
   the inbound HTTP stack (``inbound.http``), anything else is forwarded as TCP
   with the bytes detection read replayed first.

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
from linkerd_proxy.http.detect import Detected
from linkerd_proxy.http.serve import HttpServerParams, serve_http
from linkerd_proxy.inbound.http import InboundHttp
from linkerd_proxy.metrics.errors import InboundErrorKind, TcpErrorMetrics
from linkerd_proxy.metrics.labels import NoServerTls, ServerLabels, TargetAddrLabels
from linkerd_proxy.metrics.tcp import InboundConnectLabels, TcpAcceptLabels, TcpMetrics
from linkerd_proxy.stack import stack
from linkerd_proxy.tcp import Accepted, ConnInfo, Forward, MeteredStream, dialer
from linkerd_proxy.transport.detect_io import detect_protocol
from linkerd_proxy.transport.orig_dst import OrigDstLookup, peer_addr

log = logging.getLogger(__name__)


class DirectConnectionRefused(ForbiddenOrigDst):
    """A connection to the inbound port itself that is not mutually authenticated."""


@attrs.frozen
class InboundTarget:
    """The per-destination cache key of the TCP path: the application address."""

    addr: SocketAddr


class InboundServer:
    """The inbound proxy's per-connection entry point (a listener's handler).

    Args:
        config: the inbound configuration.
        tcp: transport metrics.
        errors: ``inbound_tcp_errors_total``.
        http: the inbound HTTP stack.
        http_params: HTTP driver settings and the drain signal.
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
        http: InboundHttp,
        http_params: HttpServerParams,
        orig_dst: OrigDstLookup,
        listen_addr: SocketAddr,
        background: trio.Nursery,
    ) -> None:
        self.config = config
        self.tcp = tcp
        self.errors = errors
        self.http = http
        self.http_params = http_params
        self.orig_dst = orig_dst
        self.listen_addr = listen_addr
        c = config.connect
        dial = dialer(timeout=c.timeout, keepalive=c.keepalive, user_timeout=c.user_timeout)
        # Every connection to the app shares one connect-side series (the
        # reference labels it by direction, peer and TLS only).
        app_labels = InboundConnectLabels()

        def new_forward(target: InboundTarget) -> Forward:
            return Forward(target.addr, dial, lambda: tcp.connect(app_labels))

        self._forward = stack(new_forward).push_idle_cached(
            config.discovery_idle_timeout, background
        )

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

        if orig.port in self.config.ports_disable_protocol_detection:
            await self._forward_tcp(stream, client, orig, b"", NoServerTls.PORT_SKIPPED)
            return
        detected, prefix = await detect_protocol(stream, timeout=self.config.detect_timeout)
        tls = NoServerTls.NO_CLIENT_HELLO
        if detected not in (Detected.H2, Detected.HTTP1):
            await self._forward_tcp(stream, client, orig, prefix, tls)
            return
        srv = ServerLabels.default_policy(self.config.default_policy, orig.port)
        metrics = self.tcp.accept(TcpAcceptLabels.inbound(target, srv, tls))
        metrics.add_read(len(prefix))
        try:
            await serve_http(
                detected,
                MeteredStream(stream, metrics),
                prefix,
                self.http.server_service(orig),
                self.http_params,
                extensions={ConnInfo: ConnInfo(client, orig)},
            )
        finally:
            metrics.close()  # idempotent: the metered stream closed it already

    async def _forward_tcp(
        self,
        stream: trio.SocketStream,
        client: SocketAddr,
        orig: SocketAddr,
        prefix: bytes,
        tls: NoServerTls,
    ) -> None:
        target = TargetAddrLabels(orig)
        srv = ServerLabels.default_policy(self.config.default_policy, orig.port)
        metrics = self.tcp.accept(TcpAcceptLabels.inbound(target, srv, tls))
        metrics.add_read(len(prefix))
        conn = Accepted(stream, client, metrics, prefix)
        try:
            await self._forward(InboundTarget(orig))(conn)
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
