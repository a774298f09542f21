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
from linkerd_proxy.errors import (
    ConnectError,
    ConnectTimeout,
    ForbiddenOrigDst,
    OrigDstError,
    TransportHeaderError,
)
from linkerd_proxy.http.detect import Detected
from linkerd_proxy.http.serve import HttpServerParams, serve_http
from linkerd_proxy.identity.store import TRANSPORT_ALPN, IdentityStore
from linkerd_proxy.inbound.authz import authorized
from linkerd_proxy.inbound.http import InboundHttp
from linkerd_proxy.metrics.errors import InboundErrorKind, TcpErrorMetrics
from linkerd_proxy.metrics.labels import (
    NoServerTls,
    ServerLabels,
    ServerTlsEstablished,
    ServerTlsLabels,
    ServerTlsPassthru,
    TargetAddrLabels,
)
from linkerd_proxy.metrics.tcp import InboundConnectLabels, TcpAcceptLabels, TcpMetrics
from linkerd_proxy.stack import stack
from linkerd_proxy.tcp import Accepted, ConnInfo, Forward, MeteredStream, dialer
from linkerd_proxy.tls.client import negotiated_alpn
from linkerd_proxy.tls.server import Kind, TlsDetectTimeout, detect_tls, terminate
from linkerd_proxy.transport.detect_io import detect_protocol
from linkerd_proxy.transport.header import SessionProtocol
from linkerd_proxy.transport.header_io import read_transport_header
from linkerd_proxy.transport.orig_dst import OrigDstLookup, peer_addr
from linkerd_proxy.transport.prefixed import PrefixedStream

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
        identity: IdentityStore | None = None,
    ) -> None:
        self.config = config
        self.identity = identity
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

        if orig.port == self.listen_addr.port:
            await self._serve_direct(stream, client, orig)
            return
        if orig.port in self.config.ports_disable_protocol_detection:
            await self._forward_tcp(stream, client, orig, b"", NoServerTls.PORT_SKIPPED)
            return
        if self.identity is not None:
            await self._serve_tls_detected(stream, client, orig)
            return
        await self._serve_plaintext(stream, client, orig, b"")

    async def _serve_tls_detected(
        self, stream: trio.SocketStream, client: SocketAddr, orig: SocketAddr
    ) -> None:
        assert self.identity is not None
        target = TargetAddrLabels(orig)
        timeout = self.config.detect_timeout
        try:
            found = await detect_tls(stream, self.identity.local_name, timeout=timeout)
        except TlsDetectTimeout as exc:
            log.info("inbound connection from %s: %s", client, exc)
            self.errors.record(InboundErrorKind.TLS_DETECT_TIMEOUT, target)
            return
        if found.kind is Kind.PLAINTEXT:
            await self._serve_plaintext(stream, client, orig, found.buffered)
            return
        if found.kind is Kind.PASSTHROUGH:
            sni = found.hello.sni if found.hello is not None else None
            await self._forward_tcp(
                stream, client, orig, found.buffered, ServerTlsPassthru(sni or "")
            )
            return
        if not self.identity.is_certified():
            log.info("inbound TLS from %s refused: no certificate yet", client)
            return
        try:
            tls_stream, client_id = await terminate(
                stream, found.buffered, self.identity.server_context(), timeout=timeout
            )
        except (trio.TooSlowError, trio.BrokenResourceError, OSError) as exc:
            log.info("inbound TLS handshake from %s failed: %r", client, exc)
            self.errors.record(
                InboundErrorKind.TLS_DETECT_TIMEOUT
                if isinstance(exc, trio.TooSlowError)
                else InboundErrorKind.IO,
                target,
            )
            return
        tls = ServerTlsEstablished(client_id)
        detected, prefix = await detect_protocol(tls_stream, timeout=timeout)
        if detected not in (Detected.H2, Detected.HTTP1):
            await self._forward_tcp(tls_stream, client, orig, prefix, tls)
            return
        await self._serve_http(tls_stream, detected, prefix, client, orig, tls, client_id)

    async def _serve_direct(
        self, stream: trio.SocketStream, client: SocketAddr, orig: SocketAddr
    ) -> None:
        """A connection to the inbound port itself: mTLS plus the transport header.

        SPEC.md section 5: the client must present an identity and negotiate ALPN
        ``transport.l5d.io/v1``; the header (read within the detect timeout, at
        most 64 KiB) names the application port and, for HTTP, the session
        protocol, which is served without detection.
        """
        assert self.identity is not None
        target = TargetAddrLabels(orig)
        timeout = self.config.detect_timeout
        refused = "direct connections must be mutually authenticated"
        try:
            found = await detect_tls(stream, self.identity.local_name, timeout=timeout)
            if found.kind is not Kind.TERMINATE or not self.identity.is_certified():
                raise DirectConnectionRefused(refused)
            tls_stream, client_id = await terminate(
                stream, found.buffered, self.identity.server_context(), timeout=timeout
            )
            if client_id is None or negotiated_alpn(tls_stream) != TRANSPORT_ALPN:
                await trio.aclose_forcefully(tls_stream)
                raise DirectConnectionRefused(refused)
            header, rest = await read_transport_header(tls_stream, timeout=timeout)
        except (TlsDetectTimeout, trio.TooSlowError) as exc:
            log.info("direct connection from %s: %s", client, exc)
            self.errors.record(InboundErrorKind.TLS_DETECT_TIMEOUT, target)
            return
        except (ForbiddenOrigDst, TransportHeaderError, trio.BrokenResourceError, OSError) as exc:
            log.info("direct connection from %s refused: %s", client, exc)
            self.errors.record(InboundErrorKind.UNEXPECTED, target)
            return
        if header.name is not None:
            log.info("direct connection from %s: gateway mode is not supported", client)
            self.errors.record(InboundErrorKind.UNEXPECTED, target)
            await trio.aclose_forcefully(tls_stream)
            return
        app = SocketAddr(orig.ip, header.port)
        tls = ServerTlsEstablished(client_id)
        if header.protocol is None:
            await self._forward_tcp(tls_stream, client, app, rest, tls)
            return
        detected = Detected.H2 if header.protocol is SessionProtocol.HTTP2 else Detected.HTTP1
        await self._serve_http(tls_stream, detected, rest, client, app, tls, client_id)

    async def _serve_plaintext(
        self, stream: trio.SocketStream, client: SocketAddr, orig: SocketAddr, buffered: bytes
    ) -> None:
        source: trio.abc.Stream = PrefixedStream(stream, buffered) if buffered else stream
        detected, prefix = await detect_protocol(source, timeout=self.config.detect_timeout)
        tls = NoServerTls.NO_CLIENT_HELLO
        # ``source``, not ``stream``: TLS detection may have read more than
        # protocol detection consumed from its buffer.
        if detected not in (Detected.H2, Detected.HTTP1):
            await self._forward_tcp(source, client, orig, prefix, tls)
            return
        await self._serve_http(source, detected, prefix, client, orig, tls, None)

    async def _serve_http(
        self,
        stream: trio.abc.Stream,
        detected: Detected,
        prefix: bytes,
        client: SocketAddr,
        orig: SocketAddr,
        tls: ServerTlsLabels,
        client_id: str | None,
    ) -> None:
        srv = ServerLabels.default_policy(self.config.default_policy, orig.port)
        metrics = self.tcp.accept(TcpAcceptLabels.inbound(TargetAddrLabels(orig), srv, tls))
        metrics.add_read(len(prefix))
        service = self.http.server_service(orig, client_id)
        if not self._authorized(client, client_id):
            service = self.http.denied_service(orig, client_id)
        try:
            await serve_http(
                detected,
                MeteredStream(stream, metrics),
                prefix,
                service,
                self.http_params,
                extensions={ConnInfo: ConnInfo(client, orig, tls, client_id)},
            )
        finally:
            metrics.close()  # idempotent: the metered stream closed it already

    async def _forward_tcp(
        self,
        stream: trio.abc.Stream,
        client: SocketAddr,
        orig: SocketAddr,
        prefix: bytes,
        tls: ServerTlsLabels,
    ) -> None:
        target = TargetAddrLabels(orig)
        client_id = tls.client_id if isinstance(tls, ServerTlsEstablished) else None
        if not self._authorized(client, client_id):
            await trio.aclose_forcefully(stream)
            return
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

    def _authorized(self, client: SocketAddr, client_id: str | None) -> bool:
        policy = self.config.default_policy
        ok = authorized(policy, client.ip, client_id, self.config.cluster_networks)
        if not ok:
            log.info(
                "inbound connection from %s (identity %s) not authorized by the %s policy",
                client,
                client_id or "none",
                policy,
            )
        elif policy == "audit" and not authorized(
            "all-authenticated", client.ip, client_id, self.config.cluster_networks
        ):
            log.info("audit: allowing unauthenticated connection from %s", client)
        return ok

    def _check(self, orig: SocketAddr) -> None:
        ips = self.config.ips
        if ips and orig.ip not in ips:
            raise ForbiddenOrigDst(f"original destination {orig.ip} is not one of INBOUND_IPS")
        if orig.port == self.listen_addr.port and self.identity is None:
            raise DirectConnectionRefused("direct connections must be mutually authenticated")
