"""``promtool check metrics`` (Debian package ``prometheus``) on the proxy's real scrape.

The scrape is taken after every kind of traffic the proxy handles
(:data:`linkerd_proxy.testing.traffic.TRAFFIC_KINDS`: TCP both ways, connect errors,
resets, every refusal, HTTP/1, HTTP/2, gRPC success and failure, meshed HTTP, gRPC
and TCP over mTLS with the transport header, mTLS on the inbound's direct path and
on a plain port, TLS passthrough for a foreign SNI, plaintext to a meshed inbound)
with one connection still open. promtool must report
nothing, except that metric names carry an abbreviated unit where Linkerd's
contract names do (``response_latency_ms``...): those names are what dashboards
query, so the lint is accepted for them and for nothing else.
"""

from __future__ import annotations

import gzip

import pytest
import trio

from linkerd_proxy.testing import Scrape
from linkerd_proxy.testing.netns import require_tools
from linkerd_proxy.testing.traffic import (
    FOREIGN_SNI,
    GRPC_FAIL_STATUS,
    PEER_ID,
    TrafficEnv,
    open_traffic_proxy,
    run_every_kind,
)

pytestmark = [pytest.mark.system]

#: Linkerd's contract metric names that end in ``_ms`` (SPEC / docs/metrics.md).
CONTRACT_MS_NAMES = frozenset(
    {
        "response_latency_ms",
        "route_response_latency_ms",
        "control_response_latency_ms",
        "stack_poll_total_ms",
    }
)
UNIT_LINT = "metric names should not contain abbreviated units"

#: Families the traffic must have produced (else the lint proved little).
EXPECTED_FAMILIES = (
    "tcp_open_total",
    "tcp_open_connections",
    "tcp_read_bytes_total",
    "tcp_write_bytes_total",
    "tcp_close_total",
    "inbound_tcp_errors_total",
    "outbound_tcp_errors_total",
    "request_total",
    "response_total",
    "response_latency_ms_bucket",
    "process_cpu_seconds_total",
    "process_start_time_seconds",
    "proxy_build_info",
)


async def promtool_check(body: str) -> tuple[int, list[str]]:
    """Run ``promtool check metrics`` on ``body``; return its exit code and output lines."""
    with trio.fail_after(30):
        proc = await trio.run_process(
            ["promtool", "check", "metrics"],
            stdin=body.encode(),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    out = (proc.stdout + proc.stderr).decode(errors="replace")
    return proc.returncode, [line for line in out.splitlines() if line.strip()]


def unexpected_findings(code: int, lines: list[str]) -> list[str]:
    """What promtool said beyond the accepted unit lint on contract names.

    promtool exits 0 when clean, 3 when it has lint findings, 1 when it could not
    parse the input (always a finding).
    """
    accepted = {f"{name} {UNIT_LINT}" for name in CONTRACT_MS_NAMES}
    findings = [line for line in lines if line not in accepted]
    if code not in (0, 3) or (code == 3 and not lines):
        findings.append(f"promtool exited with {code}")
    return findings


async def scrape_after_all_traffic(env: TrafficEnv, gzip_: bool = False) -> str:
    headers = {"Accept-Encoding": "gzip"} if gzip_ else None
    rsp = await env.proxy.admin_request("GET", "/metrics", headers=headers)
    assert rsp.status == 200
    if gzip_:
        assert rsp.headers.get("content-encoding") == "gzip"
        return gzip.decompress(rsp.body).decode()
    return rsp.text


async def test_promtool_finds_nothing_after_every_kind_of_traffic() -> None:
    require_tools(("promtool",))
    async with open_traffic_proxy() as env:
        await run_every_kind(env, rounds=3)
        # One connection stays open across the scrape (gauges at 1, held series).
        held = await env.router.connect(env.outbound, env.backends.echo)
        async with held:
            await held.send_all(b"\x00")  # not HTTP: detection decides at once
            assert await held.receive_some(1) == b"\x00"
            bodies = [
                await scrape_after_all_traffic(env),
                await scrape_after_all_traffic(env, gzip_=True),
            ]
    for body in bodies:
        scrape = Scrape.parse(body)
        assert scrape.duplicates() == []
        for family in EXPECTED_FAMILIES:
            assert list(scrape.find(family)), f"no {family} in the scrape"
        assert scrape.value("tcp_open_connections", direction="outbound", peer="src") >= 1
        assert list(scrape.find("tcp_close_total", errno="ECONNRESET"))
        for side in ("inbound", "outbound"):
            for error in ("i/o", "unexpected"):
                assert list(scrape.find(f"{side}_tcp_errors_total", error=error)), (side, error)
        # Every TLS rendering the traffic produces (docs/metrics.md).
        for side, tls in (
            ("inbound", {"tls": "true", "client_id": PEER_ID}),
            ("inbound", {"tls": "opaque", "sni": FOREIGN_SNI}),
            ("inbound", {"tls": "no_identity", "no_tls_reason": "no_tls_from_remote"}),
            ("outbound", {"tls": "true", "server_id": PEER_ID}),
            ("outbound", {"tls": "no_identity", "no_tls_reason": "loopback"}),
        ):
            assert list(scrape.find("tcp_open_total", direction=side, **tls)), (side, tls)
        for grpc_status in ("0", str(GRPC_FAIL_STATUS)):
            for side in ("inbound", "outbound"):
                assert list(scrape.find("response_total", direction=side, grpc_status=grpc_status))
        code, lines = await promtool_check(body)
        assert unexpected_findings(code, lines) == [], "\n".join(lines)


async def test_promtool_verdicts_are_read_correctly() -> None:
    # The filter above must let exactly the contract-name unit lint through: feed
    # the real promtool an exposition with that lint and two real defects.
    require_tools(("promtool",))
    body = (
        "# HELP response_latency_ms Elapsed times.\n"
        "# TYPE response_latency_ms histogram\n"
        'response_latency_ms_bucket{le="1"} 0\n'
        'response_latency_ms_bucket{le="+Inf"} 1\n'
        "response_latency_ms_count 1\n"
        "response_latency_ms_sum 2\n"
        # OpenMetrics' counter naming inside a text-format body:
        "# HELP proc_cpu_seconds CPU.\n"
        "# TYPE proc_cpu_seconds counter\n"
        "proc_cpu_seconds_total 1\n"
        # An abbreviated unit outside Linkerd's contract names:
        "# HELP made_up_latency_ms Elapsed.\n"
        "# TYPE made_up_latency_ms gauge\n"
        "made_up_latency_ms 1\n"
    )
    code, lines = await promtool_check(body)
    assert code == 3
    assert f"response_latency_ms {UNIT_LINT}" in lines
    findings = unexpected_findings(code, lines)
    assert any(line.startswith("proc_cpu_seconds_total ") for line in findings), lines
    assert f"made_up_latency_ms {UNIT_LINT}" in findings
    assert f"response_latency_ms {UNIT_LINT}" not in findings

    clean = "# HELP up_total Ups.\n# TYPE up_total counter\nup_total 1\n# EOF\n"
    assert unexpected_findings(*await promtool_check(clean)) == []
    assert unexpected_findings(*await promtool_check("not { a metric\n")) != []
