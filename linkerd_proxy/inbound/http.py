"""The inbound HTTP stack: from a served request to the application.

Per connection (cheap objects built when a connection turns out to be HTTP)::

    RespondErrors        synthetic responses; l5d-proxy-error only to mTLS clients
    Downgrade            orig-proto: h2 carrying an HTTP/1 request becomes HTTP/1 again
    StripRequestHeaders  spoofed l5d-client-id removed
    NormalizeUri         HTTP/1 without Host gets the original destination as authority

then the shared forwarding service of :mod:`linkerd_proxy.http.forward` (in-flight
limit, router, idle cache, metrics, endpoint), with the inbound labels: the default
policy's ``srv_*``/``route_*``/``authz_*``, and ``authority`` only with
``INBOUND_METRICS_AUTHORITY_LABELS=unsafe``.
"""

from __future__ import annotations

import trio

from linkerd_proxy.addrs import SocketAddr
from linkerd_proxy.app.config import InboundConfig
from linkerd_proxy.app.http_settings import forward_params
from linkerd_proxy.errors import Unauthorized
from linkerd_proxy.http.errors import RespondErrors, inbound_error_kind
from linkerd_proxy.http.forward import ForwardTarget, new_forward_service
from linkerd_proxy.http.h2.settings import H2ClientSettings
from linkerd_proxy.http.model import Request, Response
from linkerd_proxy.http.normalize import NormalizeUri
from linkerd_proxy.http.orig_proto import Downgrade
from linkerd_proxy.http.strip import SetRequestHeader, StripRequestHeaders
from linkerd_proxy.metrics.errors import InboundHttpErrorMetrics
from linkerd_proxy.metrics.http import HttpMetrics, InboundHttpLabels
from linkerd_proxy.metrics.labels import (
    NoServerTls,
    ServerLabels,
    ServerTlsEstablished,
    ServerTlsPassthru,
    TargetAddrLabels,
)
from linkerd_proxy.metrics.tcp import InboundConnectLabels, TcpMetrics
from linkerd_proxy.stack import Service
from linkerd_proxy.tcp import ConnMetrics

HttpService = Service[Request, Response]


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
        params = forward_params(config, h2_client, max_in_flight=config.max_in_flight)
        # Every connection to the app shares one connect-side series (the
        # reference labels it by direction, peer and TLS only).
        app_labels = InboundConnectLabels()

        def connect_metrics(target: ForwardTarget) -> ConnMetrics:
            return tcp.connect(app_labels)

        def labels(target: ForwardTarget) -> InboundHttpLabels:
            authority = target.authority if config.unsafe_authority_labels else None
            tls = target.tls if target.tls is not None else NoServerTls.NO_CLIENT_HELLO
            assert isinstance(tls, ServerTlsEstablished | ServerTlsPassthru | NoServerTls)
            return InboundHttpLabels.default_policy(
                TargetAddrLabels(target.addr),
                tls,
                policy=config.default_policy,
                authority=authority,
            )

        self._shared = new_forward_service(
            params,
            metrics=metrics,
            labels=labels,
            connect_metrics=connect_metrics,
            background=background,
        )

    def server_service(self, orig_dst: SocketAddr, client_id: str | None = None) -> HttpService:
        """The service for one connection to ``orig_dst``.

        ``client_id`` is the client's mTLS identity: it becomes the
        ``l5d-client-id`` request header (spoofed values are always stripped), and
        only identified clients get ``l5d-proxy-error`` on synthetic responses.
        """
        target = TargetAddrLabels(orig_dst)
        srv = ServerLabels.default_policy(self.config.default_policy, orig_dst.port)
        errors = self.errors

        def on_error(exc: BaseException) -> None:
            errors.record(inbound_error_kind(exc), target, srv)

        inner: HttpService = NormalizeUri(self._shared, default=str(orig_dst))
        if client_id is not None:
            inner = SetRequestHeader(inner, b"l5d-client-id", client_id.encode())
        return RespondErrors(
            Downgrade(StripRequestHeaders(inner, (b"l5d-client-id",))),
            emit_headers=client_id is not None,
            on_error=on_error,
        )

    def denied_service(self, orig_dst: SocketAddr, client_id: str | None) -> HttpService:
        """The service for a connection the default policy does not authorize: 403s."""
        policy = self.config.default_policy

        async def deny(req: Request, /) -> Response:
            await trio.lowlevel.checkpoint()
            raise Unauthorized(f"unauthorized request on the {policy} server")

        target = TargetAddrLabels(orig_dst)
        srv = ServerLabels.default_policy(policy, orig_dst.port)
        errors = self.errors

        def on_error(exc: BaseException) -> None:
            errors.record(inbound_error_kind(exc), target, srv)

        return RespondErrors(deny, emit_headers=client_id is not None, on_error=on_error)
