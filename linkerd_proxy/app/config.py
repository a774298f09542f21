"""``LINKERD2_PROXY_*`` environment -> one frozen :class:`Config` (top of ``app``).

Every variable is declared once in :data:`VARIABLES` (name, syntax, default,
meaning); :meth:`Config.from_env` reads only through those declarations, and
``app.config_doc`` renders the same table into ``docs/configuration.md``. Value
syntax lives in the pure ``app.env_parse``; this module adds defaults, the
cross-field rules and the nested ``@attrs.frozen`` classes that the runtime and
the stacks read. It does no I/O: identity files are only named here and are read
by the identity layer at startup. Durations are ``float`` seconds.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from typing import Literal, TypeVar, cast

import attrs

from linkerd_proxy.addrs import IpAddr, NameAddr, SocketAddr
from linkerd_proxy.app import env_parse as p
from linkerd_proxy.app.env_parse import (
    ACCESS_LOG,
    AUTHORITY,
    BOOL,
    CONTROL,
    CORES,
    DNS_NAME,
    DURATION,
    FRAME,
    IDENTITY,
    IGNORED,
    IP_SET,
    JITTER,
    LOG_FORMAT,
    NETWORKS,
    OPT_DURATION,
    PEM,
    POLICIES,
    POLICY,
    PORT_SET,
    RATIO,
    SOCKET_ADDR,
    SOCKET_ADDRS,
    SUFFIXES,
    TEXT,
    U32,
    USIZE,
    WINDOW,
    Kind,
)
from linkerd_proxy.errors import ConfigError

T = TypeVar("T")
PREFIX = "LINKERD2_PROXY_"
UNSET = "<unset>"

# ---------------------------------------------------------------- definitions


@attrs.frozen
class VarDef:
    """One environment variable: the single source for parsing and for the docs.

    ``default`` is the raw text used when the variable is unset (parsed with the
    same parser, so the docs show exactly what a user would write); when it is
    ``None``, ``unset`` says what leaving it out means.
    """

    name: str
    section: str
    kind: Kind
    default: str | None
    meaning: str
    unset: str = "unset"
    injected: bool = False

    def parse(self, raw: str) -> object:
        """Parse ``raw``; raises :class:`ConfigError` naming this variable."""
        try:
            return self.kind.parse(raw)
        except ValueError as e:
            raise ConfigError(self.name, raw, str(e)) from None


LISTEN = "Listeners, logging and runtime"
IDENT = "Identity"
DISCOVERY = "Discovery and policy"
TIMEOUTS = "Timeouts, queues and TCP"
HTTP2 = "HTTP/2"
SHUTDOWN = "Shutdown, metrics and DNS"
TRACING = "Tracing"
SECTIONS = (LISTEN, IDENT, DISCOVERY, TIMEOUTS, HTTP2, SHUTDOWN, TRACING)

_defs: list[VarDef] = []


def _v(
    name: str,
    section: str,
    kind: Kind,
    default: str | None,
    meaning: str,
    unset: str = "unset",
    inj: bool = False,
    prefixed: bool = True,
) -> None:
    full = PREFIX + name if prefixed else name
    _defs.append(VarDef(full, section, kind, default, meaning, unset, inj))


_v(
    "LOG",
    LISTEN,
    TEXT,
    "warn,linkerd=info,hickory=error",
    "log filter (EnvFilter syntax)",
    inj=True,
)
_v("LOG_FORMAT", LISTEN, LOG_FORMAT, "plain", "log format on stdout", inj=True)
_v("ACCESS_LOG", LISTEN, ACCESS_LOG, None, "inbound HTTP access log format on stderr", "off")
_v(
    "OUTBOUND_LISTEN_ADDR",
    LISTEN,
    SOCKET_ADDR,
    "127.0.0.1:4140",
    "outbound listener (deprecated)",
    inj=True,
)
_v(
    "OUTBOUND_LISTEN_ADDRS",
    LISTEN,
    SOCKET_ADDRS,
    None,
    "outbound listeners; wins over OUTBOUND_LISTEN_ADDR",
    "OUTBOUND_LISTEN_ADDR",
    inj=True,
)
_v("INBOUND_LISTEN_ADDR", LISTEN, SOCKET_ADDR, "0.0.0.0:4143", "inbound listener", inj=True)
_v("ADMIN_LISTEN_ADDR", LISTEN, SOCKET_ADDR, "127.0.0.1:4191", "admin server listener", inj=True)
_v("CONTROL_LISTEN_ADDR", LISTEN, SOCKET_ADDR, "0.0.0.0:4190", "tap server listener", inj=True)
_v(
    "TAP_SVC_NAME",
    LISTEN,
    IDENTITY,
    None,
    "enables tap; the only client identity allowed to tap",
    "tap disabled",
    inj=True,
)
_v("CORES", LISTEN, CORES, None, "legacy spelling of CORES_MIN")
_v("CORES_MIN", LISTEN, CORES, None, "minimum worker count", "1 (or CORES)", inj=True)
_v(
    "CORES_MAX",
    LISTEN,
    CORES,
    None,
    "worker count (capped at the CPU count)",
    "CORES_MAX_RATIO, else 1",
)
_v("CORES_MAX_RATIO", LISTEN, RATIO, None, "worker count as a share of the CPUs", "unset")

_IDREQ = "required when identity is configured"
_v("IDENTITY_DIR", IDENT, TEXT, None, "directory holding `csr.der` and `key.p8`", _IDREQ, inj=True)
_v("IDENTITY_TRUST_ANCHORS", IDENT, PEM, None, "trust anchors (PEM text)", _IDREQ, inj=True)
_v("IDENTITY_TOKEN_FILE", IDENT, TEXT, None, "token file sent on every Certify", _IDREQ, inj=True)
_v(
    "IDENTITY_LOCAL_NAME",
    IDENT,
    IDENTITY,
    None,
    "this proxy's TLS id and server name",
    "SERVER_ID/SERVER_NAME",
    inj=True,
)
_v("IDENTITY_SERVER_ID", IDENT, IDENTITY, None, "TLS id (alternative to LOCAL_NAME)", "LOCAL_NAME")
_v(
    "IDENTITY_SERVER_NAME",
    IDENT,
    DNS_NAME,
    None,
    "server name (SNI); must equal SERVER_ID",
    "LOCAL_NAME",
)
_v("IDENTITY_SVC_ADDR", IDENT, CONTROL, None, "identity service address", _IDREQ, inj=True)
_v(
    "IDENTITY_SVC_NAME",
    IDENT,
    DNS_NAME,
    None,
    "identity service TLS name",
    "required unless the ADDR is loopback",
    inj=True,
)
_v("IDENTITY_MIN_REFRESH", IDENT, DURATION, "10s", "shortest certificate refresh interval")
_v("IDENTITY_MAX_REFRESH", IDENT, DURATION, "24h", "longest certificate refresh interval")
_v("IDENTITY_DISABLED", IDENT, TEXT, None, "no longer supported: a non-empty value is fatal")
_v(
    "IDENTITY_SPIRE_WORKLOAD_API_ADDRESS",
    IDENT,
    TEXT,
    None,
    "SPIRE Workload API socket: SPIRE identity (SERVER_ID must be a spiffe:// URI)",
)
_v(
    "IDENTITY_SPIRE_SOCKET",
    IDENT,
    TEXT,
    None,
    "deprecated spelling of IDENTITY_SPIRE_WORKLOAD_API_ADDRESS",
)

_v(
    "DESTINATION_SVC_ADDR",
    DISCOVERY,
    CONTROL,
    None,
    "destination service address",
    "no discovery",
    inj=True,
)
_v(
    "DESTINATION_SVC_NAME",
    DISCOVERY,
    DNS_NAME,
    None,
    "destination service TLS name",
    "required unless the ADDR is loopback",
    inj=True,
)
_v(
    "DESTINATION_CONTEXT",
    DISCOVERY,
    TEXT,
    "",
    "context token sent with every lookup (JSON)",
    inj=True,
)
_v(
    "DESTINATION_PROFILE_SUFFIXES",
    DISCOVERY,
    SUFFIXES,
    "svc.cluster.local.",
    "names eligible for profile discovery",
    inj=True,
)
_v(
    "DESTINATION_PROFILE_NETWORKS",
    DISCOVERY,
    NETWORKS,
    "",
    "IPs eligible for profile discovery",
    inj=True,
)
_v(
    "DESTINATION_PROFILE_INITIAL_TIMEOUT",
    DISCOVERY,
    DURATION,
    "500ms",
    "inbound skips a profile not ready in time",
)
_v(
    "POLICY_SVC_ADDR",
    DISCOVERY,
    CONTROL,
    None,
    "policy service address",
    "no policy discovery",
    inj=True,
)
_v(
    "POLICY_SVC_NAME",
    DISCOVERY,
    DNS_NAME,
    None,
    "policy service TLS name",
    "required unless the ADDR is loopback",
    inj=True,
)
_v(
    "POLICY_WORKLOAD",
    DISCOVERY,
    TEXT,
    None,
    "workload JSON sent to the policy service",
    "required with POLICY_SVC_ADDR",
    inj=True,
)
_v(
    "POLICY_CLUSTER_NETWORKS",
    DISCOVERY,
    NETWORKS,
    "",
    "cluster networks, needed by `cluster-*` and `audit` policies",
    inj=True,
)
_v(
    "INBOUND_DEFAULT_POLICY",
    DISCOVERY,
    POLICY,
    "all-unauthenticated",
    "default inbound policy: " + ", ".join(POLICIES),
    inj=True,
)
_v(
    "INBOUND_PORTS",
    DISCOVERY,
    PORT_SET,
    "",
    "ports whose policy is watched eagerly (the admin port is always added)",
    inj=True,
)
_v(
    "INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION",
    DISCOVERY,
    PORT_SET,
    "",
    "opaque ports (no protocol detection)",
    inj=True,
)
_v(
    "INBOUND_PORTS_REQUIRE_IDENTITY",
    DISCOVERY,
    IGNORED,
    None,
    "declared by the reference but never read; ignored",
)
_v(
    "INBOUND_PORTS_REQUIRE_TLS",
    DISCOVERY,
    IGNORED,
    None,
    "declared by the reference but never read; ignored",
)
_v(
    "INBOUND_IPS",
    DISCOVERY,
    IP_SET,
    None,
    "the pod's IPs: inbound accepts only these orig-dst IPs",
    "any IP",
    inj=True,
)
_v("INBOUND_GATEWAY_SUFFIXES", DISCOVERY, SUFFIXES, "", "names the inbound gateway may forward to")
_v("INGRESS_MODE", DISCOVERY, BOOL, "false", "outbound routes by `l5d-dst-override`")
_v(
    "OUTBOUND_DISABLE_INFORMATIONAL_HEADERS",
    DISCOVERY,
    BOOL,
    None,
    "omit informational headers",
    "= INGRESS_MODE",
)
_v(
    "OUTBOUND_METRICS_HOSTNAME_LABELS",
    DISCOVERY,
    BOOL,
    "false",
    "export hostname labels in outbound metrics",
    inj=True,
)
_v(
    "INBOUND_METRICS_AUTHORITY_LABELS",
    DISCOVERY,
    AUTHORITY,
    "",
    "`unsafe` adds an `authority` label to inbound metrics",
)

_DIRS = (("INBOUND", "inbound"), ("OUTBOUND", "outbound"))
for _d, _l in _DIRS:
    _inb = _d == "INBOUND"
    _v(f"{_d}_DETECT_TIMEOUT", TIMEOUTS, DURATION, "10s", f"{_l} protocol detection timeout")
    _v(
        f"{_d}_CONNECT_TIMEOUT",
        TIMEOUTS,
        DURATION,
        "300ms" if _inb else "1s",
        f"{_l} connect timeout",
        inj=True,
    )
    _v(
        f"{_d}_CONNECT_EXP_BACKOFF_MIN",
        TIMEOUTS,
        DURATION,
        "100ms",
        f"{_l} reconnect backoff minimum (set with MAX)",
    )
    _v(
        f"{_d}_CONNECT_EXP_BACKOFF_MAX",
        TIMEOUTS,
        DURATION,
        "10s" if _inb else "60s",
        f"{_l} reconnect backoff maximum (set with MIN)",
    )
    _v(
        f"{_d}_CONNECT_EXP_BACKOFF_JITTER",
        TIMEOUTS,
        JITTER,
        "0.1",
        f"{_l} backoff jitter (0 when only MIN/MAX are set)",
    )
    _v(
        f"{_d}_DISCOVERY_IDLE_TIMEOUT",
        TIMEOUTS,
        DURATION,
        "90s" if _inb else "5s",
        f"{_l} idle eviction of cached discovery/stacks",
        inj=True,
    )
    _v(
        f"{_d}_MAX_IN_FLIGHT",
        TIMEOUTS,
        USIZE,
        "100000",
        f"{_l} max in-flight requests (excess get 503)",
    )
    _v(f"{_d}_HTTP_QUEUE_CAPACITY", TIMEOUTS, USIZE, "10000", f"{_l} HTTP request queue capacity")
    _v(
        f"{_d}_HTTP_FAILFAST_TIMEOUT",
        TIMEOUTS,
        DURATION,
        "1s" if _inb else "3s",
        f"{_l} HTTP fail-fast timeout",
    )
    if not _inb:
        _v(
            "OUTBOUND_TCP_QUEUE_CAPACITY",
            TIMEOUTS,
            USIZE,
            "10000",
            "outbound TCP connection queue capacity",
        )
        _v(
            "OUTBOUND_TCP_FAILFAST_TIMEOUT",
            TIMEOUTS,
            DURATION,
            "3s",
            "outbound TCP fail-fast timeout",
        )
    _idle = "MAX_IDLE_CONNS_PER_ENDPOINT" if _inb else "OUTBOUND_MAX_IDLE_CONNS_PER_ENDPOINT"
    _v(_idle, TIMEOUTS, USIZE, "10000", f"{_l} max idle HTTP/1 connections per endpoint")
    _v(
        f"{_d}_HTTP1_CONNECTION_POOL_IDLE_TIMEOUT",
        TIMEOUTS,
        DURATION,
        "3s",
        f"{_l} HTTP/1 pool idle timeout",
    )
    for _side in ("ACCEPT", "CONNECT"):
        _ij = (_side == "ACCEPT") == _inb
        _v(
            f"{_d}_{_side}_KEEPALIVE",
            TIMEOUTS,
            DURATION,
            None,
            f"{_l} {_side.lower()}ed sockets: TCP keepalive idle time",
            "off",
            inj=_ij,
        )
        _v(
            f"{_d}_{_side}_USER_TIMEOUT",
            TIMEOUTS,
            DURATION,
            None,
            f"{_l} {_side.lower()}ed sockets: TCP_USER_TIMEOUT",
            "off",
            inj=_ij,
        )
    _v(f"{_d}_TCP_LISTEN_BACKLOG", TIMEOUTS, U32, "128", f"{_l} listen backlog")
for _n, _m in (
    ("INITIAL_TIMEOUT", "first message"),
    ("IDLE_TIMEOUT", "idle time between messages"),
    ("LIFETIME", "stream lifetime"),
):
    _v(
        f"CONTROL_STREAM_{_n}",
        TIMEOUTS,
        OPT_DURATION,
        "",
        f"control-plane streams: max {_m} (not on loopback)",
        "no limit",
        inj=True,
    )

_v("HTTP2_INITIAL_STREAM_WINDOW_SIZE", HTTP2, WINDOW, "65535", "client stream window")
_v("HTTP2_INITIAL_CONNECTION_WINDOW_SIZE", HTTP2, WINDOW, "1048576", "client connection window")
for _d, _l in _DIRS:
    _b = f"{_d}_SERVER_HTTP2_"
    _v(
        _b + "KEEP_ALIVE_INTERVAL",
        HTTP2,
        DURATION,
        None,
        f"{_l} server PING interval (pair with TIMEOUT)",
        "off",
        inj=True,
    )
    _v(
        _b + "KEEP_ALIVE_TIMEOUT",
        HTTP2,
        DURATION,
        None,
        f"{_l} server PING timeout (pair with INTERVAL)",
        "off",
        inj=True,
    )
    for _s in (
        "MAX_CONCURRENT_STREAMS",
        "MAX_HEADER_LIST_SIZE",
        "MAX_PENDING_ACCEPT_RESET_STREAMS",
        "MAX_SEND_BUF_SIZE",
    ):
        _v(
            _b + _s,
            HTTP2,
            U32,
            None,
            f"{_l} server {_s.lower().replace('_', ' ')}",
            "library default",
        )
    _v(_b + "MAX_FRAME_SIZE", HTTP2, FRAME, None, f"{_l} server max frame size", "16384")
    _v(
        _b + "ADAPTIVE_FLOW_CONTROL",
        HTTP2,
        BOOL,
        "false",
        f"{_l} server adaptive flow control (overrides windows)",
    )
    _v(
        _b + "INITIAL_STREAM_WINDOW_SIZE",
        HTTP2,
        WINDOW,
        None,
        f"{_l} server stream window (pair)",
        "65535",
    )
    _v(
        _b + "INITIAL_CONNECTION_WINDOW_SIZE",
        HTTP2,
        WINDOW,
        None,
        f"{_l} server connection window (pair)",
        "1048576",
    )

_v("SHUTDOWN_ENDPOINT_ENABLED", SHUTDOWN, BOOL, "false", "enable admin `POST /shutdown`", inj=True)
_v("SHUTDOWN_GRACE_PERIOD", SHUTDOWN, DURATION, "2m", "drain time before a forced exit")
_v("METRICS_RETAIN_IDLE", SHUTDOWN, DURATION, "10m", "drop metric series idle this long")
_v("DNS_MIN_TTL", SHUTDOWN, DURATION, None, "lower bound on DNS TTLs", "no bound")
_v("DNS_MAX_TTL", SHUTDOWN, DURATION, None, "upper bound on DNS TTLs", "no bound")

_v(
    "TRACE_COLLECTOR_SVC_ADDR",
    TRACING,
    CONTROL,
    None,
    "trace collector address",
    "tracing off",
    inj=True,
)
_v(
    "TRACE_COLLECTOR_SVC_NAME",
    TRACING,
    DNS_NAME,
    None,
    "trace collector TLS name",
    "required unless the ADDR is loopback",
    inj=True,
)
_v(
    "TRACE_ATTRIBUTES_PATH",
    TRACING,
    TEXT,
    None,
    'file of `key="value"` span attributes (pod labels)',
    inj=True,
)
_v("TRACE_SERVICE_NAME", TRACING, TEXT, None, "`service.name` attribute", inj=True)
_v("TRACE_EXTRA_ATTRIBUTES", TRACING, TEXT, None, "extra `key=value` lines", inj=True)
_v(
    "OTEL_RESOURCE_ATTRIBUTES",
    TRACING,
    TEXT,
    None,
    "OpenTelemetry resource attributes (highest precedence)",
    inj=True,
    prefixed=False,
)
_v("HOSTNAME", TRACING, TEXT, None, "host name reported to the collector", prefixed=False, inj=True)

VARIABLES: tuple[VarDef, ...] = tuple(_defs)
BY_NAME: Mapping[str, VarDef] = {v.name: v for v in VARIABLES}

# -------------------------------------------------------------------- classes


def _loopback(addr: SocketAddr | NameAddr) -> bool:
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
        return _loopback(self.addr)


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
    listen_addr: SocketAddr = SocketAddr.parse("127.0.0.1:4191")


_ADMIN_PORT = 4191


@attrs.frozen
class InboundConfig:
    """The inbound proxy. ``ports`` already includes the admin port (as the reference)."""

    listen_addr: SocketAddr = SocketAddr.parse("0.0.0.0:4143")
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
    default_policy: str = "all-unauthenticated"
    cluster_networks: frozenset[p.IpNetwork] = frozenset()
    gateway_suffixes: frozenset[str] = frozenset()
    unsafe_authority_labels: bool = False


@attrs.frozen
class OutboundConfig:
    listen_addrs: tuple[SocketAddr, ...] = (SocketAddr.parse("127.0.0.1:4140"),)
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
    control_listen_addr: SocketAddr = SocketAddr.parse("0.0.0.0:4190")
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
        return _read_config(_Env(env), available_cpus)


# -------------------------------------------------------------------- reading


class _Env:
    """Reads variables through their definitions; every value is parsed once."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def raw(self, name: str) -> str | None:
        return self._env.get(_full(name))

    def is_set(self, name: str) -> bool:
        return self.raw(name) is not None

    def value(self, name: str) -> object:
        var = BY_NAME[_full(name)]
        raw = self.raw(name)
        if raw is None:
            return None if var.default is None else var.kind.parse(var.default)
        return var.parse(raw)

    def get(self, name: str, typ: type[T]) -> T:
        value = self.value(name)
        assert isinstance(value, typ), (name, value)
        return value

    def opt(self, name: str, typ: type[T]) -> T | None:
        value = self.value(name)
        assert value is None or isinstance(value, typ), (name, value)
        return value

    def missing(self, name: str, why: str) -> ConfigError:
        return ConfigError(_full(name), self.raw(name) or UNSET, why)


def _full(name: str) -> str:
    return name if name in BY_NAME else PREFIX + name


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _control_addr(e: _Env, base: str) -> ControlAddr | None:
    addr_var, name_var = f"{base}_ADDR", f"{base}_NAME"
    addr = cast("SocketAddr | NameAddr | None", e.value(addr_var))
    name = e.opt(name_var, str)
    if addr is None and name is None:
        return None
    if addr is None:
        raise e.missing(addr_var, f"must be set together with {_full(name_var)}")
    if _loopback(addr):
        return ControlAddr(addr, None)
    if name is None:
        why = f"required (the TLS name of {_full(addr_var)}) unless that address is loopback"
        raise e.missing(name_var, why)
    return ControlAddr(addr, name)


def _backoff(e: _Env, base: str, default: BackoffConfig) -> BackoffConfig:
    names = [f"{base}_EXP_BACKOFF_{x}" for x in ("MIN", "MAX", "JITTER")]
    if not any(e.is_set(n) for n in names):
        return default
    for n in names[:2]:
        if not e.is_set(n):
            raise e.missing(n, "MIN and MAX must be set together (JITTER is optional)")
    lo, hi = e.get(names[0], float), e.get(names[1], float)
    jitter = e.get(names[2], float) if e.is_set(names[2]) else 0.0
    if lo > hi:
        raise e.missing(names[0], f"must not be greater than {_full(names[1])}")
    if hi == 0:
        raise e.missing(names[1], "must be non-zero")
    return BackoffConfig(lo, hi, jitter)


def _pair(e: _Env, a: str, b: str, typ: type[T]) -> tuple[T, T] | None:
    va, vb = e.opt(a, typ), e.opt(b, typ)
    if va is None and vb is None:
        return None
    if va is None or vb is None:
        unset, other = (a, b) if va is None else (b, a)
        raise e.missing(unset, f"must be set together with {_full(other)}")
    return va, vb


def _h2_server(e: _Env, d: str) -> H2ServerConfig:
    b = f"{d}_SERVER_HTTP2_"
    ka = _pair(e, b + "KEEP_ALIVE_INTERVAL", b + "KEEP_ALIVE_TIMEOUT", float)
    win = _pair(e, b + "INITIAL_STREAM_WINDOW_SIZE", b + "INITIAL_CONNECTION_WINDOW_SIZE", int)
    default = H2ServerConfig()
    return H2ServerConfig(
        keepalive=H2KeepAlive(*ka) if ka else None,
        max_concurrent_streams=e.opt(b + "MAX_CONCURRENT_STREAMS", int),
        max_frame_size=e.opt(b + "MAX_FRAME_SIZE", int),
        max_header_list_size=e.opt(b + "MAX_HEADER_LIST_SIZE", int),
        max_pending_accept_reset_streams=e.opt(b + "MAX_PENDING_ACCEPT_RESET_STREAMS", int),
        max_send_buf_size=e.opt(b + "MAX_SEND_BUF_SIZE", int),
        adaptive_flow_control=e.get(b + "ADAPTIVE_FLOW_CONTROL", bool),
        initial_stream_window_size=win[0] if win else default.initial_stream_window_size,
        initial_connection_window_size=win[1] if win else default.initial_connection_window_size,
    )


def _connect(e: _Env, d: str, default: ConnectConfig) -> ConnectConfig:
    return ConnectConfig(
        timeout=e.get(f"{d}_CONNECT_TIMEOUT", float),
        backoff=_backoff(e, f"{d}_CONNECT", default.backoff),
        keepalive=e.opt(f"{d}_CONNECT_KEEPALIVE", float),
        user_timeout=e.opt(f"{d}_CONNECT_USER_TIMEOUT", float),
    )


def _accept(e: _Env, d: str) -> AcceptConfig:
    return AcceptConfig(
        keepalive=e.opt(f"{d}_ACCEPT_KEEPALIVE", float),
        user_timeout=e.opt(f"{d}_ACCEPT_USER_TIMEOUT", float),
        backlog=e.get(f"{d}_TCP_LISTEN_BACKLOG", int),
    )


def _inbound(e: _Env, admin: SocketAddr) -> InboundConfig:
    listen = e.get("INBOUND_LISTEN_ADDR", SocketAddr)
    gateway = e.get("INBOUND_GATEWAY_SUFFIXES", frozenset)
    cluster_nets = e.get("POLICY_CLUSTER_NETWORKS", frozenset)
    policy = e.get("INBOUND_DEFAULT_POLICY", str)
    if policy not in ("deny", "all-authenticated", "all-unauthenticated") and not cluster_nets:
        why = f"{policy!r} needs {PREFIX}POLICY_CLUSTER_NETWORKS to be set"
        raise e.missing("INBOUND_DEFAULT_POLICY", why)
    # The admin port is always watched; the inbound port too when acting as a gateway.
    ports = e.get("INBOUND_PORTS", frozenset) | {admin.port}
    if gateway:
        ports |= {listen.port}
    return InboundConfig(
        listen_addr=listen,
        ips=e.opt("INBOUND_IPS", frozenset) or frozenset(),
        detect_timeout=e.get("INBOUND_DETECT_TIMEOUT", float),
        ports_disable_protocol_detection=e.get(
            "INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION", frozenset
        ),
        ports=ports,
        connect=_connect(e, "INBOUND", InboundConfig().connect),
        accept=_accept(e, "INBOUND"),
        discovery_idle_timeout=e.get("INBOUND_DISCOVERY_IDLE_TIMEOUT", float),
        max_in_flight=e.get("INBOUND_MAX_IN_FLIGHT", int),
        http_queue_capacity=e.get("INBOUND_HTTP_QUEUE_CAPACITY", int),
        http_failfast_timeout=e.get("INBOUND_HTTP_FAILFAST_TIMEOUT", float),
        max_idle_conns_per_endpoint=e.get("MAX_IDLE_CONNS_PER_ENDPOINT", int),
        http1_pool_idle_timeout=e.get("INBOUND_HTTP1_CONNECTION_POOL_IDLE_TIMEOUT", float),
        default_policy=policy,
        cluster_networks=cluster_nets,
        gateway_suffixes=gateway,
        unsafe_authority_labels=e.get("INBOUND_METRICS_AUTHORITY_LABELS", bool),
    )


def _outbound(e: _Env) -> OutboundConfig:
    single = e.get("OUTBOUND_LISTEN_ADDR", SocketAddr)
    ingress = e.get("INGRESS_MODE", bool)
    no_headers = e.opt("OUTBOUND_DISABLE_INFORMATIONAL_HEADERS", bool)
    return OutboundConfig(
        listen_addrs=e.opt("OUTBOUND_LISTEN_ADDRS", tuple) or (single,),
        detect_timeout=e.get("OUTBOUND_DETECT_TIMEOUT", float),
        connect=_connect(e, "OUTBOUND", OutboundConfig().connect),
        accept=_accept(e, "OUTBOUND"),
        discovery_idle_timeout=e.get("OUTBOUND_DISCOVERY_IDLE_TIMEOUT", float),
        max_in_flight=e.get("OUTBOUND_MAX_IN_FLIGHT", int),
        http_queue_capacity=e.get("OUTBOUND_HTTP_QUEUE_CAPACITY", int),
        http_failfast_timeout=e.get("OUTBOUND_HTTP_FAILFAST_TIMEOUT", float),
        tcp_queue_capacity=e.get("OUTBOUND_TCP_QUEUE_CAPACITY", int),
        tcp_failfast_timeout=e.get("OUTBOUND_TCP_FAILFAST_TIMEOUT", float),
        max_idle_conns_per_endpoint=e.get("OUTBOUND_MAX_IDLE_CONNS_PER_ENDPOINT", int),
        http1_pool_idle_timeout=e.get("OUTBOUND_HTTP1_CONNECTION_POOL_IDLE_TIMEOUT", float),
        metrics_hostname_labels=e.get("OUTBOUND_METRICS_HOSTNAME_LABELS", bool),
        disable_informational_headers=ingress if no_headers is None else no_headers,
        ingress_mode=ingress,
    )


_IDENTITY_TRIGGERS = (
    "IDENTITY_TRUST_ANCHORS",
    "IDENTITY_LOCAL_NAME",
    "IDENTITY_SERVER_ID",
    "IDENTITY_SERVER_NAME",
    "IDENTITY_DIR",
    "IDENTITY_TOKEN_FILE",
    "IDENTITY_SVC_ADDR",
    "IDENTITY_SVC_NAME",
    "IDENTITY_SPIRE_WORKLOAD_API_ADDRESS",
    "IDENTITY_SPIRE_SOCKET",
)


def _identity(e: _Env) -> IdentityConfig | SpireIdentityConfig | None:
    if e.raw("IDENTITY_DISABLED"):
        why = (
            "identity can no longer be disabled (the reference proxy refuses to start: "
            "meshed traffic depends on mTLS); unset it, and leave out every IDENTITY_* "
            "variable to run standalone"
        )
        raise e.missing("IDENTITY_DISABLED", why)
    values = {n: e.value(n) for n in (*_IDENTITY_TRIGGERS, "IDENTITY_MIN_REFRESH")}
    if all(values[n] is None for n in _IDENTITY_TRIGGERS):
        return None
    req = "required when any IDENTITY_* variable is set"

    def need(name: str) -> str:
        value = values[name]
        if value is None:
            raise e.missing(name, req)
        assert isinstance(value, str)
        return value

    anchors = need("IDENTITY_TRUST_ANCHORS")
    id_var, name_var = "IDENTITY_SERVER_ID", "IDENTITY_SERVER_NAME"
    if e.is_set("IDENTITY_LOCAL_NAME"):
        id_var = name_var = "IDENTITY_LOCAL_NAME"
    server_id = need(id_var)
    raw_name = need(name_var) if name_var != id_var else e.raw(name_var) or ""
    server_name = BY_NAME[_full("IDENTITY_SERVER_NAME")].kind.parse(raw_name)
    assert isinstance(server_name, str)
    spire = values["IDENTITY_SPIRE_WORKLOAD_API_ADDRESS"] or values["IDENTITY_SPIRE_SOCKET"]
    if spire:
        if not server_id.lower().startswith("spiffe:"):
            raise e.missing(id_var, "SPIRE identity requires a spiffe:// TLS id")
        return SpireIdentityConfig(str(spire), server_id, server_name, anchors)
    if server_id != server_name:
        raise e.missing(id_var, f"the TLS id must equal {_full(name_var)} ({server_name})")
    svc = _control_addr(e, "IDENTITY_SVC")
    if svc is None:
        raise e.missing("IDENTITY_SVC_ADDR", req)
    return IdentityConfig(
        dir=need("IDENTITY_DIR"),
        trust_anchors_pem=anchors,
        token_file=need("IDENTITY_TOKEN_FILE"),
        local_name=server_id,
        svc=svc,
        server_name=server_name,
        min_refresh=e.get("IDENTITY_MIN_REFRESH", float),
        max_refresh=e.get("IDENTITY_MAX_REFRESH", float),
    )


def _control_stream(e: _Env) -> ControlStreamConfig:
    names = ("INITIAL_TIMEOUT", "IDLE_TIMEOUT", "LIFETIME")
    vals = [e.opt(f"CONTROL_STREAM_{n}", float) for n in names]
    for i, j in ((0, 1), (0, 2), (1, 2)):
        lo, hi = vals[i], vals[j]
        if lo is not None and hi is not None and lo > hi:
            why = f"must not be greater than {PREFIX}CONTROL_STREAM_{names[j]}"
            raise e.missing(f"CONTROL_STREAM_{names[i]}", why)
    return ControlStreamConfig(*vals)


def _cores(e: _Env, available: int) -> int:
    min_name = "CORES_MIN" if e.is_set("CORES_MIN") else "CORES"
    min_cores = e.opt(min_name, int)
    max_cores = e.opt("CORES_MAX", int)
    ratio = e.opt("CORES_MAX_RATIO", float)
    if min_cores is not None and max_cores is not None and min_cores > max_cores:
        raise e.missing(min_name, f"must not be greater than {PREFIX}CORES_MAX")
    target = max_cores
    if target is None and ratio is not None:
        target = math.floor(available * ratio + 0.5) or None
    return min(max(target or 1, min_cores or 1), available)


def _read_config(e: _Env, available_cpus: int | None) -> Config:
    for var in VARIABLES:  # validate everything, even values a later rule ignores
        e.value(var.name)
    admin = e.get("ADMIN_LISTEN_ADDR", SocketAddr)
    identity = _identity(e)
    dst_svc = _control_addr(e, "DESTINATION_SVC")
    policy_svc = _control_addr(e, "POLICY_SVC")
    if policy_svc is None and e.is_set("POLICY_WORKLOAD"):
        raise e.missing("POLICY_SVC_ADDR", f"must be set together with {PREFIX}POLICY_WORKLOAD")
    if policy_svc is not None and not e.is_set("POLICY_WORKLOAD"):
        raise e.missing("POLICY_WORKLOAD", f"required with {PREFIX}POLICY_SVC_ADDR")
    trace_svc = _control_addr(e, "TRACE_COLLECTOR_SVC")
    inbound = _inbound(e, admin)
    return Config(
        log=LogConfig(
            filter=e.get("LOG", str),
            format=cast(Literal["plain", "json"], e.get("LOG_FORMAT", str)),
            access_log=cast(Literal["apache", "json"] | None, e.opt("ACCESS_LOG", str)),
        ),
        admin=AdminConfig(admin),
        control_listen_addr=e.get("CONTROL_LISTEN_ADDR", SocketAddr),
        tap_svc_name=e.opt("TAP_SVC_NAME", str),
        inbound=inbound,
        outbound=_outbound(e),
        identity=identity if isinstance(identity, IdentityConfig) else None,
        spire_identity=identity if isinstance(identity, SpireIdentityConfig) else None,
        destination=None
        if dst_svc is None
        else DestinationConfig(
            svc=dst_svc,
            context=e.get("DESTINATION_CONTEXT", str),
            profile_suffixes=e.get("DESTINATION_PROFILE_SUFFIXES", frozenset),
            profile_networks=e.get("DESTINATION_PROFILE_NETWORKS", frozenset),
            profile_initial_timeout=e.get("DESTINATION_PROFILE_INITIAL_TIMEOUT", float),
        ),
        policy=None
        if policy_svc is None
        else PolicyConfig(policy_svc, e.get("POLICY_WORKLOAD", str), inbound.cluster_networks),
        control_stream=_control_stream(e),
        trace_collector=None
        if trace_svc is None
        else TraceCollectorConfig(
            svc=trace_svc,
            service_name=e.opt("TRACE_SERVICE_NAME", str),
            attributes_path=e.opt("TRACE_ATTRIBUTES_PATH", str),
            extra_attributes=e.opt("TRACE_EXTRA_ATTRIBUTES", str),
            otel_resource_attributes=e.opt("OTEL_RESOURCE_ATTRIBUTES", str),
            hostname=e.opt("HOSTNAME", str),
        ),
        dns=DnsConfig(e.opt("DNS_MIN_TTL", float), e.opt("DNS_MAX_TTL", float)),
        h2=H2Config(
            client=H2ClientConfig(
                e.get("HTTP2_INITIAL_STREAM_WINDOW_SIZE", int),
                e.get("HTTP2_INITIAL_CONNECTION_WINDOW_SIZE", int),
            ),
            inbound_server=_h2_server(e, "INBOUND"),
            outbound_server=_h2_server(e, "OUTBOUND"),
        ),
        shutdown_endpoint_enabled=e.get("SHUTDOWN_ENDPOINT_ENABLED", bool),
        shutdown_grace_period=e.get("SHUTDOWN_GRACE_PERIOD", float),
        metrics_retain_idle=e.get("METRICS_RETAIN_IDLE", float),
        cores=_cores(e, available_cpus or _cpu_count()),
    )
