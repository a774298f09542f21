"""The benchmark's pure parts: tool-output parsers, medians, ratios, targets, the table.

The benchmark itself (namespaces, nginx, haproxy, wrk) is not run here; these tests
feed recorded tool output and hand-made round records through the same functions
``bench/run.py`` uses.
"""

from __future__ import annotations

import sys
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import attrs
import pytest

# bench/ is a directory of the repository, not part of the installed package.
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from bench.cases import Settings, check_result, load_command  # noqa: E402
from bench.catalog import CASES, SYSTEMS, case_by_id  # noqa: E402
from bench.parse import (  # noqa: E402
    LoadResult,
    ParseError,
    parse_bulk,
    parse_duration_ms,
    parse_h2load,
    parse_size,
    parse_wrk,
    proc_cpu_ticks,
    proc_ppid,
    proc_status_kib,
)
from bench.report import ratio_rows, render_markdown  # noqa: E402
from bench.summary import (  # noqa: E402
    NOT_SUPPORTED,
    OK,
    Doc,
    median,
    ratio,
    round_record,
    summarize,
    value,
)
from bench.systems import World, mode_of  # noqa: E402
from bench.targets import evaluate_targets  # noqa: E402
from linkerd_proxy.testing.netns import NetNs  # noqa: E402

WRK_OK = """\
Running 1s test @ http://192.0.2.2:80/ok
  1 threads and 2 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    32.24us  183.83us   3.92ms   98.62%
    Req/Sec   114.91k     4.51k  122.17k    63.64%
  Latency Distribution
     50%   12.00us
     75%   15.00us
     90%   20.00us
     99%  540.00us
  125250 requests in 1.10s, 17.80MB read
Requests/sec: 113932.31
Transfer/sec:     16.19MB
"""

WRK_ERRORS = """\
Running 5s test @ http://127.0.0.1:8101/ok
  1 threads and 16 connections
  Latency Distribution
     50%    1.50ms
     75%    2.00ms
     90%    3.00ms
     99%    1.20s
  4000 requests in 5.00s, 600.00KB read
  Socket errors: connect 1, read 2, write 3, timeout 4
  Non-2xx or 3xx responses: 90
Requests/sec:    800.00
Transfer/sec:    120.00KB
"""

H2LOAD_OK = """\
starting benchmark...
Application protocol: h2c
finished in 1.50s, 4421.00 req/s, 277.17MB/s
requests: 4421 total, 4421 started, 4421 done, 4421 succeeded, 0 failed, 0 errored, 0 timeout
status codes: 4422 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 277.17MB (290630646) total, 772.85KB (791400) headers (space savings 38.78%), 412.08MB (432093310) data
                     min         max         mean         sd        +/- sd
time for request:      197us     56.20ms       890us      1.22ms    99.68%
"""  # noqa: E501

H2LOAD_FAILED = """\
finished in 5.50s, 100.00 req/s, 1.00KB/s
requests: 600 total, 600 started, 500 done, 500 succeeded, 100 failed, 7 errored, 3 timeout
status codes: 480 2xx, 0 3xx, 5 4xx, 15 5xx
traffic: 5.00KB (5120) total, 1KB (1024) headers (space savings 0%), 1KB (1024) data
"""


# ------------------------------------------------------------------ parsers


def test_wrk_summary_rate_latency_and_bytes() -> None:
    r = parse_wrk(WRK_OK)
    assert r.requests == 125250
    assert r.seconds == pytest.approx(1.10)
    assert r.rps == pytest.approx(113932.31)
    assert r.bytes_read == round(17.80 * 1024 * 1024)
    assert r.p50_ms == pytest.approx(0.012)
    assert r.p99_ms == pytest.approx(0.540)
    assert r.errors == 0
    assert r.mb_per_s == pytest.approx(17.80 * 1024 * 1024 / 1.10 / 1e6)


def test_wrk_errors_and_units() -> None:
    r = parse_wrk(WRK_ERRORS)
    assert r.errors == 1 + 2 + 3 + 4 + 90
    assert r.p50_ms == pytest.approx(1.5)
    assert r.p99_ms == pytest.approx(1200.0)
    assert r.bytes_read == 600 * 1024


def test_wrk_without_latency_has_no_percentiles() -> None:
    lines = [line for line in WRK_OK.splitlines() if "%" not in line or "Stdev" in line]
    r = parse_wrk("\n".join(lines))
    assert r.p50_ms is None
    assert r.p99_ms is None
    assert r.requests == 125250


@pytest.mark.parametrize("bad", ["", "unable to connect to 192.0.2.2:80 Connection refused\n"])
def test_wrk_without_summary_raises(bad: str) -> None:
    with pytest.raises(ParseError):
        parse_wrk(bad)


def test_h2load_rate_excludes_warm_up() -> None:
    r = parse_h2load(H2LOAD_OK)
    assert r.requests == 4421
    assert r.rps == pytest.approx(4421.0)
    # "finished in 1.50s" includes 0.5 s of warm-up; the measured second does not.
    assert r.seconds == pytest.approx(1.0)
    assert r.bytes_read == 290630646
    assert r.errors == 0
    assert r.p50_ms is None


def test_h2load_counts_failures_and_error_statuses() -> None:
    r = parse_h2load(H2LOAD_FAILED)
    assert r.requests == 500
    assert r.errors == 100 + 7 + 3 + 5 + 15


def test_h2load_without_summary_raises() -> None:
    with pytest.raises(ParseError):
        parse_h2load("connect error\nNo protocol negotiated\n")


def test_bulk_reads_last_json_line() -> None:
    r = parse_bulk('noise\n{"bytes": 1073741824, "seconds": 0.5}\n\n')
    assert r.bytes_read == 1 << 30
    assert r.mb_per_s == pytest.approx((1 << 30) / 0.5 / 1e6)
    with pytest.raises(ParseError):
        parse_bulk("Traceback (most recent call last):\n")
    with pytest.raises(ParseError):
        parse_bulk("")


def test_sizes_and_durations() -> None:
    assert parse_size("1.5KB") == 1536
    assert parse_size("2GB") == 2 << 30
    assert parse_size("10B") == 10
    assert parse_duration_ms("250us") == pytest.approx(0.25)
    assert parse_duration_ms("2m") == pytest.approx(120_000)
    with pytest.raises(ParseError):
        parse_size("12 apples")
    with pytest.raises(ParseError):
        parse_duration_ms("fast")


def test_proc_stat_with_awkward_command_name() -> None:
    # comm may contain spaces and parentheses; fields are counted from the last ")".
    fields = ["S", "77", "1", "1", "0", "-1", "0", "0", "0", "0", "0", "150", "25", "0", "0"]
    stat = "1234 (we (ird) name) " + " ".join(fields) + " 20 0 1 0\n"
    assert proc_cpu_ticks(stat) == 175
    assert proc_ppid(stat) == 77


def test_proc_status_fields() -> None:
    status = "Name:\tpython\nVmHWM:\t   40960 kB\nVmRSS:\t   30720 kB\n"
    assert proc_status_kib(status, "VmRSS") == 30720
    assert proc_status_kib(status, "VmHWM") == 40960
    assert proc_status_kib(status, "VmSwap") == 0


# ------------------------------------------------------------------ numbers


def test_median_and_ratio() -> None:
    assert median([3.0, None, 1.0, 2.0]) == 2.0
    assert median([1.0, 4.0]) == 2.5
    assert median([None]) is None
    assert ratio(50.0, 100.0) == 0.5
    assert ratio(None, 1.0) is None
    assert ratio(1.0, 0.0) is None
    assert ratio(1.0, None) is None


def _load(rps: float, *, p50: float = 0.1, p99: float = 0.5, requests: int = 10_000) -> LoadResult:
    return LoadResult(requests=requests, seconds=requests / rps, rps=rps,
                      bytes_read=requests * 100, p50_ms=p50, p99_ms=p99)  # fmt: skip


def test_summarize_takes_medians_and_cpu_per_10k() -> None:
    case = case_by_id("h1_small_c16")
    rounds = [
        round_record(_load(1000.0, requests=20_000), cpu_s=4.0),  # 2.0 s per 10k
        round_record(_load(3000.0, requests=10_000), cpu_s=1.0),  # 1.0 s per 10k
        round_record(_load(2000.0, requests=10_000), cpu_s=0.5),  # 0.5 s per 10k
    ]
    s = summarize(rounds, case)
    assert s["status"] == OK
    assert s["median"]["rps"] == 2000.0
    assert s["median"]["cpu_per_10k"] == pytest.approx(1.0)


def test_summarize_partial_and_failed() -> None:
    case = case_by_id("h2_small_m10")
    good = round_record(_load(500.0), cpu_s=None)
    bad = round_record(None, status=NOT_SUPPORTED, detail="h2load: no protocol")
    partial = summarize([good, bad, good], case)
    assert partial["status"] == "ok (2/3 rounds)"
    assert partial["median"]["rps"] == 500.0
    assert partial["median"]["cpu_per_10k"] is None
    failed = summarize([bad, bad], case)
    assert failed["status"] == NOT_SUPPORTED
    assert failed["detail"] == "h2load: no protocol"
    assert failed["median"] == {}
    assert round_record(None, detail="x")["status"] == "failed"


def test_summarize_bulk_cpu_per_gib() -> None:
    case = case_by_id("tcp_bulk")
    gib = LoadResult(requests=0, seconds=0.5, rps=0.0, bytes_read=1 << 30)
    s = summarize([round_record(gib, cpu_s=0.25)], case)
    assert s["median"]["mb_s"] == pytest.approx((1 << 30) / 0.5 / 1e6)
    assert s["median"]["cpu_per_gib"] == pytest.approx(0.25)


def test_check_result_rejects_errors_and_short_copies() -> None:
    settings = Settings(bulk_bytes=1000)
    wrk = case_by_id("h1_small_c16")
    assert check_result(wrk, parse_wrk(WRK_OK), settings) is None
    assert "errors" in str(check_result(wrk, parse_wrk(WRK_ERRORS), settings))
    empty = LoadResult(requests=0, seconds=1.0, rps=0.0, bytes_read=0)
    assert check_result(wrk, empty, settings) == "no request completed"
    bulk = case_by_id("tcp_bulk")
    short = LoadResult(requests=0, seconds=1.0, rps=0.0, bytes_read=999)
    assert "999 of 1000" in str(check_result(bulk, short, settings))
    assert check_result(bulk, attrs.evolve(short, bytes_read=1000), settings) is None


# ------------------------------------------------------------------ document


def _entry(rps: float, *, p50: float = 0.1, p99: float = 0.5, cpu: float | None = None) -> Any:
    case = case_by_id("h1_small_c16")
    rounds = [round_record(_load(rps, p50=p50, p99=p99), cpu_s=cpu)]
    return {**summarize(rounds, case), "rounds": rounds}


def _failed(status: str) -> Any:
    rounds = [round_record(None, status=status, detail="boom")]
    return {**summarize(rounds, case_by_id("h2_small_m10")), "rounds": rounds}


def _doc() -> Doc:
    bulk = case_by_id("tcp_bulk")

    def copy(mb_s: float) -> Any:
        r = LoadResult(requests=0, seconds=1.0, rps=0.0, bytes_read=int(mb_s * 1e6))
        rounds = [round_record(r, cpu_s=0.1)]
        return {**summarize(rounds, bulk), "rounds": rounds}

    return {
        "meta": {"mode": "quick", "rounds": 1, "idle_conns": 1000, "versions": {"wrk": "4.1"}},
        "cases": {
            "h1_small_c16": {
                "direct": _entry(200_000.0),
                "nginx": _entry(60_000.0),
                "haproxy": _entry(80_000.0),
                "proxy": _entry(30_000.0, cpu=2.0),  # 10k requests: 2.0 s per 10k
                "proxy-mesh": _failed("failed"),
            },
            "h1_small_c1": {
                "direct": _entry(10_000.0, p50=0.080, p99=0.2),
                "nginx": _entry(9_000.0, p50=0.100, p99=0.4),
                "proxy": _entry(7_000.0, p50=0.140, p99=1.0),
            },
            "h1_64k_c16": {"nginx": _entry(10_000.0), "proxy": _entry(6_000.0)},
            "h2_small_m10": {"nginx": _entry(20_000.0), "proxy": _failed(NOT_SUPPORTED)},
            "tcp_bulk": {
                "direct": copy(3000.0),
                "nginx-stream": copy(2000.0),
                "proxy": copy(2500.0),
            },
        },
        "memory": {
            "proxy": {"status": OK, "idle_rss_mib": 30.0, "conns_rss_mib": 40.0},
            "proxy-mtls": {"status": OK, "idle_rss_mib": 50.0, "conns_rss_mib": None},
            "nginx": {"status": "failed", "detail": "x"},
        },
        "peak_rss_mib": {"proxy": 50.0},
    }


def test_value_only_from_good_entries() -> None:
    doc = _doc()
    assert value(doc, "h1_small_c16", "proxy", "rps") == 30_000.0
    assert value(doc, "h1_small_c16", "proxy-mesh", "rps") is None
    assert value(doc, "h2_small_m10", "proxy", "rps") is None
    assert value(doc, "no_such_case", "proxy", "rps") is None


def test_targets_ratios_and_verdicts() -> None:
    targets = {t["name"]: t for t in evaluate_targets(_doc())}
    bulk = targets["opaque TCP bulk, plaintext"]
    assert bulk["value"] == pytest.approx(1.25)
    assert bulk["met"] is True
    small = targets["HTTP/1 small, c16"]
    assert small["value"] == pytest.approx(0.5)  # exactly at the target counts as met
    assert small["met"] is True
    big = targets["HTTP/1 64 KiB, c16"]
    assert big["value"] == pytest.approx(0.6)
    assert big["met"] is True
    # p50 added: proxy 0.060 ms over direct, nginx 0.020 ms: 3x is the limit.
    added = targets["HTTP/1 c1: p50 added over direct"]
    assert added["value"] == pytest.approx(3.0)
    assert added["met"] is True
    p99 = targets["HTTP/1 c1: p99"]
    assert p99["value"] == pytest.approx(2.5)
    assert p99["met"] is False
    assert targets["HTTP/2 h2c c16 m10"]["met"] is None
    # The meshed proxy is the one with every feature loaded; standalone is reported too.
    meshed = targets["idle RSS, all features loaded (meshed: identity, discovery, mTLS; per proxy)"]
    assert meshed["value"] == pytest.approx(50.0)
    assert meshed["met"] is False
    assert targets["idle RSS, standalone (no control plane)"]["met"] is True
    assert targets["RSS added by 1,000 idle keep-alive connections"]["met"] is False
    cpu = targets["proxy CPU per 10k HTTP/1 requests (c16)"]
    assert cpu["value"] == pytest.approx(2.0)
    assert cpu["met"] is False
    assert targets["opaque TCP bulk over mTLS"]["met"] is None
    assert targets["opaque TCP bulk over mTLS"]["measured"] == "- (not run)"


def test_ratio_rows_pick_the_matching_reference() -> None:
    rows = {(r["case"], r["system"], r["key"]): r for r in ratio_rows(_doc())}
    c16 = rows[("h1_small_c16", "proxy", "rps")]
    assert c16["vs_direct"] == pytest.approx(0.15)
    assert c16["vs_nginx"] == pytest.approx(0.5)
    assert c16["vs_haproxy"] == pytest.approx(0.375)
    bulk = rows[("tcp_bulk", "proxy", "mb_s")]
    assert bulk["vs_nginx"] == pytest.approx(1.25)  # nginx stream, not the HTTP proxy
    assert bulk["vs_haproxy"] is None  # not measured in this document
    assert rows[("h1_small_c1", "proxy", "p99_ms")]["vs_nginx"] == pytest.approx(2.5)
    assert ("tcp_bulk", "proxy-mesh", "mb_s") not in rows
    assert rows[("h2_small_m10", "proxy", "rps")]["status"] == NOT_SUPPORTED


def test_markdown_has_every_system_figures_statuses_and_ratios() -> None:
    text = render_markdown(_doc())
    for label in SYSTEMS.values():
        assert label in text
    lines = text.splitlines()
    proxy_row = next(line for line in lines if line.startswith("| linkerd-proxy (outbound) |"))
    cells = [c.strip() for c in proxy_row.strip("|").split("|")]
    assert cells[1] == "30,000"
    assert cells[2] == "0.140 / 1.000"
    assert cells[5] == "2,500"
    assert cells[6] == "2"
    assert cells[7] == "30.0 MiB"
    assert cells[9] == "50.0 MiB"
    h2_row = [line for line in lines if line.startswith("| linkerd-proxy (outbound) |")][1]
    assert NOT_SUPPORTED in h2_row
    nginx_row = next(line for line in lines if line.startswith("| nginx reverse proxy |"))
    assert "| failed |" in nginx_row  # its memory measurement failed
    assert "| 0.50x |" in text
    assert "| NO |" in text and "| yes |" in text
    assert "RSS +1,000 conns" in text


def test_every_case_is_rendered_and_unique() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    for case in CASES:
        assert set(case.systems) <= set(SYSTEMS)
    text = render_markdown({"cases": {}})
    assert "## Targets" in text


def test_http_targets_say_when_the_proxy_carried_http_as_tcp() -> None:
    doc = _doc()
    plain = {t["name"]: t["measured"] for t in evaluate_targets(doc)}
    assert plain["HTTP/1 small, c16"] == "0.5x"
    doc["meta"]["proxy_http"] = False
    marked = {t["name"]: t["measured"] for t in evaluate_targets(doc)}
    assert marked["HTTP/1 small, c16"] == "0.5x (TCP path)"
    assert marked["opaque TCP bulk, plaintext"] == "1.25x"


# ------------------------------------------------------------------ mTLS cases


def _grpc(rps: float, cpu: float) -> Any:
    case = case_by_id("grpc_unary_mtls")
    rounds = [round_record(_load(rps), cpu_s=cpu)]
    return {**summarize(rounds, case), "rounds": rounds}


def _mtls_doc(bulk_mb_s: float) -> Doc:
    doc = _doc()
    bulk = case_by_id("tcp_bulk_mtls")
    r = LoadResult(requests=0, seconds=2.0, rps=0.0, bytes_read=int(bulk_mb_s * 2e6))
    rounds = [round_record(r, cpu_s=1.0)]
    doc["cases"]["tcp_bulk_mtls"] = {
        "direct": {**summarize(rounds, bulk), "rounds": rounds},
        "proxy-mtls": {**summarize(rounds, bulk), "rounds": rounds},
    }
    doc["cases"]["grpc_unary_mtls"] = {
        "direct": _grpc(40_000.0, 0.0),
        "nginx-grpc": _grpc(8_000.0, 1.0),  # 10k requests: 1 s per 10k
        "proxy-mtls": _grpc(1_000.0, 2.0),
    }
    doc["peak_rss_mib"].update({"proxy-mtls": 140.0, "nginx-grpc": 50.0})
    return doc


def test_mtls_targets_are_measured_from_the_mtls_cases() -> None:
    targets = {t["name"]: t for t in evaluate_targets(_mtls_doc(300.0))}
    bulk = targets["opaque TCP bulk over mTLS"]
    assert bulk["value"] == pytest.approx(300.0)
    assert bulk["met"] is True and bulk["measured"] == "300 MB/s"
    slow = {t["name"]: t for t in evaluate_targets(_mtls_doc(200.0))}
    assert slow["opaque TCP bulk over mTLS"]["met"] is False
    grpc = targets["gRPC unary through two proxies (mTLS)"]
    assert grpc["value"] == pytest.approx(0.125)
    assert grpc["met"] is True
    assert grpc["measured"] == (
        "proxy x2: 1,000 req/s, 2 s CPU / 10k; nginx x2: 8,000 req/s, 1 s CPU / 10k (0.12x nginx)"
    )


def test_mtls_targets_say_why_they_have_no_figure() -> None:
    doc = _mtls_doc(300.0)
    doc["cases"]["tcp_bulk_mtls"]["proxy-mtls"] = _failed("not mTLS")
    doc["cases"]["grpc_unary_mtls"]["nginx-grpc"] = _failed("failed")
    del doc["cases"]["grpc_unary_mtls"]["proxy-mtls"]
    targets = {t["name"]: t for t in evaluate_targets(doc)}
    bulk = targets["opaque TCP bulk over mTLS"]
    assert (bulk["met"], bulk["measured"]) == (None, "- (not mTLS)")
    grpc = targets["gRPC unary through two proxies (mTLS)"]
    assert grpc["met"] is None
    assert grpc["measured"] == "proxy x2: not run; nginx x2: failed"


def test_mtls_ratios_use_the_nginx_pair_and_direct_only() -> None:
    rows = {(r["case"], r["system"], r["key"]): r for r in ratio_rows(_mtls_doc(300.0))}
    grpc = rows[("grpc_unary_mtls", "proxy-mtls", "rps")]
    assert grpc["vs_nginx"] == pytest.approx(0.125)  # the nginx pair, not nginx's HTTP row
    assert grpc["vs_direct"] == pytest.approx(0.025)
    assert grpc["vs_haproxy"] is None
    bulk = rows[("tcp_bulk_mtls", "proxy-mtls", "mb_s")]
    assert bulk["vs_direct"] == pytest.approx(1.0)
    assert bulk["vs_nginx"] is None  # nginx stream is plaintext: not the same job
    assert ("h1_small_c16", "proxy-mtls", "rps") not in rows


def test_markdown_has_an_mtls_table_and_keeps_mtls_systems_out_of_the_others() -> None:
    text = render_markdown(_mtls_doc(300.0))
    head, _, rest = text.partition("## mTLS between the pods")
    assert rest, "no mTLS section"
    for label in (SYSTEMS["nginx-grpc"], SYSTEMS["proxy-mtls"]):
        assert label not in head
    rows = {
        line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")][1:]
        for line in rest.partition("## Ratios")[0].splitlines()
        if line.startswith("| ")
    }
    # 300 MB/s for 2 s = 0.559 GiB with 1 CPU second; gRPC 10k requests, 2 CPU seconds.
    assert rows[SYSTEMS["proxy-mtls"]] == ["300", "1.79", "1,000", "2", "50.0 MiB", "140.0 MiB"]
    assert rows[SYSTEMS["nginx-grpc"]] == ["-", "-", "8,000", "1", "-", "50.0 MiB"]


def test_grpc_load_command_posts_a_grpc_frame() -> None:
    case = case_by_id("grpc_unary_mtls")
    argv, limit = load_command(case, "127.0.0.1:8131", Settings(duration=2.0), "/w/req.bin")
    assert argv[0] == "h2load" and "-m10" in argv and "-c16" in argv
    assert argv[argv.index("-d") + 1] == "/w/req.bin"
    assert "content-type: application/grpc" in argv and "te: trailers" in argv
    assert argv[-1] == "http://127.0.0.1:8131/bench.Echo/Unary"
    plain, _ = load_command(case_by_id("h2_small_m10"), "x:1", Settings(), "/w/req.bin")
    assert "-d" not in plain and "content-type: application/grpc" not in plain
    assert limit > 2


def test_mtls_systems_have_their_own_targets_and_rules() -> None:
    world = World(NetNs("a", IPv4Address("192.0.2.1")), NetNs("b", IPv4Address("192.0.2.2")), "/w")
    assert world.target("proxy-mtls", "bulk") == "198.51.100.30:5001"
    assert world.target("proxy-mtls", "grpc") == "198.51.100.31:80"
    assert world.target("nginx-grpc", "grpc") == "127.0.0.1:8131"
    assert world.target("direct", "grpc") == "192.0.2.2:8080"
    with pytest.raises(KeyError):
        world.target("nginx-grpc", "h1")
    with pytest.raises(KeyError):
        world.target("proxy-mtls", "h1")
    assert mode_of("proxy-mtls") == "mtls" and mode_of("nginx-grpc") == "plain"
    assert world.available("proxy-mtls") == "mTLS proxies not started"
    for case in CASES:
        mtls_case = case.id.endswith("_mtls")
        assert ("proxy-mtls" in case.systems) == mtls_case
        assert mtls_case or "nginx-grpc" not in case.systems
