"""A real Prometheus server ingests the proxy's metrics for 20 s of traffic.

One session (a module fixture, ~27 s) runs everything, the tests then check what it
recorded:

* a proxy (:func:`~linkerd_proxy.testing.traffic.open_traffic_proxy`) carries, for
  :data:`DURATION` seconds, every kind of traffic in
  :data:`~linkerd_proxy.testing.traffic.TRAFFIC_KINDS` (2 rounds a second: HTTP,
  gRPC, TCP, mTLS both ways with and without the transport header, TLS
  passthrough, errors; a second, meshed proxy is its peer), plus
  a *steady* stream of :data:`RATE` TCP connections a second to a backend of its
  own (so its series are known exactly), plus one connection held open throughout;
* a Prometheus scrapes the proxy's admin ``/metrics`` every second;
* a second Prometheus scrapes a *control* target serving a deliberately broken
  exposition (a duplicated series, an OpenMetrics counter under ``text/plain``),
  to show that the checks below do catch those defects;
* the test scrapes the proxy itself at known times, to compute rates independently.

Why not only grep the log for "duplicate sample": Prometheus 2.42 keeps the first
of two samples of one series in one scrape and drops the second *silently* (no log
line, no counter); the control target proves it. So duplicates are also detected
by comparing each scrape's sample count with the series Prometheus stored from it
(:meth:`PrometheusServer.excess_samples`).

Rate tolerance (:data:`RATE_TOLERANCE`, 10 %): ``rate(x[10s])`` with 1 s scrapes
is (last - first) / (their time span) over ~10 samples, extrapolated to the window.
Counting error: +-1 connection at each end of a ~9 s span (~1 % at 20/s);
Prometheus stamps a sample when the scrape starts while the proxy counts a few ms
later (~1 %); the generator starts connections on absolute deadlines, so a late
start does not lower the rate. The rest of the margin absorbs a loaded CI machine.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

import attrs
import pytest
import trio

from linkerd_proxy.addrs import SocketAddr
from linkerd_proxy.testing import Scrape
from linkerd_proxy.testing.netns import require_tools
from linkerd_proxy.testing.prometheus import (
    PrometheusError,
    PrometheusServer,
    ScrapeTarget,
    open_prometheus,
    render_config,
)
from linkerd_proxy.testing.traffic import (
    TrafficEnv,
    echo_handler,
    exchange,
    open_traffic_proxy,
    run_every_kind,
    run_paced,
    serve_tcp,
)

pytestmark = [pytest.mark.system, pytest.mark.slow]

DURATION = 20.0
RATE = 20.0
BACKGROUND_ROUNDS_PER_S = 2.0
RATE_TOLERANCE = 0.10
#: Offsets (s from the traffic start) where the steady rate is evaluated: each
#: 10 s window lies inside the traffic.
STEADY_EVAL = (11.0, 15.0, 19.0)
#: Offsets of the test's own scrapes; pairs 10 s apart give independent rates.
OWN_SCRAPES = (4.0, 9.0, 14.0, 19.0)
#: Counters whose ``sum(rate(x[10s]))`` is checked against the test's own scrapes.
RATE_METRICS = ("tcp_open_total", "request_total")

CONTROL_BODY = (
    "# HELP dup_total A series printed twice.\n"
    "# TYPE dup_total counter\n"
    'dup_total{a="1"} 1\n'
    'dup_total{a="1"} 2\n'
    "# HELP om_cpu_seconds An OpenMetrics counter.\n"
    "# TYPE om_cpu_seconds counter\n"
    "om_cpu_seconds_total 1\n"
    "# EOF\n"
)


@attrs.define
class Session:
    """What the session observed (Unix times throughout), filled in as it runs."""

    start: float = 0.0
    end: float = 0.0
    steady_target: str = ""
    steady_connections: int = 0
    steady_lateness: float = 0.0
    own: list[tuple[float, Scrape]] = attrs.Factory(list)
    final: Scrape | None = None
    log: str = ""
    problems: list[str] = attrs.Factory(list)
    rejected: dict[str, float] = attrs.Factory(dict)
    excess: list[float] = attrs.Factory(list)
    untyped: list[str] = attrs.Factory(list)
    up: list[float] = attrs.Factory(list)
    steady_rates: list[tuple[float, float | None]] = attrs.Factory(list)
    sum_rates: dict[str, list[tuple[float | None, float]]] = attrs.Factory(dict)
    steady_ingested: float | None = None
    min_open_connections: float | None = None
    all_rate: float | None = None
    control_excess: list[float] = attrs.Factory(list)
    control_untyped: list[str] = attrs.Factory(list)

    @property
    def steady_selector(self) -> str:
        return (
            f'tcp_open_total{{direction="outbound",peer="src",target_addr="{self.steady_target}"}}'
        )

    @property
    def last_scrape(self) -> Scrape:
        assert self.final is not None
        return self.final


async def _serve_control(stream: trio.SocketStream) -> None:
    async with stream:
        with trio.move_on_after(5):
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 65536:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    return
                head += chunk
            body = CONTROL_BODY.encode()
            await stream.send_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )


async def _scrape_at(
    env: TrafficEnv, t0: float, wall0: float, offsets: tuple[float, ...]
) -> list[tuple[float, Scrape]]:
    out = []
    for offset in offsets:
        await trio.sleep_until(t0 + offset)
        wall = wall0 + (trio.current_time() - t0)
        out.append((wall, await env.proxy.scrape()))
    return out


async def _hold_open(env: TrafficEnv, release: trio.Event) -> None:
    stream = await env.router.connect(env.outbound, env.backends.echo)
    async with stream:
        # Not a token: protocol detection decides "not HTTP" at once.
        await stream.send_all(b"\x00held")
        assert await stream.receive_some(5) == b"\x00held"
        await release.wait()


def _own_rate(own: list[tuple[float, Scrape]], metric: str, a: int, b: int) -> float:
    (ta, sa), (tb, sb) = own[a], own[b]
    return (sb.value(metric) - sa.value(metric)) / (tb - ta)


async def _queries(prom: PrometheusServer, control: PrometheusServer, s: Session) -> None:
    selector = s.steady_selector
    s.steady_rates = [
        (off, await prom.query_value(f"sum(rate({selector}[10s]))", at=s.start + off))
        for off in STEADY_EVAL
    ]
    pairs = [
        (a, b)
        for a in range(len(s.own))
        for b in range(a + 1, len(s.own))
        if abs(s.own[b][0] - s.own[a][0] - 10.0) < 0.5
    ]
    for metric in RATE_METRICS:
        s.sum_rates[metric] = [
            (
                await prom.query_value(f"sum(rate({metric}[10s]))", at=s.own[b][0]),
                _own_rate(s.own, metric, a, b),
            )
            for a, b in pairs
        ]
    s.steady_ingested = await prom.query_value(f"sum({selector})")
    s.all_rate = await prom.query_value("sum(rate(tcp_open_total[10s]))", at=s.start + 15)
    s.min_open_connections = await prom.query_value(
        'min_over_time(sum(tcp_open_connections{direction="outbound",peer="src"})[17s:1s])',
        at=s.end - 1,
    )
    up = await prom.query_range('up{job="proxy"}', s.start, s.end, 1.0)
    s.up = [v for series in up for v in series.values]
    s.excess = await prom.excess_samples("proxy", s.start, s.end + 1)
    s.untyped = await prom.untyped_metrics("proxy")
    s.rejected = await prom.rejected_samples()
    s.control_excess = await control.excess_samples("control", s.start - 10, s.end + 1)
    s.control_untyped = await control.untyped_metrics("control")


async def run_session(workdir: Path) -> Session:
    s = Session()
    with trio.fail_after(DURATION + 60):
        async with trio.open_nursery() as nursery, open_traffic_proxy() as env:
            steady_backend = await serve_tcp(nursery, echo_handler)
            control_addr = await serve_tcp(nursery, _serve_control)
            s.steady_target = str(steady_backend)

            async def steady(env: TrafficEnv) -> None:
                await exchange(env, env.outbound, steady_backend)

            async def own_scrapes(t0: float) -> None:
                s.own = await _scrape_at(env, t0, s.start, OWN_SCRAPES)

            main_target = ScrapeTarget("proxy", env.proxy.addrs.admin)
            control_target = ScrapeTarget("control", control_addr)
            async with (
                open_prometheus([main_target], workdir=workdir / "main", max_runtime=120) as prom,
                open_prometheus(
                    [control_target], workdir=workdir / "control", max_runtime=120
                ) as control,
            ):
                await prom.wait_for_scrapes(1, timeout=20)
                release = trio.Event()
                nursery.start_soon(_hold_open, env, release)
                t0, s.start = trio.current_time(), time.time()
                async with trio.open_nursery() as traffic:
                    traffic.start_soon(
                        functools.partial(
                            run_paced,
                            run_every_kind,
                            env,
                            rate=BACKGROUND_ROUNDS_PER_S,
                            duration=DURATION,
                        )
                    )
                    traffic.start_soon(own_scrapes, t0)
                    starts = await run_paced(steady, env, rate=RATE, duration=DURATION)
                s.steady_connections = len(starts)
                s.steady_lateness = max(st - (starts[0] + i / RATE) for i, st in enumerate(starts))
                s.end = time.time()
                release.set()
                await prom.wait_for_scrape_after(s.end + 0.5, timeout=10)
                await _queries(prom, control, s)
                s.final = await env.proxy.scrape()
                s.log = prom.log()
                s.problems = prom.ingestion_problems()
            nursery.cancel_scope.cancel()
    return s


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Session:
    require_tools(("prometheus",))
    return trio.run(run_session, tmp_path_factory.mktemp("prometheus"))


def test_prometheus_scraped_the_proxy_every_second(session: Session) -> None:
    assert len(session.up) >= DURATION - 2, session.up
    assert set(session.up) == {1.0}, session.up


def test_no_duplicate_or_out_of_order_warning_in_the_log(session: Session) -> None:
    assert session.problems == [], "\n".join(session.problems)
    warnings = [line for line in session.log.splitlines() if "level=warn" in line]
    assert [w for w in warnings if "scrape" in w] == [], "\n".join(warnings)
    assert session.rejected == dict.fromkeys(session.rejected, 0.0)


def test_every_scraped_sample_is_its_own_series(session: Session) -> None:
    # Evaluated every 250 ms over the run: samples in the scrape minus series stored.
    assert len(session.excess) >= 4 * (DURATION - 2)
    assert set(session.excess) == {0.0}, sorted(set(session.excess))
    for _, scrape in session.own:
        assert scrape.duplicates() == []
    assert session.last_scrape.duplicates() == []


def test_the_duplicate_check_catches_a_duplicated_series(session: Session) -> None:
    # The control target prints dup_total{a="1"} twice: Prometheus logs nothing,
    # the sample-count comparison sees one sample too many in every scrape.
    assert session.control_excess, "the control target was never scraped"
    assert set(session.control_excess) == {1.0}


def test_every_ingested_metric_is_typed_under_its_own_name(session: Session) -> None:
    assert session.untyped == []
    # ... and the check does flag an OpenMetrics counter served as text/plain.
    assert session.control_untyped == ["om_cpu_seconds_total"]


def test_tcp_open_rate_is_the_known_connection_rate(session: Session) -> None:
    assert session.steady_connections == RATE * DURATION
    assert session.steady_lateness < 0.25, "the generator fell behind its schedule"
    for offset, rate in session.steady_rates:
        assert rate is not None, f"no rate at +{offset}s"
        assert rate == pytest.approx(RATE, rel=RATE_TOLERANCE), (offset, rate)
    # Every steady connection was ingested, exactly.
    proxy_count = session.last_scrape.value(
        "tcp_open_total", direction="outbound", peer="src", target_addr=session.steady_target
    )
    assert session.steady_ingested == proxy_count == RATE * DURATION


def test_sum_of_all_tcp_open_rates(session: Session) -> None:
    # The steady connections alone open two series per connection (src and dst).
    assert session.all_rate is not None
    assert session.all_rate > 2 * RATE * (1 - RATE_TOLERANCE)
    _check_sum_rates(session, "tcp_open_total")


def test_request_total_rate(session: Session) -> None:
    if not list(session.last_scrape.find("request_total")):
        pytest.skip(
            "request_total is not exported yet: no HTTP traffic kind in TRAFFIC_KINDS "
            "(linkerd_proxy.testing.traffic); this runs once one produces it"
        )
    _check_sum_rates(session, "request_total")


def test_a_connection_held_open_is_seen_in_every_scrape(session: Session) -> None:
    assert session.min_open_connections is not None
    assert session.min_open_connections >= 1


def _check_sum_rates(session: Session, metric: str) -> None:
    """Prometheus's ``sum(rate(metric[10s]))`` against the test's own scrapes."""
    pairs = session.sum_rates[metric]
    assert pairs, "no pair of own scrapes 10 s apart"
    for prom_rate, own_rate in pairs:
        assert own_rate > 0, f"no {metric} traffic"
        assert prom_rate is not None
        assert prom_rate == pytest.approx(own_rate, rel=RATE_TOLERANCE), (prom_rate, own_rate)


async def test_harness_reports_an_early_exit_with_the_log(tmp_path: Path) -> None:
    require_tools(("prometheus",))
    target = ScrapeTarget("x", SocketAddr.parse("127.0.0.1:9"))
    with pytest.raises(PrometheusError, match="exited with") as info:
        async with open_prometheus([target], workdir=tmp_path, extra_args=["--no-such-flag"]):
            pytest.fail("must not start")
    assert "no-such-flag" in str(info.value)


async def test_harness_stops_prometheus_when_the_test_fails(tmp_path: Path) -> None:
    require_tools(("prometheus",))
    target = ScrapeTarget("x", SocketAddr.parse("127.0.0.1:9"))
    with pytest.raises(RuntimeError, match="test failed"):
        async with open_prometheus([target], workdir=tmp_path) as prom:
            assert prom.process.returncode is None
            raise RuntimeError("test failed")
    assert prom.process.returncode is not None
    with pytest.raises(OSError):
        await prom.api("query", {"query": "up"}, timeout=1.0)


def test_config_needs_unique_job_names() -> None:
    target = ScrapeTarget("x", SocketAddr.parse("127.0.0.1:9"))
    with pytest.raises(ValueError, match="unique"):
        render_config([target, target])


async def test_harness_bounds_the_runtime(tmp_path: Path) -> None:
    require_tools(("prometheus",))
    target = ScrapeTarget("x", SocketAddr.parse("127.0.0.1:9"))
    async with open_prometheus([target], workdir=tmp_path, max_runtime=1.0) as prom:
        with trio.fail_after(10):
            await prom.process.wait()
        assert prom.timed_out
