"""Outbound accept path: orig-dst, loop check, detection, HTTP or TCP forwarding.

Standalone (no control plane), an outbound connection goes to its original
destination, as linkerd2-proxy does for anything discovery does not know. HTTP
(detected within ``OUTBOUND_DETECT_TIMEOUT``) goes through the outbound HTTP stack
(``outbound.http``); anything else is forwarded as TCP with the bytes detection
read replayed first.

Ports in ``INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION`` skip detection here too: with
no policy controller to say which ports are opaque, the injector's list (the same
server-speaks-first defaults the control plane uses cluster-wide) is the best
standalone answer, and a database client must not wait 10 s for its banner.

A connection whose original destination is one of the proxy's own outbound
listeners (a client that connected to 4140 directly, with no iptables redirect)
would loop back into the proxy forever; it is refused.
"""

from __future__ import annotations

import logging
from collections.abc import Collection

import attrs
import trio

from linkerd_proxy.addrs import SocketAddr
from linkerd_proxy.app.config import OutboundConfig
from linkerd_proxy.errors import ConnectError, LoopDetected, OrigDstError
from linkerd_proxy.http.detect import Detected
from linkerd_proxy.http.serve import HttpServerParams, serve_http
from linkerd_proxy.metrics.errors import OutboundErrorKind, TcpErrorMetrics
from linkerd_proxy.metrics.labels import TargetAddrLabels
from linkerd_proxy.metrics.tcp import OutboundConnectLabels, TcpAcceptLabels, TcpMetrics
from linkerd_proxy.outbound.http import OutboundHttp
from linkerd_proxy.stack import Cached, stack
from linkerd_proxy.tcp import Accepted, ConnInfo, ConnMetrics, Forward, MeteredStream, dialer
from linkerd_proxy.transport.detect_io import detect_protocol
from linkerd_proxy.transport.orig_dst import OrigDstLookup, local_addr, peer_addr

log = logging.getLogger(__name__)


@attrs.frozen
class OutboundTarget:
    """The per-destination cache key: the original destination."""

    orig_dst: SocketAddr


class OutboundServer:
    """The outbound proxy's per-connection entry point (a listener's handler).

    Args:
        config: the outbound configuration.
        tcp: transport metrics.
        errors: ``outbound_tcp_errors_total``.
        http: the outbound HTTP stack.
        http_params: HTTP driver settings and the drain signal.
        opaque_ports: destination ports that skip protocol detection.
        orig_dst: how to read a connection's original destination.
        listen_addrs: the addresses the outbound listeners are bound to.
        background: where the per-target cache's sweeper runs.
    """

    def __init__(
        self,
        config: OutboundConfig,
        *,
        tcp: TcpMetrics,
        errors: TcpErrorMetrics,
        http: OutboundHttp,
        http_params: HttpServerParams,
        opaque_ports: frozenset[int],
        orig_dst: OrigDstLookup,
        listen_addrs: Collection[SocketAddr],
        background: trio.Nursery,
    ) -> None:
        self.config = config
        self.http = http
        self.http_params = http_params
        self.opaque_ports = opaque_ports
        self.tcp = tcp
        self.errors = errors
        self.orig_dst = orig_dst
        self.listen_addrs = frozenset(listen_addrs)
        c = config.connect
        dial = dialer(timeout=c.timeout, keepalive=c.keepalive, user_timeout=c.user_timeout)

        def new_forward(target: OutboundTarget) -> Forward:
            labels = OutboundConnectLabels(TargetAddrLabels(target.orig_dst))

            def new_metrics() -> ConnMetrics:
                return tcp.connect(labels)

            return Forward(target.orig_dst, dial, new_metrics)

        self._stack = stack(new_forward).push_idle_cached(config.discovery_idle_timeout, background)

    def _route(self, target: OutboundTarget) -> Cached[Accepted, None]:
        return self._stack(target)

    async def __call__(self, stream: trio.SocketStream) -> None:
        """Handle one accepted connection until it ends (never raises ``Exception``)."""
        try:
            client = peer_addr(stream)
            orig = self.orig_dst(stream)
            if orig in self.listen_addrs:
                raise LoopDetected(f"original destination {orig} is this proxy's outbound listener")
        except (OrigDstError, LoopDetected, OSError) as exc:
            log.warning("outbound connection rejected: %s", exc)
            self.errors.record(OutboundErrorKind.UNEXPECTED, TargetAddrLabels(local_addr(stream)))
            return
        target = TargetAddrLabels(orig)
        prefix = b""
        if orig.port not in self.opaque_ports:
            detected, prefix = await detect_protocol(stream, timeout=self.config.detect_timeout)
            if detected in (Detected.H2, Detected.HTTP1):
                metrics = self.tcp.accept(TcpAcceptLabels.outbound(target))
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
                    metrics.close()
                return
        metrics = self.tcp.accept(TcpAcceptLabels.outbound(target))
        metrics.add_read(len(prefix))
        conn = Accepted(stream, client, metrics, prefix)
        try:
            await self._route(OutboundTarget(orig))(conn)
        except ConnectError as exc:
            log.info("outbound connection from %s: %s", client, exc)
            self.errors.record(OutboundErrorKind.IO, target)
        finally:
            metrics.close(conn.close_errno)
