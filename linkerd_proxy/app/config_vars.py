"""The table of every configuration variable: the single source of truth.

Sits between the pure parsers (``app.env_parse``) and the two readers of this
table: ``app.config`` (environment -> ``Config``) and ``app.config_doc`` (the
Markdown reference in ``docs/configuration.md``). A row gives the full name, its
section, its value syntax (a ``Kind``), the default as the raw text a user would
write (or what leaving it unset means), and a one-line meaning. Rows marked
``inj`` are set by Linkerd's proxy injector.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

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

PREFIX = "LINKERD2_PROXY_"


@attrs.frozen
class VarDef:
    """One environment variable.

    ``default`` is the raw text used when the variable is unset, parsed by the
    same parser (so the docs show exactly what a user would write); when it is
    ``None``, ``unset`` says what leaving the variable out means.
    """

    name: str
    section: str
    kind: Kind
    default: str | None
    meaning: str
    unset: str = "unset"
    injected: bool = False

    def parse(self, raw: str) -> object:
        """Parse ``raw``.

        Raises:
            ConfigError: naming this variable, ``raw`` and the reason.
        """
        try:
            return self.kind.parse(raw)
        except ValueError as e:
            raise ConfigError(self.name, raw, str(e)) from None

    def default_value(self) -> object:
        """The parsed default, or ``None`` when unset has no value."""
        return None if self.default is None else self.kind.parse(self.default)


LISTEN = "Listeners, logging and runtime"
IDENT = "Identity"
DISCOVERY = "Discovery and policy"
TIMEOUTS = "Timeouts, queues and TCP"
HTTP2 = "HTTP/2"
SHUTDOWN = "Shutdown, metrics and DNS"
TRACING = "Tracing"
SECTIONS = (LISTEN, IDENT, DISCOVERY, TIMEOUTS, HTTP2, SHUTDOWN, TRACING)

_rows: list[VarDef] = []


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
    _rows.append(VarDef(full, section, kind, default, meaning, unset, inj))


_LOOPBACK = "required unless the ADDR is loopback"
_IDREQ = "required when identity is configured"

# The rows are laid out by hand, one variable per call, so the table stays readable.
# fmt: off
_v("LOG", LISTEN, TEXT, "warn,linkerd=info,hickory=error", "log filter (EnvFilter syntax)",
   inj=True)
_v("LOG_FORMAT", LISTEN, LOG_FORMAT, "plain", "log format on stdout", inj=True)
_v("ACCESS_LOG", LISTEN, ACCESS_LOG, None, "inbound HTTP access log on stderr", "off")
_v("OUTBOUND_LISTEN_ADDR", LISTEN, SOCKET_ADDR, "127.0.0.1:4140",
   "outbound listener (deprecated)", inj=True)
_v("OUTBOUND_LISTEN_ADDRS", LISTEN, SOCKET_ADDRS, None,
   "outbound listeners; wins over OUTBOUND_LISTEN_ADDR", "OUTBOUND_LISTEN_ADDR", inj=True)
_v("INBOUND_LISTEN_ADDR", LISTEN, SOCKET_ADDR, "0.0.0.0:4143", "inbound listener", inj=True)
_v("ADMIN_LISTEN_ADDR", LISTEN, SOCKET_ADDR, "127.0.0.1:4191", "admin server listener", inj=True)
_v("CONTROL_LISTEN_ADDR", LISTEN, SOCKET_ADDR, "0.0.0.0:4190", "tap server listener", inj=True)
_v("TAP_SVC_NAME", LISTEN, IDENTITY, None,
   "enables tap; the only client identity allowed to tap", "tap disabled", inj=True)
_v("CORES", LISTEN, CORES, None, "older spelling of CORES_MIN (used when CORES_MIN is unset)")
_v("CORES_MIN", LISTEN, CORES, None, "minimum worker count", "CORES, else 1", inj=True)
_v("CORES_MAX", LISTEN, CORES, None, "worker count (capped at the CPU count)",
   "CORES_MAX_RATIO, else 1")
_v("CORES_MAX_RATIO", LISTEN, RATIO, None, "worker count as a share of the CPUs (rounded)")

_v("IDENTITY_DIR", IDENT, TEXT, None, "directory holding `csr.der` and `key.p8`", _IDREQ, inj=True)
_v("IDENTITY_TRUST_ANCHORS", IDENT, PEM, None, "trust anchors (the PEM text)", _IDREQ, inj=True)
_v("IDENTITY_TOKEN_FILE", IDENT, TEXT, None, "token file, re-read on every Certify", _IDREQ,
   inj=True)
_v("IDENTITY_LOCAL_NAME", IDENT, IDENTITY, None,
   "this proxy's TLS id and server name (wins over SERVER_ID/SERVER_NAME)",
   "SERVER_ID and SERVER_NAME", inj=True)
_v("IDENTITY_SERVER_ID", IDENT, IDENTITY, None, "TLS id (alternative to LOCAL_NAME)",
   "LOCAL_NAME")
_v("IDENTITY_SERVER_NAME", IDENT, DNS_NAME, None, "server name (SNI); must equal SERVER_ID",
   "LOCAL_NAME")
_v("IDENTITY_SVC_ADDR", IDENT, CONTROL, None, "identity service address", _IDREQ, inj=True)
_v("IDENTITY_SVC_NAME", IDENT, DNS_NAME, None, "identity service TLS name", _LOOPBACK, inj=True)
_v("IDENTITY_MIN_REFRESH", IDENT, DURATION, "10s", "shortest certificate refresh interval")
_v("IDENTITY_MAX_REFRESH", IDENT, DURATION, "24h", "longest certificate refresh interval")
_v("IDENTITY_DISABLED", IDENT, TEXT, None, "no longer supported: any non-empty value is fatal")
_v("IDENTITY_SPIRE_WORKLOAD_API_ADDRESS", IDENT, TEXT, None,
   "SPIRE Workload API socket: use SPIRE identity (SERVER_ID must be spiffe://)")
_v("IDENTITY_SPIRE_SOCKET", IDENT, TEXT, None,
   "deprecated spelling of IDENTITY_SPIRE_WORKLOAD_API_ADDRESS")

_v("DESTINATION_SVC_ADDR", DISCOVERY, CONTROL, None, "destination service address",
   "no discovery", inj=True)
_v("DESTINATION_SVC_NAME", DISCOVERY, DNS_NAME, None, "destination service TLS name", _LOOPBACK,
   inj=True)
_v("DESTINATION_CONTEXT", DISCOVERY, TEXT, "", "context token sent with every lookup (JSON)",
   inj=True)
_v("DESTINATION_PROFILE_SUFFIXES", DISCOVERY, SUFFIXES, "svc.cluster.local.",
   "names eligible for profile discovery", inj=True)
_v("DESTINATION_PROFILE_NETWORKS", DISCOVERY, NETWORKS, "",
   "IPs eligible for profile discovery", inj=True)
_v("DESTINATION_PROFILE_INITIAL_TIMEOUT", DISCOVERY, DURATION, "500ms",
   "inbound skips a profile that is not ready in time")
_v("POLICY_SVC_ADDR", DISCOVERY, CONTROL, None, "policy service address",
   "no policy discovery", inj=True)
_v("POLICY_SVC_NAME", DISCOVERY, DNS_NAME, None, "policy service TLS name", _LOOPBACK, inj=True)
_v("POLICY_WORKLOAD", DISCOVERY, TEXT, None, "workload JSON sent to the policy service",
   "required with POLICY_SVC_ADDR", inj=True)
_v("POLICY_CLUSTER_NETWORKS", DISCOVERY, NETWORKS, "",
   "cluster networks; needed by the `cluster-*` and `audit` default policies", inj=True)
_v("INBOUND_DEFAULT_POLICY", DISCOVERY, POLICY, "all-unauthenticated",
   "default inbound policy: " + ", ".join(f"`{x}`" for x in POLICIES), inj=True)
_v("INBOUND_PORTS", DISCOVERY, PORT_SET, "",
   "ports whose policies are watched eagerly (the admin port is always added)", inj=True)
_v("INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION", DISCOVERY, PORT_SET, "",
   "opaque ports: no protocol detection", inj=True)
_v("INBOUND_PORTS_REQUIRE_IDENTITY", DISCOVERY, IGNORED, None,
   "declared by the reference but never read: ignored")
_v("INBOUND_PORTS_REQUIRE_TLS", DISCOVERY, IGNORED, None,
   "declared by the reference but never read: ignored")
_v("INBOUND_IPS", DISCOVERY, IP_SET, None,
   "the pod's IPs: inbound accepts only these original destinations", "any IP", inj=True)
_v("INBOUND_GATEWAY_SUFFIXES", DISCOVERY, SUFFIXES, "", "names the inbound gateway may serve")
_v("INGRESS_MODE", DISCOVERY, BOOL, "false", "outbound routes by `l5d-dst-override`")
_v("OUTBOUND_DISABLE_INFORMATIONAL_HEADERS", DISCOVERY, BOOL, None,
   "omit informational response headers", "INGRESS_MODE")
_v("OUTBOUND_METRICS_HOSTNAME_LABELS", DISCOVERY, BOOL, "false",
   "add hostname labels to outbound metrics", inj=True)
_v("INBOUND_METRICS_AUTHORITY_LABELS", DISCOVERY, AUTHORITY, "",
   "`unsafe` adds an `authority` label to inbound metrics")

for _d, _l, _inb in (("INBOUND", "inbound", True), ("OUTBOUND", "outbound", False)):
    _v(f"{_d}_DETECT_TIMEOUT", TIMEOUTS, DURATION, "10s", f"{_l} protocol detection timeout")
    _v(f"{_d}_CONNECT_TIMEOUT", TIMEOUTS, DURATION, "300ms" if _inb else "1s",
       f"{_l} connect timeout", inj=True)
    _v(f"{_d}_CONNECT_EXP_BACKOFF_MIN", TIMEOUTS, DURATION, "100ms",
       f"{_l} reconnect backoff minimum (set together with MAX)")
    _v(f"{_d}_CONNECT_EXP_BACKOFF_MAX", TIMEOUTS, DURATION, "10s" if _inb else "60s",
       f"{_l} reconnect backoff maximum (set together with MIN)")
    _v(f"{_d}_CONNECT_EXP_BACKOFF_JITTER", TIMEOUTS, JITTER, "0.1",
       f"{_l} reconnect backoff jitter (0 if only MIN and MAX are set)")
    _v(f"{_d}_DISCOVERY_IDLE_TIMEOUT", TIMEOUTS, DURATION, "90s" if _inb else "5s",
       f"{_l} idle eviction of cached discovery and stacks", inj=True)
    _v(f"{_d}_MAX_IN_FLIGHT", TIMEOUTS, USIZE, "100000",
       f"{_l} in-flight request limit (excess requests get 503)")
    _v(f"{_d}_HTTP_QUEUE_CAPACITY", TIMEOUTS, USIZE, "10000", f"{_l} HTTP request queue capacity")
    _v(f"{_d}_HTTP_FAILFAST_TIMEOUT", TIMEOUTS, DURATION, "1s" if _inb else "3s",
       f"{_l} HTTP fail-fast timeout")
    if not _inb:
        _v("OUTBOUND_TCP_QUEUE_CAPACITY", TIMEOUTS, USIZE, "10000",
           "outbound TCP connection queue capacity")
        _v("OUTBOUND_TCP_FAILFAST_TIMEOUT", TIMEOUTS, DURATION, "3s",
           "outbound TCP fail-fast timeout")
    _v("MAX_IDLE_CONNS_PER_ENDPOINT" if _inb else "OUTBOUND_MAX_IDLE_CONNS_PER_ENDPOINT",
       TIMEOUTS, USIZE, "10000", f"{_l} idle HTTP/1 connections kept per endpoint")
    _v(f"{_d}_HTTP1_CONNECTION_POOL_IDLE_TIMEOUT", TIMEOUTS, DURATION, "3s",
       f"{_l} HTTP/1 pool idle timeout")
    _v(f"{_d}_HTTP1_MAX_HEADER_BYTES", TIMEOUTS, USIZE, "417792",
       f"{_l} largest HTTP/1 request head, else 431 (this proxy's extension; hyper's limit)")
    _v(f"{_d}_HTTP1_MAX_HEADERS", TIMEOUTS, USIZE, "100",
       f"{_l} most HTTP/1 request header fields, else 431 (this proxy's extension)")
    for _side, _past in (("ACCEPT", "accepted"), ("CONNECT", "connected")):
        _inj = (_side == "ACCEPT") == _inb
        _v(f"{_d}_{_side}_KEEPALIVE", TIMEOUTS, DURATION, None,
           f"{_l} {_past} sockets: TCP keepalive idle time", "off", inj=_inj)
        _v(f"{_d}_{_side}_USER_TIMEOUT", TIMEOUTS, DURATION, None,
           f"{_l} {_past} sockets: TCP_USER_TIMEOUT", "off", inj=_inj)
    _v(f"{_d}_TCP_LISTEN_BACKLOG", TIMEOUTS, U32, "128", f"{_l} listen backlog")
for _n, _m in (("INITIAL_TIMEOUT", "time to the first message"),
               ("IDLE_TIMEOUT", "time between messages"), ("LIFETIME", "stream lifetime")):
    _v(f"CONTROL_STREAM_{_n}", TIMEOUTS, OPT_DURATION, None,
       f"control-plane streams: max {_m} (not on loopback); initial <= idle <= lifetime",
       "no limit", inj=True)

_v("HTTP2_INITIAL_STREAM_WINDOW_SIZE", HTTP2, WINDOW, "65535", "client stream window")
_v("HTTP2_INITIAL_CONNECTION_WINDOW_SIZE", HTTP2, WINDOW, "1048576", "client connection window")
for _d, _l in (("INBOUND", "inbound"), ("OUTBOUND", "outbound")):
    _b = f"{_d}_SERVER_HTTP2_"
    _v(_b + "KEEP_ALIVE_INTERVAL", HTTP2, DURATION, None,
       f"{_l} server PING interval (set together with TIMEOUT)", "off", inj=True)
    _v(_b + "KEEP_ALIVE_TIMEOUT", HTTP2, DURATION, None,
       f"{_l} server PING timeout (set together with INTERVAL)", "off", inj=True)
    for _s in ("MAX_CONCURRENT_STREAMS", "MAX_HEADER_LIST_SIZE",
               "MAX_PENDING_ACCEPT_RESET_STREAMS", "MAX_SEND_BUF_SIZE"):
        _v(_b + _s, HTTP2, U32, None, f"{_l} server {_s.lower().replace('_', ' ')}",
           "library default")
    _v(_b + "MAX_FRAME_SIZE", HTTP2, FRAME, None, f"{_l} server max frame size", "16384")
    _v(_b + "ADAPTIVE_FLOW_CONTROL", HTTP2, BOOL, "false",
       f"{_l} server adaptive flow control (overrides the windows)")
    _v(_b + "INITIAL_STREAM_WINDOW_SIZE", HTTP2, WINDOW, None,
       f"{_l} server stream window (set together with CONNECTION)", "65535")
    _v(_b + "INITIAL_CONNECTION_WINDOW_SIZE", HTTP2, WINDOW, None,
       f"{_l} server connection window (set together with STREAM)", "1048576")

_v("SHUTDOWN_ENDPOINT_ENABLED", SHUTDOWN, BOOL, "false", "enable admin `POST /shutdown`",
   inj=True)
_v("SHUTDOWN_GRACE_PERIOD", SHUTDOWN, DURATION, "2m", "drain time before a forced exit")
_v("METRICS_RETAIN_IDLE", SHUTDOWN, DURATION, "10m", "drop metric series idle this long")
_v("DNS_MIN_TTL", SHUTDOWN, DURATION, None, "lower bound on DNS TTLs", "no bound")
_v("DNS_MAX_TTL", SHUTDOWN, DURATION, None, "upper bound on DNS TTLs", "no bound")

_v("TRACE_COLLECTOR_SVC_ADDR", TRACING, CONTROL, None, "trace collector address", "tracing off",
   inj=True)
_v("TRACE_COLLECTOR_SVC_NAME", TRACING, DNS_NAME, None, "trace collector TLS name", _LOOPBACK,
   inj=True)
_v("TRACE_ATTRIBUTES_PATH", TRACING, TEXT, None,
   "file of `key=\"value\"` span attributes (the pod's labels)", inj=True)
_v("TRACE_SERVICE_NAME", TRACING, TEXT, None, "the `service.name` attribute", inj=True)
_v("TRACE_EXTRA_ATTRIBUTES", TRACING, TEXT, None, "more `key=value` attribute lines", inj=True)
_v("OTEL_RESOURCE_ATTRIBUTES", TRACING, TEXT, None,
   "OpenTelemetry resource attributes (highest precedence)", inj=True, prefixed=False)
_v("HOSTNAME", TRACING, TEXT, None, "host name reported to the collector", inj=True,
   prefixed=False)
# fmt: on

VARIABLES: tuple[VarDef, ...] = tuple(_rows)
"""Every variable, in documentation order."""

BY_NAME: Mapping[str, VarDef] = {v.name: v for v in VARIABLES}
"""Every variable by its full name."""
