"""Config -> the HTTP drivers' settings objects (the drivers take plain values)."""

from __future__ import annotations

from linkerd_proxy.app.config import (
    Config,
    H2ClientConfig,
    H2ServerConfig,
    InboundConfig,
    OutboundConfig,
)
from linkerd_proxy.app.shutdown import Shutdown
from linkerd_proxy.http.forward import ForwardParams
from linkerd_proxy.http.h1.server import H1ServerSettings
from linkerd_proxy.http.h2.settings import H2ClientSettings, H2ServerSettings
from linkerd_proxy.http.serve import HttpServerParams
from linkerd_proxy.tcp import dialer
from linkerd_proxy.transport.backoff import ExponentialBackoff


def h2_server_settings(cfg: H2ServerConfig) -> H2ServerSettings:
    keepalive = cfg.keepalive
    return H2ServerSettings.build(
        initial_stream_window_size=cfg.initial_stream_window_size,
        initial_connection_window_size=cfg.initial_connection_window_size,
        max_concurrent_streams=cfg.max_concurrent_streams,
        max_header_list_size=cfg.max_header_list_size,
        max_frame_size=cfg.max_frame_size,
        keepalive_interval=keepalive.interval if keepalive else None,
        keepalive_timeout=keepalive.timeout if keepalive else None,
        max_send_buf_size=cfg.max_send_buf_size,
        max_pending_accept_reset_streams=cfg.max_pending_accept_reset_streams,
    )


def h2_client_settings(cfg: H2ClientConfig) -> H2ClientSettings:
    return H2ClientSettings.build(
        initial_stream_window_size=cfg.initial_stream_window_size,
        initial_connection_window_size=cfg.initial_connection_window_size,
    )


def server_params(config: Config, *, inbound: bool, drain: Shutdown) -> HttpServerParams:
    """The HTTP server parameters of one direction.

    The HTTP/1 header-read deadline is the direction's detect timeout: a request
    that has started must finish its head as fast as a new connection must show
    its protocol (an idle keep-alive connection is not affected).
    """
    direction = config.inbound if inbound else config.outbound
    h2 = config.h2.inbound_server if inbound else config.h2.outbound_server
    return HttpServerParams(
        h1=H1ServerSettings(
            header_read_timeout=direction.detect_timeout,
            max_head_bytes=direction.http1_max_head_bytes,
            max_headers=direction.http1_max_headers,
        ),
        h2=h2_server_settings(h2),
        drain=drain,
    )


def forward_params(
    direction: InboundConfig | OutboundConfig,
    h2_client: H2ClientSettings,
    *,
    max_in_flight: int | None,
) -> ForwardParams:
    """How a direction forwards HTTP to an address (``http.forward``), from its config."""
    c = direction.connect
    return ForwardParams(
        dial=dialer(timeout=c.timeout, keepalive=c.keepalive, user_timeout=c.user_timeout),
        max_idle=direction.max_idle_conns_per_endpoint,
        pool_idle_timeout=direction.http1_pool_idle_timeout,
        cache_idle_timeout=direction.discovery_idle_timeout,
        max_in_flight=max_in_flight,
        h2=h2_client,
        connect_backoff=ExponentialBackoff(c.backoff.min, c.backoff.max, c.backoff.jitter),
        failfast_timeout=direction.http_failfast_timeout,
    )
