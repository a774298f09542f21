"""Environment -> :class:`~linkerd_proxy.app.config.Config`: defaults and cross-field rules.

Middle of the configuration layer: below ``app.config`` (the classes, whose
``Config.from_env`` calls :func:`read_config`), above ``app.config_vars`` (the
table of variables) and ``app.env_parse`` (value syntax). Every value is read
through its table row, so an invalid one raises ``ConfigError`` naming the full
variable, its raw value and the reason. This module adds the rules that span
variables: control-plane address/name pairs, all-or-nothing groups (identity,
backoff, HTTP/2 pairs), ordering (control stream limits, ``CORES_MIN`` <=
``CORES_MAX``) and the computed values (worker count, watched inbound ports).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Literal, TypeVar, cast

from linkerd_proxy.addrs import NameAddr, SocketAddr
from linkerd_proxy.app import env_parse as p
from linkerd_proxy.app.config import (
    AcceptConfig,
    AdminConfig,
    BackoffConfig,
    Config,
    ConnectConfig,
    ControlAddr,
    ControlStreamConfig,
    DestinationConfig,
    DnsConfig,
    H2ClientConfig,
    H2Config,
    H2KeepAlive,
    H2ServerConfig,
    IdentityConfig,
    InboundConfig,
    LogConfig,
    OutboundConfig,
    PolicyConfig,
    SpireIdentityConfig,
    TraceCollectorConfig,
    is_loopback_addr,
)
from linkerd_proxy.app.config_vars import BY_NAME, PREFIX, VARIABLES
from linkerd_proxy.errors import ConfigError

T = TypeVar("T")
UNSET = "<unset>"


class _Env:
    """Reads variables through their definitions; every value is parsed once."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env
        self._parsed: dict[str, object] = {}

    def raw(self, name: str) -> str | None:
        return self._env.get(_full(name))

    def is_set(self, name: str) -> bool:
        return self.raw(name) is not None

    def value(self, name: str) -> object:
        """The parsed value, the parsed default, or ``None`` (unset, no default)."""
        var = BY_NAME[_full(name)]
        if var.name not in self._parsed:
            raw = self.raw(name)
            self._parsed[var.name] = var.default_value() if raw is None else var.parse(raw)
        return self._parsed[var.name]

    def get(self, name: str, typ: type[T]) -> T:
        value = self.value(name)
        assert isinstance(value, typ), (name, value)
        return value

    def opt(self, name: str, typ: type[T]) -> T | None:
        value = self.value(name)
        assert value is None or isinstance(value, typ), (name, value)
        return value

    def missing(self, name: str, why: str) -> ConfigError:
        raw = self.raw(name)
        return ConfigError(_full(name), UNSET if raw is None else raw, why)


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
    if is_loopback_addr(addr):
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
        http1_max_head_bytes=e.get("INBOUND_HTTP1_MAX_HEADER_BYTES", int),
        http1_max_headers=e.get("INBOUND_HTTP1_MAX_HEADERS", int),
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
        http1_max_head_bytes=e.get("OUTBOUND_HTTP1_MAX_HEADER_BYTES", int),
        http1_max_headers=e.get("OUTBOUND_HTTP1_MAX_HEADERS", int),
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
    values = {n: e.value(n) for n in _IDENTITY_TRIGGERS}
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
    server_name = need(name_var)
    if name_var == id_var:  # LOCAL_NAME is also the server name, so it must be a DNS name
        try:
            server_name = p.parse_dns_name(server_name)
        except ValueError as exc:
            raise e.missing(name_var, str(exc)) from None
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


def read_config(env: Mapping[str, str], available_cpus: int | None = None) -> Config:
    """Build a :class:`Config` from ``env``; see :meth:`Config.from_env`.

    Raises:
        ConfigError: for the first invalid value or inconsistent group of variables.
    """
    e = _Env(env)
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
