"""The inbound HTTP stack: from a served request to the application.

Per connection (cheap objects built when a connection turns out to be HTTP)::

    RespondErrors      synthetic responses; l5d-proxy-error only to mTLS clients
    Downgrade          orig-proto: h2 carrying an HTTP/1 request becomes HTTP/1 again
    StripRequestHeaders  spoofed l5d-client-id removed
    NormalizeUri       HTTP/1 without Host gets the original destination as authority

Shared by every connection::

    MaxInFlight        INBOUND_MAX_IN_FLIGHT, excess shed with 503
    Router             target = (original destination, authority)
    idle cache         INBOUND_DISCOVERY_IDLE_TIMEOUT
    NewHttpMetrics     request_total, response_total, response_latency_ms
    HttpEndpoint       HTTP/1 pool or HTTP/2 connection to the application

Keying the cache by authority gives one connection pool per Host, as the
reference does.
"""

from __future__ import annotations

import attrs
import trio

from linkerd_proxy.addrs import SocketAddr
from linkerd_proxy.app.config import InboundConfig
from linkerd_proxy.http.endpoint import HttpEndpoint
from linkerd_proxy.http.errors import RespondErrors, inbound_error_kind
from linkerd_proxy.http.h2.settings import H2ClientSettings
from linkerd_proxy.http.loadshed import MaxInFlight
from linkerd_proxy.http.metrics_layer import NewHttpMetrics
from linkerd_proxy.http.model import Request, Response, get_ext
from linkerd_proxy.http.normalize import NormalizeUri
from linkerd_proxy.http.orig_proto import Downgrade
from linkerd_proxy.http.strip import StripRequestHeaders
from linkerd_proxy.metrics.errors import InboundHttpErrorMetrics
from linkerd_proxy.metrics.http import HttpMetrics, InboundHttpLabels
from linkerd_proxy.metrics.labels import ServerLabels, TargetAddrLabels
from linkerd_proxy.metrics.tcp import InboundConnectLabels, TcpMetrics
from linkerd_proxy.stack import Router, Service, stack
from linkerd_proxy.tcp import ConnInfo, MeteredStream, dialer

HttpService = Service[Request, Response]


@attrs.frozen
class InboundHttpTarget:
    """Where an inbound request goes: the application address, per authority."""

    addr: SocketAddr
    authority: str | None


def _target_of(req: Request) -> InboundHttpTarget:
    conn = get_ext(req.extensions, ConnInfo)
    if conn is None:
        raise RuntimeError("inbound request without connection info")
    return InboundHttpTarget(conn.orig_dst, req.authority)


class InboundHttp:
    """Builds the inbound HTTP services (see the module docstring).

    Args:
        config: the inbound configuration.
        metrics: the HTTP families.
        errors: ``inbound_http_errors_total``.
        tcp: transport metrics (for connections to the application).
        h2_client: settings of HTTP/2 connections to the application.
        background: where connection and cache tasks run.
    """

    def __init__(
        self,
        config: InboundConfig,
        *,
        metrics: HttpMetrics,
        errors: InboundHttpErrorMetrics,
        tcp: TcpMetrics,
        h2_client: H2ClientSettings,
        background: trio.Nursery,
    ) -> None:
        self.config = config
        self.errors = errors
        c = config.connect
        dial = dialer(timeout=c.timeout, keepalive=c.keepalive, user_timeout=c.user_timeout)
        app_labels = InboundConnectLabels()

        def new_endpoint(target: InboundHttpTarget) -> HttpEndpoint:
            async def connect() -> trio.abc.Stream:
                stream = await dial(target.addr)
                return MeteredStream(stream, tcp.connect(app_labels))

            return HttpEndpoint(
                target.addr,
                connect,
                max_idle=config.max_idle_conns_per_endpoint,
                idle_timeout=config.http1_pool_idle_timeout,
                h2=h2_client,
                background=background,
            )

        def labels(target: InboundHttpTarget) -> InboundHttpLabels:
            authority = target.authority if config.unsafe_authority_labels else None
            return InboundHttpLabels.default_policy(
                TargetAddrLabels(target.addr), policy=config.default_policy, authority=authority
            )

        cached = (
            stack(new_endpoint)
            .push(NewHttpMetrics.layer(metrics, labels))
            .push_idle_cached(config.discovery_idle_timeout, background)
        )
        self._shared: HttpService = MaxInFlight(Router(cached, _target_of), config.max_in_flight)

    def server_service(self, orig_dst: SocketAddr) -> HttpService:
        """The service for one connection to ``orig_dst``."""
        target = TargetAddrLabels(orig_dst)
        srv = ServerLabels.default_policy(self.config.default_policy, orig_dst.port)
        errors = self.errors

        def on_error(exc: BaseException) -> None:
            errors.record(inbound_error_kind(exc), target, srv)

        inner = NormalizeUri(self._shared, default=str(orig_dst))
        return RespondErrors(
            Downgrade(StripRequestHeaders(inner, (b"l5d-client-id",))),
            emit_headers=False,
            on_error=on_error,
        )
