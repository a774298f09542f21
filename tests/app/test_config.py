"""Config.from_env: defaults, the injector's environment, groups and every error kind."""

from __future__ import annotations

import ipaddress

import attrs
import pytest

from linkerd_proxy.addrs import NameAddr, SocketAddr
from linkerd_proxy.app.config import (
    BackoffConfig,
    Config,
    ControlAddr,
    H2KeepAlive,
    InboundConfig,
)
from linkerd_proxy.app.config_vars import BY_NAME, VARIABLES
from linkerd_proxy.errors import ConfigError

P = "LINKERD2_PROXY_"
PEM = "-----BEGIN CERTIFICATE-----\nMIIBsjCCAVmgAwIBAgIRAI\n-----END CERTIFICATE-----\n"
LOCAL_NAME = "web.emojivoto.serviceaccount.identity.linkerd.cluster.local"
DST_NAME = "linkerd-destination.linkerd.serviceaccount.identity.linkerd.cluster.local"
CONTEXT = '{"ns":"emojivoto", "nodeName":"node-1", "pod":"web-5f86686c4d-58p7k"}'
NETS = "10.0.0.0/8,100.64.0.0/10,172.16.0.0/12,192.168.0.0/16,fd00::/8"

# What Linkerd's proxy injector puts in the proxy container (after the kubelet expands
# $(...) references), plus the unrelated variables a container always has.
INJECTED = {
    "_pod_name": "web-5f86686c4d-58p7k",
    "_pod_ns": "emojivoto",
    "_pod_nodeName": "node-1",
    "_l5d_ns": "linkerd",
    "_l5d_trustdomain": "cluster.local",
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOSTNAME": "web-5f86686c4d-58p7k",
    P + "LOG": "warn,linkerd=info,hickory=error,[{headers}]=off,[{request}]=off",
    P + "LOG_FORMAT": "plain",
    P + "DESTINATION_SVC_ADDR": "linkerd-dst-headless.linkerd.svc.cluster.local.:8086",
    P + "DESTINATION_PROFILE_NETWORKS": NETS,
    P + "POLICY_SVC_ADDR": "linkerd-policy.linkerd.svc.cluster.local.:8090",
    P + "POLICY_WORKLOAD": '{"ns":"emojivoto", "pod":"web-5f86686c4d-58p7k"}',
    P + "INBOUND_DEFAULT_POLICY": "all-unauthenticated",
    P + "POLICY_CLUSTER_NETWORKS": NETS,
    P + "CONTROL_STREAM_INITIAL_TIMEOUT": "3s",
    P + "CONTROL_STREAM_IDLE_TIMEOUT": "5m",
    P + "CONTROL_STREAM_LIFETIME": "1h",
    P + "INBOUND_CONNECT_TIMEOUT": "100ms",
    P + "OUTBOUND_CONNECT_TIMEOUT": "1000ms",
    P + "OUTBOUND_DISCOVERY_IDLE_TIMEOUT": "5s",
    P + "INBOUND_DISCOVERY_IDLE_TIMEOUT": "90s",
    P + "CONTROL_LISTEN_ADDR": "[::]:4190",
    P + "ADMIN_LISTEN_ADDR": "[::]:4191",
    P + "OUTBOUND_LISTEN_ADDR": "127.0.0.1:4140",
    P + "OUTBOUND_LISTEN_ADDRS": "127.0.0.1:4140,[::1]:4140",
    P + "INBOUND_LISTEN_ADDR": "[::]:4143",
    P + "INBOUND_IPS": "10.42.0.17,fd00:10:42::11",
    P + "INBOUND_PORTS": "8080,9090",
    P + "DESTINATION_PROFILE_SUFFIXES": "svc.cluster.local.",
    P + "INBOUND_ACCEPT_KEEPALIVE": "10000ms",
    P + "OUTBOUND_CONNECT_KEEPALIVE": "10000ms",
    P + "INBOUND_ACCEPT_USER_TIMEOUT": "30s",
    P + "OUTBOUND_CONNECT_USER_TIMEOUT": "30s",
    P + "INBOUND_SERVER_HTTP2_KEEP_ALIVE_INTERVAL": "10s",
    P + "INBOUND_SERVER_HTTP2_KEEP_ALIVE_TIMEOUT": "3s",
    P + "OUTBOUND_SERVER_HTTP2_KEEP_ALIVE_INTERVAL": "10s",
    P + "OUTBOUND_SERVER_HTTP2_KEEP_ALIVE_TIMEOUT": "3s",
    P + "INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION": "25,587,3306,4444,5432,6379,9300,11211",
    P + "DESTINATION_CONTEXT": CONTEXT,
    P + "IDENTITY_DIR": "/var/run/linkerd/identity/end-entity",
    P + "IDENTITY_TRUST_ANCHORS": PEM,
    P + "IDENTITY_TOKEN_FILE": "/var/run/secrets/tokens/linkerd-identity-token",
    P + "IDENTITY_SVC_ADDR": "linkerd-identity-headless.linkerd.svc.cluster.local.:8080",
    P + "IDENTITY_LOCAL_NAME": LOCAL_NAME,
    P
    + "IDENTITY_SVC_NAME": "linkerd-identity.linkerd.serviceaccount.identity.linkerd.cluster.local",
    P + "DESTINATION_SVC_NAME": DST_NAME,
    P + "POLICY_SVC_NAME": DST_NAME,
    P + "TAP_SVC_NAME": "tap.linkerd-viz.serviceaccount.identity.linkerd.cluster.local",
    P + "SHUTDOWN_ENDPOINT_ENABLED": "false",
    P + "CORES_MIN": "1",
}

IDENTITY_MIN = {
    P + "IDENTITY_DIR": "/id",
    P + "IDENTITY_TRUST_ANCHORS": PEM,
    P + "IDENTITY_TOKEN_FILE": "/token",
    P + "IDENTITY_SVC_ADDR": "127.0.0.1:8080",
    P + "IDENTITY_LOCAL_NAME": LOCAL_NAME,
}


def env(**kw: str) -> dict[str, str]:
    return {P + k: v for k, v in kw.items()}


def config_error(values: dict[str, str], **kw: int) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        Config.from_env(values, **kw)
    return info.value


async def test_defaults_match_the_reference() -> None:
    c = Config.from_env({}, available_cpus=4)
    assert c == Config() == Config.default()
    assert c.standalone
    assert c.log.filter == "warn,linkerd=info,hickory=error"
    assert (c.log.format, c.log.access_log) == ("plain", None)
    assert str(c.admin.listen_addr) == "127.0.0.1:4191"
    assert str(c.control_listen_addr) == "0.0.0.0:4190"
    assert str(c.inbound.listen_addr) == "0.0.0.0:4143"
    assert [str(a) for a in c.outbound.listen_addrs] == ["127.0.0.1:4140"]
    assert c.tap_svc_name is None
    i, o = c.inbound, c.outbound
    assert (
        i.ips == frozenset() and i.ports == {4191} and i.ports_disable_protocol_detection == set()
    )
    assert (i.detect_timeout, o.detect_timeout) == (10.0, 10.0)
    assert (i.connect.timeout, o.connect.timeout) == (0.3, 1.0)
    assert i.connect.backoff == BackoffConfig(0.1, 10.0, 0.1)
    assert o.connect.backoff == BackoffConfig(0.1, 60.0, 0.1)
    assert (i.connect.keepalive, i.connect.user_timeout, i.accept.keepalive) == (None, None, None)
    assert (i.http_queue_capacity, i.http_failfast_timeout) == (10000, 1.0)
    assert (o.http_queue_capacity, o.http_failfast_timeout) == (10000, 3.0)
    assert (o.tcp_queue_capacity, o.tcp_failfast_timeout) == (10000, 3.0)
    assert (i.discovery_idle_timeout, o.discovery_idle_timeout) == (90.0, 5.0)
    assert (i.max_in_flight, o.max_in_flight) == (100000, 100000)
    assert (i.max_idle_conns_per_endpoint, o.max_idle_conns_per_endpoint) == (10000, 10000)
    assert (i.http1_pool_idle_timeout, o.http1_pool_idle_timeout) == (3.0, 3.0)
    assert i.default_policy == "all-unauthenticated"
    assert not (o.ingress_mode or o.disable_informational_headers or o.metrics_hostname_labels)
    assert c.h2.client.initial_stream_window_size == 65535
    assert c.h2.client.initial_connection_window_size == 1048576
    assert c.h2.inbound_server.keepalive is None
    assert c.control_stream.initial_timeout is None and c.control_stream.lifetime is None
    assert (c.shutdown_endpoint_enabled, c.shutdown_grace_period) == (False, 120.0)
    assert c.metrics_retain_idle == 600.0
    assert c.cores == 1
    assert (c.identity, c.destination, c.policy, c.trace_collector) == (None, None, None, None)


async def test_every_default_parses() -> None:
    for var in VARIABLES:
        var.default_value()


async def test_injector_environment() -> None:
    c = Config.from_env(INJECTED, available_cpus=2)
    assert not c.standalone
    assert c.log.filter == INJECTED[P + "LOG"]
    assert str(c.admin.listen_addr) == "[::]:4191"
    assert str(c.control_listen_addr) == "[::]:4190"
    assert str(c.inbound.listen_addr) == "[::]:4143"
    assert [str(a) for a in c.outbound.listen_addrs] == ["127.0.0.1:4140", "[::1]:4140"]
    assert c.inbound.ips == {
        ipaddress.ip_address("10.42.0.17"),
        ipaddress.ip_address("fd00:10:42::11"),
    }
    assert c.inbound.ports == {8080, 9090, 4191}
    assert 3306 in c.inbound.ports_disable_protocol_detection
    assert c.inbound.connect.timeout == 0.1
    assert c.outbound.connect.timeout == 1.0
    assert c.inbound.accept.keepalive == 10.0 and c.inbound.accept.user_timeout == 30.0
    assert c.outbound.connect.keepalive == 10.0 and c.outbound.connect.user_timeout == 30.0
    assert c.outbound.accept.keepalive is None and c.inbound.connect.keepalive is None
    assert c.h2.inbound_server.keepalive == H2KeepAlive(interval=10.0, timeout=3.0)
    assert c.h2.outbound_server.keepalive == H2KeepAlive(interval=10.0, timeout=3.0)
    assert (c.control_stream.initial_timeout, c.control_stream.idle_timeout) == (3.0, 300.0)
    assert c.control_stream.lifetime == 3600.0
    assert c.tap_svc_name == "tap.linkerd-viz.serviceaccount.identity.linkerd.cluster.local"

    assert c.identity is not None
    assert c.identity.local_name == c.identity.server_name == LOCAL_NAME
    assert c.identity.trust_anchors_pem == PEM
    assert c.identity.dir == "/var/run/linkerd/identity/end-entity"
    assert c.identity.token_file == "/var/run/secrets/tokens/linkerd-identity-token"
    assert c.identity.svc == ControlAddr(
        NameAddr("linkerd-identity-headless.linkerd.svc.cluster.local.", 8080),
        "linkerd-identity.linkerd.serviceaccount.identity.linkerd.cluster.local",
    )
    assert (c.identity.min_refresh, c.identity.max_refresh) == (10.0, 86400.0)

    assert c.destination is not None
    assert c.destination.svc.identity == DST_NAME
    assert c.destination.svc.addr == NameAddr(
        "linkerd-dst-headless.linkerd.svc.cluster.local.", 8086
    )
    assert c.destination.context.startswith('{"ns":"emojivoto"')
    assert c.destination.profile_suffixes == {"svc.cluster.local."}
    assert ipaddress.ip_network("fd00::/8") in c.destination.profile_networks
    assert c.destination.profile_initial_timeout == 0.5

    assert c.policy is not None
    assert c.policy.svc.identity == DST_NAME
    assert c.policy.workload == INJECTED[P + "POLICY_WORKLOAD"]
    assert len(c.policy.cluster_networks) == 5 == len(c.inbound.cluster_networks)
    assert c.cores == 1


async def test_injector_environment_for_cluster_policy_and_tracing() -> None:
    c = Config.from_env(
        {
            **INJECTED,
            P + "INBOUND_DEFAULT_POLICY": "cluster-authenticated",
            P + "TRACE_COLLECTOR_SVC_ADDR": "collector.linkerd-jaeger:55678",
            P + "TRACE_COLLECTOR_SVC_NAME": "collector.linkerd-jaeger.serviceaccount.identity.l5d",
            P + "TRACE_SERVICE_NAME": "web",
            P + "TRACE_ATTRIBUTES_PATH": "/var/run/linkerd/podinfo/labels",
            P + "TRACE_EXTRA_ATTRIBUTES": 'k8s.pod.uid="1"',
            "OTEL_RESOURCE_ATTRIBUTES": "a=b",
        }
    )
    assert c.inbound.default_policy == "cluster-authenticated"
    assert c.trace_collector is not None
    assert c.trace_collector.svc.addr == NameAddr("collector.linkerd-jaeger", 55678)
    assert c.trace_collector.service_name == "web"
    assert c.trace_collector.hostname == "web-5f86686c4d-58p7k"
    assert c.trace_collector.otel_resource_attributes == "a=b"


@pytest.mark.parametrize(
    ("var", "value", "why"),
    [
        ("INBOUND_CONNECT_TIMEOUT", "1.5s", "expected a duration like 100ms, 10s, 5m"),
        ("OUTBOUND_DETECT_TIMEOUT", "10", "expected a duration"),
        ("SHUTDOWN_GRACE_PERIOD", "-1s", "expected a duration"),
        ("ADMIN_LISTEN_ADDR", "localhost:4191", "expected an address like"),
        ("INBOUND_LISTEN_ADDR", "0.0.0.0", "expected an address like"),
        ("OUTBOUND_LISTEN_ADDRS", "127.0.0.1:1,127.0.0.1:2,127.0.0.1:3", "only two"),
        ("INBOUND_PORTS", "80-79", "not a valid port range"),
        ("INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION", "3306,mysql", "not a valid port range"),
        ("DESTINATION_PROFILE_NETWORKS", "10.0.0.0", "not a valid network"),
        ("POLICY_CLUSTER_NETWORKS", "10.0.0.0/40", "not a valid network"),
        ("DESTINATION_PROFILE_SUFFIXES", "svc..local", "suffix"),
        ("INBOUND_IPS", "", "IP address"),
        ("SHUTDOWN_ENDPOINT_ENABLED", "yes", "true or false"),
        ("INBOUND_HTTP_QUEUE_CAPACITY", "-1", "integer"),
        ("DESTINATION_SVC_ADDR", "linkerd-dst", "port"),
        ("DESTINATION_SVC_NAME", "not a name", "DNS name"),
        ("TAP_SVC_NAME", "tap.", "identity"),
        ("IDENTITY_TRUST_ANCHORS", "", "trust anchors"),
        ("LOG_FORMAT", "text", "plain, json"),
        ("INBOUND_DEFAULT_POLICY", "allow", "expected one of"),
        ("CORES_MIN", "0", "integer"),
        ("CONTROL_STREAM_IDLE_TIMEOUT", "5", "expected a duration"),
    ],
)
async def test_invalid_value_names_variable_value_and_reason(
    var: str, value: str, why: str
) -> None:
    err = config_error(env(**{var: value}))
    assert (err.var, err.value) == (P + var, value)
    assert why in err.reason
    assert str(err) == f"Invalid configuration: {P}{var}={value}: {err.reason}"


async def test_every_parsed_variable_rejects_garbage() -> None:
    for var in VARIABLES:
        if var.kind.syntax in ("text", "ignored"):
            continue
        with pytest.raises(ConfigError) as info:
            Config.from_env({var.name: "bogus value"})
        assert info.value.var == var.name


async def test_text_variables_are_kept_verbatim_and_unknown_ignored() -> None:
    c = Config.from_env(
        {
            P + "LOG": "linkerd=debug,[{headers}]=off",
            P + "INBOUND_PORTS_REQUIRE_TLS": "whatever",
            P + "NOT_A_VARIABLE": "x",
        }
    )
    assert c.log.filter == "linkerd=debug,[{headers}]=off"


async def test_control_addr_needs_name_unless_loopback() -> None:
    err = config_error(
        env(DESTINATION_SVC_ADDR="linkerd-dst-headless.linkerd.svc.cluster.local.:8086")
    )
    assert err.var == P + "DESTINATION_SVC_NAME" and err.value == "<unset>"
    assert "loopback" in err.reason
    err = config_error(env(POLICY_SVC_ADDR="10.0.0.1:8090", POLICY_WORKLOAD="{}"))
    assert err.var == P + "POLICY_SVC_NAME"
    for addr in ("127.0.0.1:8086", "[::1]:8086", "localhost.:8086"):
        c = Config.from_env(env(DESTINATION_SVC_ADDR=addr))
        assert c.destination is not None and c.destination.svc.identity is None
        assert c.destination.svc.is_loopback and not c.standalone
    # Only the absolute name is loopback, as in the reference.
    assert (
        config_error(env(DESTINATION_SVC_ADDR="localhost:8086")).var == P + "DESTINATION_SVC_NAME"
    )
    # A name on a loopback address is ignored: loopback is always plaintext.
    c = Config.from_env(env(DESTINATION_SVC_ADDR="127.0.0.1:8086", DESTINATION_SVC_NAME=DST_NAME))
    assert c.destination is not None and c.destination.svc.identity is None
    # NAME alone is an error naming ADDR.
    assert config_error(env(DESTINATION_SVC_NAME=DST_NAME)).var == P + "DESTINATION_SVC_ADDR"


async def test_policy_workload_goes_with_the_address() -> None:
    assert config_error(env(POLICY_SVC_ADDR="127.0.0.1:8090")).var == P + "POLICY_WORKLOAD"
    assert config_error(env(POLICY_WORKLOAD="{}")).var == P + "POLICY_SVC_ADDR"
    c = Config.from_env(env(POLICY_SVC_ADDR="127.0.0.1:8090", POLICY_WORKLOAD='{"ns":"a"}'))
    assert c.policy is not None and c.policy.workload == '{"ns":"a"}'
    assert c.policy.svc == ControlAddr(SocketAddr.parse("127.0.0.1:8090"), None)


@pytest.mark.parametrize("missing", sorted(IDENTITY_MIN))
async def test_identity_group_is_all_or_nothing(missing: str) -> None:
    assert Config.from_env(IDENTITY_MIN).identity is not None
    values = {k: v for k, v in IDENTITY_MIN.items() if k != missing}
    err = config_error(values)
    expected = P + "IDENTITY_SERVER_ID" if missing.endswith("LOCAL_NAME") else missing
    assert err.var == expected and err.value == "<unset>"


async def test_identity_partial_names_first_missing() -> None:
    err = config_error(env(IDENTITY_DIR="/var/run/linkerd/identity/end-entity"))
    assert err.var == P + "IDENTITY_TRUST_ANCHORS"
    assert "required" in err.reason


async def test_identity_disabled_is_fatal() -> None:
    err = config_error(env(IDENTITY_DISABLED="true"))
    assert err.var == P + "IDENTITY_DISABLED" and "no longer be disabled" in err.reason
    assert Config.from_env(env(IDENTITY_DISABLED="")).standalone


async def test_identity_server_id_and_name() -> None:
    base = {k: v for k, v in IDENTITY_MIN.items() if not k.endswith("LOCAL_NAME")}
    c = Config.from_env({**base, **env(IDENTITY_SERVER_ID="a.b", IDENTITY_SERVER_NAME="A.B")})
    assert c.identity is not None and c.identity.local_name == c.identity.server_name == "a.b"
    err = config_error({**base, **env(IDENTITY_SERVER_ID="a.b", IDENTITY_SERVER_NAME="c.d")})
    assert err.var == P + "IDENTITY_SERVER_ID" and "must equal" in err.reason
    err = config_error({**base, **env(IDENTITY_SERVER_ID="a.b")})
    assert err.var == P + "IDENTITY_SERVER_NAME"
    # LOCAL_NAME wins over SERVER_ID/SERVER_NAME.
    c = Config.from_env({**IDENTITY_MIN, **env(IDENTITY_SERVER_ID="x.y", IDENTITY_SERVER_NAME="z")})
    assert c.identity is not None and c.identity.local_name == LOCAL_NAME
    # LOCAL_NAME is also the server name, so a URI is not accepted there.
    err = config_error({**IDENTITY_MIN, P + "IDENTITY_LOCAL_NAME": "spiffe://td/ns/a/sa/b"})
    assert err.var == P + "IDENTITY_LOCAL_NAME"


async def test_spire_identity() -> None:
    values = env(
        IDENTITY_TRUST_ANCHORS=PEM,
        IDENTITY_SERVER_ID="spiffe://cluster.local/ns/a/sa/b",
        IDENTITY_SERVER_NAME="b.a.serviceaccount.identity.linkerd.cluster.local",
        IDENTITY_SPIRE_WORKLOAD_API_ADDRESS="unix:///run/spire/agent.sock",
    )
    c = Config.from_env(values)
    assert c.identity is None and c.spire_identity is not None and not c.standalone
    assert c.spire_identity.workload_api_addr == "unix:///run/spire/agent.sock"
    assert c.spire_identity.server_id == "spiffe://cluster.local/ns/a/sa/b"
    err = config_error({**values, P + "IDENTITY_SERVER_ID": "b.a.svc"})
    assert err.var == P + "IDENTITY_SERVER_ID" and "spiffe" in err.reason


async def test_control_stream_limits_are_ordered() -> None:
    c = Config.from_env(env(CONTROL_STREAM_INITIAL_TIMEOUT="", CONTROL_STREAM_LIFETIME=""))
    assert c.control_stream.initial_timeout is None and c.control_stream.lifetime is None
    for init, idle, life, bad in (
        ("3s", "1s", "", "INITIAL_TIMEOUT"),
        ("3s", "", "1s", "INITIAL_TIMEOUT"),
        ("", "3s", "1s", "IDLE_TIMEOUT"),
    ):
        values = env(
            CONTROL_STREAM_INITIAL_TIMEOUT=init,
            CONTROL_STREAM_IDLE_TIMEOUT=idle,
            CONTROL_STREAM_LIFETIME=life,
        )
        err = config_error(values)
        assert err.var == P + "CONTROL_STREAM_" + bad and "not be greater" in err.reason


async def test_h2_pairs() -> None:
    err = config_error(env(INBOUND_SERVER_HTTP2_KEEP_ALIVE_INTERVAL="10s"))
    assert err.var == P + "INBOUND_SERVER_HTTP2_KEEP_ALIVE_TIMEOUT"
    err = config_error(env(OUTBOUND_SERVER_HTTP2_INITIAL_CONNECTION_WINDOW_SIZE="2"))
    assert err.var == P + "OUTBOUND_SERVER_HTTP2_INITIAL_STREAM_WINDOW_SIZE"
    b = "OUTBOUND_SERVER_HTTP2_"
    c = Config.from_env(
        env(
            **{
                b + "INITIAL_STREAM_WINDOW_SIZE": "1",
                b + "INITIAL_CONNECTION_WINDOW_SIZE": "2",
                b + "MAX_CONCURRENT_STREAMS": "3",
                b + "MAX_FRAME_SIZE": "16384",
                b + "MAX_HEADER_LIST_SIZE": "5",
                b + "MAX_PENDING_ACCEPT_RESET_STREAMS": "6",
                b + "MAX_SEND_BUF_SIZE": "7",
                b + "ADAPTIVE_FLOW_CONTROL": "true",
            },
            HTTP2_INITIAL_STREAM_WINDOW_SIZE="100000",
        )
    )
    s = c.h2.outbound_server
    assert (s.initial_stream_window_size, s.initial_connection_window_size) == (1, 2)
    assert (s.max_concurrent_streams, s.max_frame_size, s.max_header_list_size) == (3, 16384, 5)
    assert (s.max_pending_accept_reset_streams, s.max_send_buf_size) == (6, 7)
    assert s.adaptive_flow_control
    assert c.h2.inbound_server.initial_stream_window_size == 65535
    assert c.h2.client.initial_stream_window_size == 100000


async def test_backoff_min_and_max_go_together() -> None:
    err = config_error(env(OUTBOUND_CONNECT_EXP_BACKOFF_JITTER="0.5"))
    assert err.var == P + "OUTBOUND_CONNECT_EXP_BACKOFF_MIN"
    err = config_error(env(INBOUND_CONNECT_EXP_BACKOFF_MIN="1s"))
    assert err.var == P + "INBOUND_CONNECT_EXP_BACKOFF_MAX"
    err = config_error(
        env(INBOUND_CONNECT_EXP_BACKOFF_MIN="2s", INBOUND_CONNECT_EXP_BACKOFF_MAX="1s")
    )
    assert err.var == P + "INBOUND_CONNECT_EXP_BACKOFF_MIN" and err.value == "2s"
    err = config_error(
        env(INBOUND_CONNECT_EXP_BACKOFF_MIN="0", INBOUND_CONNECT_EXP_BACKOFF_MAX="0")
    )
    assert err.var == P + "INBOUND_CONNECT_EXP_BACKOFF_MAX"
    c = Config.from_env(
        env(INBOUND_CONNECT_EXP_BACKOFF_MIN="1s", INBOUND_CONNECT_EXP_BACKOFF_MAX="2m")
    )
    assert c.inbound.connect.backoff == BackoffConfig(1.0, 120.0, 0.0)  # jitter then defaults to 0
    assert c.outbound.connect.backoff == BackoffConfig(0.1, 60.0, 0.1)


@pytest.mark.parametrize(
    ("values", "cpus", "cores"),
    [
        ({}, 8, 1),
        ({"CORES_MAX": "4"}, 8, 4),
        ({"CORES_MAX": "4"}, 2, 2),
        ({"CORES_MAX_RATIO": "0.5"}, 8, 4),
        ({"CORES_MAX_RATIO": "0.25"}, 2, 1),  # round(0.5) -> 1, half away from zero
        ({"CORES_MAX_RATIO": "0.1"}, 2, 1),
        ({"CORES_MAX": "3", "CORES_MAX_RATIO": "1"}, 8, 3),
        ({"CORES_MIN": "3"}, 8, 3),
        ({"CORES": "2"}, 8, 2),
        ({"CORES_MIN": "2", "CORES": "6"}, 8, 2),
        ({"CORES_MIN": "6"}, 4, 4),
    ],
)
async def test_cores(values: dict[str, str], cpus: int, cores: int) -> None:
    assert Config.from_env(env(**values), available_cpus=cpus).cores == cores


async def test_cores_min_above_max_is_an_error() -> None:
    err = config_error(env(CORES_MIN="4", CORES_MAX="2"), available_cpus=8)
    assert err.var == P + "CORES_MIN" and "CORES_MAX" in err.reason
    assert config_error(env(CORES="4", CORES_MAX="2"), available_cpus=8).var == P + "CORES"


async def test_cluster_policies_need_cluster_networks() -> None:
    for policy in ("cluster-authenticated", "cluster-unauthenticated", "audit"):
        err = config_error(env(INBOUND_DEFAULT_POLICY=policy))
        assert err.var == P + "INBOUND_DEFAULT_POLICY" and "CLUSTER_NETWORKS" in err.reason
        c = Config.from_env(
            env(INBOUND_DEFAULT_POLICY=policy, POLICY_CLUSTER_NETWORKS="10.0.0.0/8")
        )
        assert c.inbound.default_policy == policy
    for policy in ("deny", "all-authenticated", "all-unauthenticated"):
        assert Config.from_env(env(INBOUND_DEFAULT_POLICY=policy)).inbound.default_policy == policy


async def test_outbound_listen_addrs() -> None:
    c = Config.from_env(env(OUTBOUND_LISTEN_ADDR="127.0.0.1:5140"))
    assert [str(a) for a in c.outbound.listen_addrs] == ["127.0.0.1:5140"]
    c = Config.from_env(env(OUTBOUND_LISTEN_ADDR="127.0.0.1:5140", OUTBOUND_LISTEN_ADDRS="[::1]:1"))
    assert [str(a) for a in c.outbound.listen_addrs] == ["[::1]:1"]


async def test_gateway_and_headers_and_labels() -> None:
    c = Config.from_env(env(INBOUND_GATEWAY_SUFFIXES="svc.cluster.local.", INBOUND_PORTS="80"))
    assert c.inbound.ports == {80, 4143, 4191}
    assert c.inbound.gateway_suffixes == {"svc.cluster.local."}
    c = Config.from_env(env(ADMIN_LISTEN_ADDR="127.0.0.1:9991"))
    assert c.inbound.ports == {9991}
    c = Config.from_env(env(INGRESS_MODE="true"))
    assert c.outbound.ingress_mode and c.outbound.disable_informational_headers
    c = Config.from_env(env(INGRESS_MODE="true", OUTBOUND_DISABLE_INFORMATIONAL_HEADERS="false"))
    assert not c.outbound.disable_informational_headers
    assert Config.from_env(
        env(INBOUND_METRICS_AUTHORITY_LABELS="unsafe")
    ).inbound.unsafe_authority_labels
    c = Config.from_env(env(ACCESS_LOG="json", LOG_FORMAT="JSON", DNS_MIN_TTL="5s"))
    assert (c.log.access_log, c.log.format, c.dns.min_ttl) == ("json", "json", 5.0)


async def test_configs_are_built_and_evolved_in_code() -> None:
    c = attrs.evolve(
        Config(),
        inbound=InboundConfig(listen_addr=SocketAddr.parse("127.0.0.1:0")),
        shutdown_grace_period=1.0,
    )
    assert c.inbound.listen_addr.port == 0 and c.shutdown_grace_period == 1.0
    assert c.standalone
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        c.cores = 2  # type: ignore[misc]
    hash(c)


async def test_table_has_unique_names_and_only_known_prefixes() -> None:
    assert len(BY_NAME) == len(VARIABLES)
    unprefixed = {v.name for v in VARIABLES if not v.name.startswith(P)}
    assert unprefixed == {"OTEL_RESOURCE_ATTRIBUTES", "HOSTNAME"}
