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
import random
from collections.abc import Callable, Collection

import attrs
import trio

from linkerd_proxy.addrs import NameAddr, SocketAddr
from linkerd_proxy.app.config import OutboundConfig
from linkerd_proxy.balance import Endpoint, EwmaConfig
from linkerd_proxy.discovery.endpoint import EndpointMeta
from linkerd_proxy.errors import (
    BackendFailed,
    ConnectError,
    DiscoveryRejected,
    FailFast,
    LoopDetected,
    OrigDstError,
)
from linkerd_proxy.http.detect import Detected
from linkerd_proxy.http.serve import HttpServerParams, serve_http
from linkerd_proxy.metrics.errors import OutboundErrorKind, TcpErrorMetrics
from linkerd_proxy.metrics.labels import DstLabels, TargetAddrLabels
from linkerd_proxy.metrics.tcp import OutboundConnectLabels, TcpAcceptLabels, TcpMetrics
from linkerd_proxy.outbound.concrete import Failing, new_balanced_tcp
from linkerd_proxy.outbound.control import OutboundControl
from linkerd_proxy.outbound.endpoint_connect import EndpointConnector
from linkerd_proxy.outbound.http import OutboundHttp
from linkerd_proxy.outbound.logical import pick
from linkerd_proxy.outbound.routing import BalanceTo, FailWith, ForwardTo, Routing
from linkerd_proxy.stack import Cached, Service, stack
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
        control: OutboundControl | None = None,
    ) -> None:
        self.config = config
        self.control = control
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
        self._balanced: Callable[[NameAddr], Service[Accepted, None]] | None = None
        if control is not None and control.destination is not None:
            identity = control.identity

            def endpoint_for(name: NameAddr) -> Callable[[Endpoint[EndpointMeta]], Forward]:
                def new(ep: Endpoint[EndpointMeta]) -> Forward:
                    connector = EndpointConnector(
                        ep.addr, ep.meta, dial, identity, handshake_timeout=c.timeout
                    )
                    labels = OutboundConnectLabels(
                        TargetAddrLabels(ep.addr),
                        connector.tls_labels,
                        authority=str(name),
                        dst=DstLabels.of(ep.meta.label_dict()),
                    )

                    async def connect(_addr: SocketAddr) -> trio.abc.Stream:
                        return await connector()

                    return Forward(ep.addr, connect, lambda: tcp.connect(labels))

                return new

            self._balanced = (
                stack(
                    new_balanced_tcp(
                        control.destination,
                        control.context_token,
                        endpoint_for,
                        ewma=EwmaConfig(),
                        queue_capacity=config.tcp_queue_capacity,
                        failfast_timeout=config.tcp_failfast_timeout,
                        background=background,
                    )
                )
                .push_idle_cached(config.discovery_idle_timeout, background)
                .into_new_service()
            )
        self._rng = random.Random()

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
        if self.control is None:
            await self._serve(stream, client, orig, None)
            return
        with self.control.discoveries.cache.hold(orig) as disc:
            try:
                routing = await disc.routing(self.control.discoveries.failfast)
            except (FailFast, DiscoveryRejected) as exc:
                log.info("outbound connection to %s failed: %s", orig, exc)
                self.errors.record(
                    OutboundErrorKind.FAILFAST
                    if isinstance(exc, FailFast)
                    else OutboundErrorKind.UNEXPECTED,
                    TargetAddrLabels(orig),
                )
                return
            await self._serve(stream, client, orig, routing)

    async def _serve(
        self,
        stream: trio.SocketStream,
        client: SocketAddr,
        orig: SocketAddr,
        routing: Routing | None,
    ) -> None:
        target = TargetAddrLabels(orig)
        prefix = b""
        opaque = orig.port in self.opaque_ports or (routing is not None and routing.opaque)
        if not opaque:
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
            await self._tcp_backend(orig, routing)(conn)
        except ConnectError as exc:
            log.info("outbound connection from %s: %s", client, exc)
            self.errors.record(OutboundErrorKind.IO, target)
        except (FailFast, BackendFailed) as exc:
            log.info("outbound connection from %s to %s: %s", client, orig, exc)
            self.errors.record(
                OutboundErrorKind.FAILFAST
                if isinstance(exc, FailFast)
                else OutboundErrorKind.UNEXPECTED,
                target,
            )
        finally:
            metrics.close(conn.close_errno)

    def _tcp_backend(self, orig: SocketAddr, routing: Routing | None) -> Service[Accepted, None]:
        if routing is None:
            return self._route(OutboundTarget(orig))
        backend = pick(routing.default, self._rng)
        if isinstance(backend, ForwardTo):
            return self._route(OutboundTarget(backend.addr))
        if isinstance(backend, BalanceTo) and self._balanced is not None:
            return self._balanced(backend.name)
        message = backend.message if isinstance(backend, FailWith) else f"cannot resolve {backend}"
        return Failing(message)
