"""docs/configuration.md is generated from the variable table and covers the SPEC."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import trio

from linkerd_proxy.app.config_doc import render
from linkerd_proxy.app.config_vars import BY_NAME, SECTIONS, VARIABLES

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"

# Every variable named in SPEC.md section 1, written as the SPEC writes them
# ({A,B} alternatives expand; names are LINKERD2_PROXY_* unless listed as unprefixed).
SPEC_SECTION_1 = """
LOG LOG_FORMAT ACCESS_LOG OUTBOUND_LISTEN_ADDR OUTBOUND_LISTEN_ADDRS INBOUND_LISTEN_ADDR
ADMIN_LISTEN_ADDR CONTROL_LISTEN_ADDR TAP_SVC_NAME CORES CORES_MIN CORES_MAX CORES_MAX_RATIO
IDENTITY_DIR IDENTITY_TRUST_ANCHORS IDENTITY_TOKEN_FILE IDENTITY_LOCAL_NAME
IDENTITY_SERVER_{ID,NAME} IDENTITY_SVC_{ADDR,NAME} IDENTITY_{MIN,MAX}_REFRESH IDENTITY_DISABLED
IDENTITY_SPIRE_WORKLOAD_API_ADDRESS
DESTINATION_SVC_{ADDR,NAME} DESTINATION_CONTEXT DESTINATION_PROFILE_SUFFIXES
DESTINATION_PROFILE_NETWORKS DESTINATION_PROFILE_INITIAL_TIMEOUT POLICY_SVC_{ADDR,NAME}
POLICY_WORKLOAD POLICY_CLUSTER_NETWORKS INBOUND_DEFAULT_POLICY INBOUND_PORTS
INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION INBOUND_PORTS_REQUIRE_{IDENTITY,TLS} INBOUND_IPS
INBOUND_GATEWAY_SUFFIXES INGRESS_MODE OUTBOUND_DISABLE_INFORMATIONAL_HEADERS
OUTBOUND_METRICS_HOSTNAME_LABELS INBOUND_METRICS_AUTHORITY_LABELS
{IN,OUT}BOUND_DETECT_TIMEOUT INBOUND_CONNECT_TIMEOUT OUTBOUND_CONNECT_TIMEOUT
{IN,OUT}BOUND_CONNECT_EXP_BACKOFF_{MIN,MAX,JITTER} INBOUND_HTTP_{QUEUE_CAPACITY,FAILFAST_TIMEOUT}
OUTBOUND_{HTTP,TCP}_{QUEUE_CAPACITY,FAILFAST_TIMEOUT} {OUT,IN}BOUND_DISCOVERY_IDLE_TIMEOUT
{IN,OUT}BOUND_MAX_IN_FLIGHT MAX_IDLE_CONNS_PER_ENDPOINT OUTBOUND_MAX_IDLE_CONNS_PER_ENDPOINT
{IN,OUT}BOUND_HTTP1_CONNECTION_POOL_IDLE_TIMEOUT
{IN,OUT}BOUND_{ACCEPT,CONNECT}_{KEEPALIVE,USER_TIMEOUT}
{IN,OUT}BOUND_TCP_LISTEN_BACKLOG HTTP2_INITIAL_{STREAM,CONNECTION}_WINDOW_SIZE
{IN,OUT}BOUND_SERVER_HTTP2_KEEP_ALIVE_{INTERVAL,TIMEOUT}
{IN,OUT}BOUND_SERVER_HTTP2_{MAX_CONCURRENT_STREAMS,MAX_FRAME_SIZE,MAX_HEADER_LIST_SIZE}
{IN,OUT}BOUND_SERVER_HTTP2_{MAX_PENDING_ACCEPT_RESET_STREAMS,MAX_SEND_BUF_SIZE}
{IN,OUT}BOUND_SERVER_HTTP2_{ADAPTIVE_FLOW_CONTROL,INITIAL_STREAM_WINDOW_SIZE}
{IN,OUT}BOUND_SERVER_HTTP2_INITIAL_CONNECTION_WINDOW_SIZE
CONTROL_STREAM_{INITIAL_TIMEOUT,IDLE_TIMEOUT,LIFETIME} SHUTDOWN_ENDPOINT_ENABLED
SHUTDOWN_GRACE_PERIOD METRICS_RETAIN_IDLE DNS_{MIN,MAX}_TTL
TRACE_COLLECTOR_SVC_{ADDR,NAME} TRACE_ATTRIBUTES_PATH TRACE_SERVICE_NAME TRACE_EXTRA_ATTRIBUTES
"""
UNPREFIXED = ("OTEL_RESOURCE_ATTRIBUTES", "HOSTNAME")


def expand(pattern: str) -> list[str]:
    match = re.search(r"\{([^}]*)\}", pattern)
    if match is None:
        return [pattern]
    head, tail = pattern[: match.start()], pattern[match.end() :]
    return [name for alt in match.group(1).split(",") for name in expand(head + alt + tail)]


def spec_names() -> list[str]:
    names = [n for word in SPEC_SECTION_1.split() for n in expand(word)]
    return ["LINKERD2_PROXY_" + n for n in names] + list(UNPREFIXED)


async def test_committed_doc_is_the_rendered_table() -> None:
    committed = await trio.Path(DOC).read_text()
    assert committed == render(), "regenerate: python -m linkerd_proxy.app.config_doc > " + str(DOC)


async def test_every_spec_variable_is_defined_and_documented() -> None:
    names = spec_names()
    assert len(set(names)) == len(names) == 117
    missing = [n for n in names if n not in BY_NAME]
    assert missing == []
    text = render()
    for name in names:
        assert f"| `{name}` |" in text


async def test_render_groups_every_variable_once_by_section() -> None:
    text = render()
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert len(rows) == len(VARIABLES)
    positions = [text.index(f"\n## {s}\n") for s in SECTIONS]
    assert positions == sorted(positions)
    for var in VARIABLES:
        row_at = text.index(f"| `{var.name}` |")
        section_at = max(p for p in positions if p < row_at)
        assert section_at == positions[SECTIONS.index(var.section)], var.name
    connect = next(r for r in rows if "`LINKERD2_PROXY_INBOUND_CONNECT_TIMEOUT`" in r)
    assert "`300ms`" in connect and "| yes |" in connect
    assert "\\|" in connect  # the `|` of the duration syntax is escaped inside the table


async def test_module_runs_as_a_script() -> None:
    result = await trio.run_process(
        [sys.executable, "-m", "linkerd_proxy.app.config_doc"], capture_stdout=True
    )
    assert result.stdout.decode() == render()
