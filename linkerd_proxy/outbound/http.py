"""The outbound HTTP stack: from a request the application sent to its destination.

Per connection::

    RespondErrors   synthetic responses with l5d-proxy-error (unless
                    OUTBOUND_DISABLE_INFORMATIONAL_HEADERS)
    NormalizeUri    HTTP/1 without Host gets the original destination as authority

then the shared forwarding service of :mod:`linkerd_proxy.http.forward` (in-flight
limit, router, idle cache — where discovery will live —, metrics, endpoint).

Standalone, the logical target is the original destination: there is no name, so
the ``authority`` label is absent (as the reference renders a forwarded target).
"""

from __future__ import annotations

import trio

from linkerd_proxy.addrs import SocketAddr
from linkerd_proxy.app.config import OutboundConfig
from linkerd_proxy.http.errors import RespondErrors, outbound_error_kind
from linkerd_proxy.http.forward import ForwardParams, ForwardTarget, new_forward_service
from linkerd_proxy.http.h2.settings import H2ClientSettings
from linkerd_proxy.http.model import Request, Response
from linkerd_proxy.http.normalize import NormalizeUri
from linkerd_proxy.metrics.errors import OutboundHttpErrorMetrics
from linkerd_proxy.metrics.http import HttpMetrics, OutboundHttpLabels
from linkerd_proxy.metrics.labels import TargetAddrLabels
from linkerd_proxy.metrics.tcp import OutboundConnectLabels, TcpMetrics
from linkerd_proxy.stack import Service
from linkerd_proxy.tcp import ConnMetrics, dialer
from linkerd_proxy.transport.backoff import ExponentialBackoff

HttpService = Service[Request, Response]


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
        params = ForwardParams(
            dial=dialer(timeout=c.timeout, keepalive=c.keepalive, user_timeout=c.user_timeout),
            max_idle=config.max_idle_conns_per_endpoint,
            pool_idle_timeout=config.http1_pool_idle_timeout,
            cache_idle_timeout=config.discovery_idle_timeout,
            max_in_flight=config.max_in_flight,
            h2=h2_client,
            connect_backoff=ExponentialBackoff(
                config.connect.backoff.min,
                config.connect.backoff.max,
                config.connect.backoff.jitter,
            ),
            failfast_timeout=config.http_failfast_timeout,
        )

        def connect_metrics(target: ForwardTarget) -> ConnMetrics:
            return tcp.connect(OutboundConnectLabels(TargetAddrLabels(target.addr)))

        def labels(target: ForwardTarget) -> OutboundHttpLabels:
            return OutboundHttpLabels(TargetAddrLabels(target.addr))

        self._shared = new_forward_service(
            params,
            metrics=metrics,
            labels=labels,
            connect_metrics=connect_metrics,
            background=background,
        )

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
