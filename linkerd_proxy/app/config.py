"""The proxy's configuration: nested frozen classes, built from the environment.

Top of the ``app`` configuration layer, read by the runtime and every stack.
:meth:`Config.from_env` turns ``LINKERD2_PROXY_*`` into a :class:`Config` through
``app.config_read``, which reads every variable through its row in
``app.config_vars`` (the table ``docs/configuration.md`` is rendered from). Every
field defaults to the reference proxy's default, so ``Config()`` is the standalone
proxy and ``attrs.evolve`` adjusts one part for tests and embedders. Durations
are ``float`` seconds. Nothing here does I/O: identity files are only named.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import attrs

from linkerd_proxy.addrs import IpAddr, NameAddr, SocketAddr
from linkerd_proxy.app import env_parse as p

# -------------------------------------------------------------------- classes

_ADMIN_ADDR = SocketAddr.parse("127.0.0.1:4191")
_INBOUND_ADDR = SocketAddr.parse("0.0.0.0:4143")
_OUTBOUND_ADDR = SocketAddr.parse("127.0.0.1:4140")
_CONTROL_ADDR = SocketAddr.parse("0.0.0.0:4190")


def is_loopback_addr(addr: SocketAddr | NameAddr) -> bool:
    """A loopback IP, or the absolute name ``localhost.`` (as the reference)."""
    if isinstance(addr, SocketAddr):
        return addr.ip.is_loopback
    return p.is_localhost_name(addr.name)


@attrs.frozen
class ControlAddr:
    """A control-plane service: its address and the TLS name its server proves.

    ``identity`` is ``None`` (plaintext) only for a loopback address: a loopback
    IP or the absolute name ``localhost.``, as in the reference.
    """

    addr: SocketAddr | NameAddr
    identity: str | None

    @property
    def is_loopback(self) -> bool:
        return is_loopback_addr(self.addr)


@attrs.frozen
class BackoffConfig:
    min: float
    max: float
    jitter: float


@attrs.frozen
class ConnectConfig:
    """How a direction opens connections to endpoints (TCP options are ``None`` = off)."""

    timeout: float
    backoff: BackoffConfig
    keepalive: float | None = None
    user_timeout: float | None = None


@attrs.frozen
class AcceptConfig:
    """Socket options for accepted connections and the listen backlog."""

    keepalive: float | None = None
    user_timeout: float | None = None
    backlog: int = 128


@attrs.frozen
class LogConfig:
    filter: str = "warn,linkerd=info,hickory=error"
    format: Literal["plain", "json"] = "plain"
    access_log: Literal["apache", "json"] | None = None


@attrs.frozen
class AdminConfig:
    listen_addr: SocketAddr = _ADMIN_ADDR


_ADMIN_PORT = 4191


@attrs.frozen
class InboundConfig:
    """The inbound proxy. ``ports`` already includes the admin port (as the reference)."""

    listen_addr: SocketAddr = _INBOUND_ADDR
    ips: frozenset[IpAddr] = frozenset()
    detect_timeout: float = 10.0
    ports_disable_protocol_detection: frozenset[int] = frozenset()
    ports: frozenset[int] = frozenset({_ADMIN_PORT})
    connect: ConnectConfig = ConnectConfig(0.3, BackoffConfig(0.1, 10.0, 0.1))
    accept: AcceptConfig = AcceptConfig()
    discovery_idle_timeout: float = 90.0
    max_in_flight: int = 100_000
    http_queue_capacity: int = 10_000
    http_failfast_timeout: float = 1.0
    max_idle_conns_per_endpoint: int = 10_000
    http1_pool_idle_timeout: float = 3.0
    http1_max_head_bytes: int = 417_792
    http1_max_headers: int = 100
    default_policy: str = "all-unauthenticated"
    cluster_networks: frozenset[p.IpNetwork] = frozenset()
    gateway_suffixes: frozenset[str] = frozenset()
    unsafe_authority_labels: bool = False


@attrs.frozen
class OutboundConfig:
    listen_addrs: tuple[SocketAddr, ...] = (_OUTBOUND_ADDR,)
    detect_timeout: float = 10.0
    connect: ConnectConfig = ConnectConfig(1.0, BackoffConfig(0.1, 60.0, 0.1))
    accept: AcceptConfig = AcceptConfig()
    discovery_idle_timeout: float = 5.0
    max_in_flight: int = 100_000
    http_queue_capacity: int = 10_000
    http_failfast_timeout: float = 3.0
    tcp_queue_capacity: int = 10_000
    tcp_failfast_timeout: float = 3.0
    max_idle_conns_per_endpoint: int = 10_000
    http1_pool_idle_timeout: float = 3.0
    http1_max_head_bytes: int = 417_792
    http1_max_headers: int = 100
    metrics_hostname_labels: bool = False
    disable_informational_headers: bool = False
    ingress_mode: bool = False


@attrs.frozen
class IdentityConfig:
    """Linkerd identity: files are read by the identity layer, not at parse time."""

    dir: str
    trust_anchors_pem: str
    token_file: str
    local_name: str
    svc: ControlAddr
    server_name: str = ""
    min_refresh: float = 10.0
    max_refresh: float = 86400.0


@attrs.frozen
class SpireIdentityConfig:
    """SPIRE identity (``IDENTITY_SPIRE_WORKLOAD_API_ADDRESS``); ``server_id`` is spiffe://."""

    workload_api_addr: str
    server_id: str
    server_name: str
    trust_anchors_pem: str
    backoff: BackoffConfig = BackoffConfig(0.1, 1.0, 0.1)


@attrs.frozen
class DestinationConfig:
    svc: ControlAddr
    context: str = ""
    profile_suffixes: frozenset[str] = frozenset({"svc.cluster.local."})
    profile_networks: frozenset[p.IpNetwork] = frozenset()
    profile_initial_timeout: float = 0.5


@attrs.frozen
class PolicyConfig:
    svc: ControlAddr
    workload: str
    cluster_networks: frozenset[p.IpNetwork] = frozenset()


@attrs.frozen
class ControlStreamConfig:
    """Limits on control-plane gRPC streams; ``None`` = no limit; not used on loopback."""

    initial_timeout: float | None = None
    idle_timeout: float | None = None
    lifetime: float | None = None


@attrs.frozen
class TraceCollectorConfig:
    svc: ControlAddr
    service_name: str | None = None
    attributes_path: str | None = None
    extra_attributes: str | None = None
    otel_resource_attributes: str | None = None
    hostname: str | None = None


@attrs.frozen
class DnsConfig:
    min_ttl: float | None = None
    max_ttl: float | None = None


@attrs.frozen
class H2KeepAlive:
    interval: float
    timeout: float


@attrs.frozen
class H2ClientConfig:
    initial_stream_window_size: int = 65_535
    initial_connection_window_size: int = 1_048_576


@attrs.frozen
class H2ServerConfig:
    """HTTP/2 server settings; ``None`` = the HTTP/2 library's default."""

    keepalive: H2KeepAlive | None = None
    max_concurrent_streams: int | None = None
    max_frame_size: int | None = None
    max_header_list_size: int | None = None
    max_pending_accept_reset_streams: int | None = None
    max_send_buf_size: int | None = None
    adaptive_flow_control: bool = False
    initial_stream_window_size: int = 65_535
    initial_connection_window_size: int = 1_048_576


@attrs.frozen
class H2Config:
    client: H2ClientConfig = H2ClientConfig()
    inbound_server: H2ServerConfig = H2ServerConfig()
    outbound_server: H2ServerConfig = H2ServerConfig()


@attrs.frozen
class Config:
    """The whole proxy configuration. Build it with :meth:`from_env` or in code.

    Every field has the reference's default, so ``Config()`` is the standalone
    proxy and ``attrs.evolve(config, ...)`` tweaks one part.
    """

    log: LogConfig = LogConfig()
    admin: AdminConfig = AdminConfig()
    control_listen_addr: SocketAddr = _CONTROL_ADDR
    tap_svc_name: str | None = None
    inbound: InboundConfig = InboundConfig()
    outbound: OutboundConfig = OutboundConfig()
    identity: IdentityConfig | None = None
    spire_identity: SpireIdentityConfig | None = None
    destination: DestinationConfig | None = None
    policy: PolicyConfig | None = None
    control_stream: ControlStreamConfig = ControlStreamConfig()
    trace_collector: TraceCollectorConfig | None = None
    dns: DnsConfig = DnsConfig()
    h2: H2Config = H2Config()
    shutdown_endpoint_enabled: bool = False
    shutdown_grace_period: float = 120.0
    metrics_retain_idle: float = 600.0
    cores: int = 1

    @property
    def standalone(self) -> bool:
        """True when no identity, destination or policy service is configured."""
        return (
            self.identity is None
            and self.spire_identity is None
            and self.destination is None
            and self.policy is None
        )

    @classmethod
    def default(cls) -> Config:
        """The configuration of an empty environment (the standalone proxy)."""
        return cls.from_env({})

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, available_cpus: int | None = None) -> Config:
        """Read ``LINKERD2_PROXY_*`` (and the few unprefixed tracing variables).

        Args:
            env: the environment, e.g. ``os.environ``; unknown names are ignored.
            available_cpus: CPUs to size ``cores`` against (default: this process's
                CPU affinity).

        Raises:
            ConfigError: for the first invalid value or inconsistent group, naming
                the variable, its raw value and the reason.
        """
        from linkerd_proxy.app.config_read import read_config  # it imports this module

        return read_config(env, available_cpus)
