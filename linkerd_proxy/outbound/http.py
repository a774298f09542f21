"""The outbound HTTP stack: from a request the application sent to its destination.

Per connection::

    RespondErrors      synthetic responses with l5d-proxy-error (unless
                       OUTBOUND_DISABLE_INFORMATIONAL_HEADERS)
    NormalizeUri       HTTP/1 without Host gets the original destination as authority

Shared by every connection::

    MaxInFlight        OUTBOUND_MAX_IN_FLIGHT, excess shed with 503
    Router             target = (original destination, authority)
    idle cache         OUTBOUND_DISCOVERY_IDLE_TIMEOUT (discovery will live here)
    NewHttpMetrics     request_total, response_total, response_latency_ms
    HttpEndpoint       HTTP/1 pool or HTTP/2 connection to the destination

Standalone, the logical target is the original destination: there is no name, so
the ``authority`` label is absent (as the reference renders a forwarded target).
"""

from __future__ import annotations

import attrs
import trio

from linkerd_proxy.addrs import SocketAddr
from linkerd_proxy.app.config import OutboundConfig
from linkerd_proxy.http.endpoint import HttpEndpoint
from linkerd_proxy.http.errors import RespondErrors, outbound_error_kind
from linkerd_proxy.http.h2.settings import H2ClientSettings
from linkerd_proxy.http.loadshed import MaxInFlight
from linkerd_proxy.http.metrics_layer import NewHttpMetrics
from linkerd_proxy.http.model import Request, Response, get_ext
from linkerd_proxy.http.normalize import NormalizeUri
from linkerd_proxy.metrics.errors import OutboundHttpErrorMetrics
from linkerd_proxy.metrics.http import HttpMetrics, OutboundHttpLabels
from linkerd_proxy.metrics.labels import TargetAddrLabels
from linkerd_proxy.metrics.tcp import OutboundConnectLabels, TcpMetrics
from linkerd_proxy.stack import Router, Service, stack
from linkerd_proxy.tcp import ConnInfo, MeteredStream, dialer

HttpService = Service[Request, Response]


@attrs.frozen
class OutboundHttpTarget:
    """Where an outbound request goes: the destination address, per authority."""

    addr: SocketAddr
    authority: str | None


def _target_of(req: Request) -> OutboundHttpTarget:
    conn = get_ext(req.extensions, ConnInfo)
    if conn is None:
        raise RuntimeError("outbound request without connection info")
    return OutboundHttpTarget(conn.orig_dst, req.authority)


class OutboundHttp:
    """Builds the outbound HTTP services (see the module docstring).

    Args:
        config: the outbound configuration.
        metrics: the HTTP families.
        errors: ``outbound_http_errors_total``.
        tcp: transport metrics (for connections to destinations).
        h2_client: settings of HTTP/2 connections to destinations.
        background: where connection and cache tasks run.
    """

    def __init__(
        self,
        config: OutboundConfig,
        *,
        metrics: HttpMetrics,
        errors: OutboundHttpErrorMetrics,
        tcp: TcpMetrics,
        h2_client: H2ClientSettings,
        background: trio.Nursery,
    ) -> None:
        self.config = config
        self.errors = errors
        c = config.connect
        dial = dialer(timeout=c.timeout, keepalive=c.keepalive, user_timeout=c.user_timeout)

        def new_endpoint(target: OutboundHttpTarget) -> HttpEndpoint:
            labels = OutboundConnectLabels(TargetAddrLabels(target.addr))

            async def connect() -> trio.abc.Stream:
                stream = await dial(target.addr)
                return MeteredStream(stream, tcp.connect(labels))

            return HttpEndpoint(
                target.addr,
                connect,
                max_idle=config.max_idle_conns_per_endpoint,
                idle_timeout=config.http1_pool_idle_timeout,
                h2=h2_client,
                background=background,
            )

        def labels(target: OutboundHttpTarget) -> OutboundHttpLabels:
            return OutboundHttpLabels(TargetAddrLabels(target.addr))

        cached = (
            stack(new_endpoint)
            .push(NewHttpMetrics.layer(metrics, labels))
            .push_idle_cached(config.discovery_idle_timeout, background)
        )
        self._shared: HttpService = MaxInFlight(Router(cached, _target_of), config.max_in_flight)

    def server_service(self, orig_dst: SocketAddr) -> HttpService:
        """The service for one connection to ``orig_dst``."""
        errors = self.errors

        def on_error(exc: BaseException) -> None:
            errors.record(outbound_error_kind(exc))

        return RespondErrors(
            NormalizeUri(self._shared, default=str(orig_dst)),
            emit_headers=not self.config.disable_informational_headers,
            on_error=on_error,
        )
