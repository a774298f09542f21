"""The outbound HTTP stack: from a request the application sent to its destination.

Per connection::

    RespondErrors   synthetic responses with l5d-proxy-error (unless
                    OUTBOUND_DISABLE_INFORMATIONAL_HEADERS)
    NormalizeUri    HTTP/1 without Host gets the original destination as authority

and, per endpoint, ``RequireIdentity`` (``l5d-require-id``, 502 on a mismatch).

then the shared forwarding service of :mod:`linkerd_proxy.http.forward` (in-flight
limit, router, idle cache — where discovery will live —, metrics, endpoint).

Standalone, the logical target is the original destination: there is no name, so
the ``authority`` label is absent (as the reference renders a forwarded target).
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
import trio

from linkerd_proxy.addrs import NameAddr, SocketAddr
from linkerd_proxy.app.config import OutboundConfig
from linkerd_proxy.app.http_settings import forward_params
from linkerd_proxy.balance import Endpoint, EwmaConfig
from linkerd_proxy.discovery.endpoint import EndpointMeta, ProtocolHint
from linkerd_proxy.http.endpoint import HttpEndpoint
from linkerd_proxy.http.errors import RespondErrors, outbound_error_kind
from linkerd_proxy.http.forward import ForwardParams, ForwardTarget, new_forward_service
from linkerd_proxy.http.h2.settings import H2ClientSettings
from linkerd_proxy.http.loadshed import MaxInFlight
from linkerd_proxy.http.metrics_layer import HttpMetricsService
from linkerd_proxy.http.model import Request, Response
from linkerd_proxy.http.normalize import NormalizeUri
from linkerd_proxy.http.orig_proto import Upgrade
from linkerd_proxy.identity.store import IdentityStore
from linkerd_proxy.metrics.errors import OutboundHttpErrorMetrics
from linkerd_proxy.metrics.http import HttpMetrics, OutboundHttpLabels
from linkerd_proxy.metrics.labels import ClientTlsEstablished, DstLabels, TargetAddrLabels
from linkerd_proxy.metrics.tcp import OutboundConnectLabels, TcpMetrics
from linkerd_proxy.outbound.concrete import Failing, new_balanced_http
from linkerd_proxy.outbound.control import OutboundControl
from linkerd_proxy.outbound.endpoint_connect import EndpointConnector
from linkerd_proxy.outbound.logical import LogicalHttp
from linkerd_proxy.outbound.require_id import RequireIdentity
from linkerd_proxy.stack import Service, stack
from linkerd_proxy.tcp import ConnMetrics, MeteredStream
from linkerd_proxy.transport.header import SessionProtocol

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
        control: OutboundControl | None = None,
    ) -> None:
        self.config = config
        self.errors = errors
        params = forward_params(config, h2_client, max_in_flight=None)

        def connect_metrics(target: ForwardTarget) -> ConnMetrics:
            return tcp.connect(OutboundConnectLabels(TargetAddrLabels(target.addr)))

        def labels(target: ForwardTarget) -> OutboundHttpLabels:
            return OutboundHttpLabels(TargetAddrLabels(target.addr))

        # Forwarded (orig-dst) connections are plaintext: l5d-require-id fails them.
        forward: HttpService = RequireIdentity(
            new_forward_service(
                params,
                metrics=metrics,
                labels=labels,
                connect_metrics=connect_metrics,
                background=background,
            ),
            None,
        )
        inner: HttpService = forward
        if control is not None and control.destination is not None:
            balanced = (
                stack(
                    new_balanced_http(
                        control.destination,
                        control.context_token,
                        _endpoint_for(config, params, metrics, tcp, background, control.identity),
                        ewma=EwmaConfig(),
                        queue_capacity=config.http_queue_capacity,
                        failfast_timeout=config.http_failfast_timeout,
                        background=background,
                    )
                )
                .push_idle_cached(config.discovery_idle_timeout, background)
                .into_new_service()
            )
            inner = LogicalHttp(control.discoveries, balanced, forward)
        elif control is not None:
            inner = LogicalHttp(control.discoveries, _no_destination, forward)
        self._shared: HttpService = MaxInFlight(inner, config.max_in_flight)

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


def _no_destination(name: NameAddr) -> HttpService:
    return Failing(f"cannot resolve {name}: no destination service configured")


class _EndpointService:
    """An endpoint of a balancer: metrics around the HTTP client; closes it on removal."""

    def __init__(self, inner: HttpService, client: HttpEndpoint) -> None:
        self._inner = inner
        self._client = client

    async def __call__(self, req: Request, /) -> Response:
        return await self._inner(req)

    async def aclose(self) -> None:
        await self._client.aclose()


def _endpoint_for(
    config: OutboundConfig,
    params: ForwardParams,
    metrics: HttpMetrics,
    tcp: TcpMetrics,
    background: trio.Nursery,
    identity: IdentityStore | None,
) -> Callable[[NameAddr], Callable[[Endpoint[EndpointMeta]], HttpService]]:
    """For a logical name: endpoint -> its HTTP client with metrics (and orig-proto)."""

    def for_name(name: NameAddr) -> Callable[[Endpoint[EndpointMeta]], HttpService]:
        def new(ep: Endpoint[EndpointMeta]) -> HttpService:
            target = TargetAddrLabels(ep.addr)
            dst = DstLabels.of(ep.meta.label_dict())
            connector = EndpointConnector(
                ep.addr,
                ep.meta,
                params.dial,
                identity,
                handshake_timeout=config.connect.timeout,
                session=SessionProtocol.HTTP1,
            )
            # The transport header names the protocol the connection speaks: the
            # HTTP/1 pool and the HTTP/2 connection each get their own.
            connector_h2 = attrs.evolve(connector, session=SessionProtocol.HTTP2)
            conn_labels = OutboundConnectLabels(
                target, connector.tls_labels, authority=str(name), dst=dst
            )

            async def connect() -> trio.abc.Stream:
                stream = await connector()
                return MeteredStream(stream, tcp.connect(conn_labels))

            async def connect_h2() -> trio.abc.Stream:
                stream = await connector_h2()
                return MeteredStream(stream, tcp.connect(conn_labels))

            client = HttpEndpoint(
                ep.addr,
                connect,
                max_idle=params.max_idle,
                idle_timeout=params.pool_idle_timeout,
                h2=params.h2,
                background=background,
                connect_h2=connect_h2,
            )
            labels = OutboundHttpLabels(target, connector.tls_labels, authority=str(name), dst=dst)
            svc: HttpService = HttpMetricsService(client, metrics.target(labels))
            # A meshed HTTP/2-capable endpoint gets HTTP/1 requests over HTTP/2
            # (orig-proto).
            if ep.meta.protocol_hint is ProtocolHint.HTTP2:
                svc = Upgrade(svc, svc)
            tls = connector.tls_labels
            server_id = tls.server_id if isinstance(tls, ClientTlsEstablished) else None
            return _EndpointService(RequireIdentity(svc, server_id), client)

        return new

    return for_name
