"""Tests for linkerd_proxy.metrics.registry: families, rendering, retain-idle."""

from __future__ import annotations

import attrs
import pytest

from linkerd_proxy.metrics.labels import NO_LABELS, NoLabels, join, label
from linkerd_proxy.metrics.registry import (
    LATENCY_MS_BUCKETS,
    CounterFamily,
    GaugeFamily,
    HistogramFamily,
    Registry,
    format_value,
)


@attrs.frozen
class K:
    k: str

    def render(self) -> str:
        return label("k", self.k)


@attrs.frozen
class Status:
    code: int

    def render(self) -> str:
        return join(label("status_code", self.code))


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_counter_family_renders_help_type_once() -> None:
    reg = Registry()
    fam = reg.register(CounterFamily[K]("request_total", "Total count of HTTP requests."))
    fam.get(K("a")).inc()
    fam.get(K("b")).add(41)
    fam.get(K("b")).inc()
    assert reg.render() == (
        "# HELP request_total Total count of HTTP requests.\n"
        "# TYPE request_total counter\n"
        'request_total{k="a"} 1\n'
        'request_total{k="b"} 42\n'
    )


def test_empty_family_renders_nothing() -> None:
    reg = Registry()
    reg.register(CounterFamily[K]("a_total", "A"))
    gauge = reg.register(GaugeFamily[K]("b", "B"))
    assert reg.render() == ""
    gauge.get(K("x")).set(-3)
    assert reg.render() == '# HELP b B\n# TYPE b gauge\nb{k="x"} -3\n'


def test_unlabelled_series_has_no_braces() -> None:
    reg = Registry()
    fam = reg.register(CounterFamily[NoLabels]("x_total", "X"))
    fam.get(NO_LABELS).inc()
    assert reg.render().splitlines()[-1] == "x_total 1"


def test_duplicate_family_name_rejected() -> None:
    reg = Registry()
    reg.counter("x_total", "X")
    with pytest.raises(ValueError, match="already registered"):
        reg.gauge("x_total", "again")
    with pytest.raises(ValueError):
        reg.counter("bad name", "X")


def test_same_labels_one_series_one_handle() -> None:
    fam: CounterFamily[K] = CounterFamily("x_total", "X")
    a, b = fam.get(K("same")), fam.get(K("same"))
    assert a is b
    assert len(fam) == 1


def test_histogram_cumulative_buckets_and_le_format() -> None:
    reg = Registry()
    fam = reg.register(
        HistogramFamily[Status]("response_latency_ms", "Latency.", LATENCY_MS_BUCKETS)
    )
    h = fam.get(Status(200))
    for ms in (0, 1, 2, 7, 10, 50_000, 60_000):
        h.observe(ms)
    lines = reg.render().splitlines()
    assert lines[:2] == [
        "# HELP response_latency_ms Latency.",
        "# TYPE response_latency_ms histogram",
    ]
    buckets = [ln for ln in lines if "_bucket" in ln]
    assert len(buckets) == 26
    assert buckets[0] == 'response_latency_ms_bucket{status_code="200",le="1"} 2'
    assert buckets[1] == 'response_latency_ms_bucket{status_code="200",le="2"} 3'
    assert buckets[5] == 'response_latency_ms_bucket{status_code="200",le="10"} 5'
    assert buckets[15] == 'response_latency_ms_bucket{status_code="200",le="1000"} 5'
    assert buckets[24] == 'response_latency_ms_bucket{status_code="200",le="50000"} 6'
    assert buckets[25] == 'response_latency_ms_bucket{status_code="200",le="+Inf"} 7'
    assert lines[-2:] == [
        'response_latency_ms_count{status_code="200"} 7',
        'response_latency_ms_sum{status_code="200"} 110020',
    ]


def test_histogram_fractional_bounds_and_no_labels() -> None:
    fam: HistogramFamily[NoLabels] = HistogramFamily("d_seconds", "D", [0.05, 0.5, 1, 10])
    h = fam.get(NO_LABELS)
    h.observe(0.05)
    h.observe(0.25)
    out: list[str] = []
    fam.render(out)
    text = "".join(out)
    assert 'd_seconds_bucket{le="0.05"} 1\n' in text
    assert 'd_seconds_bucket{le="0.5"} 2\n' in text
    assert 'd_seconds_bucket{le="1"} 2\n' in text
    assert "d_seconds_count 2\nd_seconds_sum 0.3\n" in text
    with pytest.raises(ValueError):
        HistogramFamily("h", "H", [1, 1])


def test_format_value() -> None:
    assert format_value(3) == "3"
    assert format_value(3.0) == "3"
    assert format_value(0.5) == "0.5"
    assert format_value(float("inf")) == "+Inf"


def test_counter_wraps_like_the_reference() -> None:
    reg = Registry()
    fam = reg.register(CounterFamily[K]("x_total", "X"))
    c = fam.get(K("a"))
    c.add(2**53)
    assert reg.render().endswith(f'x_total{{k="a"}} {2**53}\n')
    c.inc()
    assert reg.render().endswith('x_total{k="a"} 0\n')


def test_retain_idle_evicts_series_not_updated() -> None:
    clock = FakeClock()
    reg = Registry(retain_idle=60, clock=clock)
    fam = reg.register(CounterFamily[K]("x_total", "X"))
    fam.get(K("idle")).inc()
    busy = fam.get(K("busy"))
    busy.inc()
    for _ in range(4):  # scrape every 20s; only "busy" keeps being updated
        assert 'k="busy"' in reg.render()
        clock.now += 20
        busy.inc()
    text = reg.render()
    assert 'k="idle"' not in text
    assert 'x_total{k="busy"} 5' in text
    assert len(fam) == 1


def test_retain_idle_exports_once_after_last_update() -> None:
    clock = FakeClock()
    reg = Registry(retain_idle=10, clock=clock)
    fam = reg.register(CounterFamily[K]("x_total", "X"))
    fam.get(K("a")).inc()
    clock.now += 3600  # no scrape for an hour: still exported once, then gone
    assert 'k="a"' in reg.render()
    clock.now += 10
    assert 'k="a"' in reg.render()  # idle 10s now: exported, then evicted
    assert 'k="a"' not in reg.render()


def test_held_series_is_not_evicted() -> None:
    clock = FakeClock()
    reg = Registry(retain_idle=60, clock=clock)
    fam = reg.register(GaugeFamily[K]("open", "Open"))
    held = fam.get(K("held"))
    held.hold()
    held.inc()
    fam.get(K("loose")).inc()
    for _ in range(10):
        reg.render()
        clock.now += 30
    text = reg.render()
    assert 'open{k="held"} 1' in text
    assert 'k="loose"' not in text
    held.release()
    clock.now += 30
    assert 'open{k="held"} 1' in reg.render()
    clock.now += 61
    assert 'open{k="held"} 1' in reg.render()  # evicted after this last export
    assert reg.render() == ""


def test_no_retain_idle_keeps_everything() -> None:
    clock = FakeClock()
    reg = Registry(retain_idle=None, clock=clock)
    fam = reg.register(CounterFamily[K]("x_total", "X"))
    fam.get(K("a")).inc()
    for _ in range(5):
        reg.render()
        clock.now += 10**6
    assert 'x_total{k="a"} 1' in reg.render()


def test_non_expiring_family_is_kept() -> None:
    clock = FakeClock()
    reg = Registry(retain_idle=1, clock=clock)
    fam = reg.register(CounterFamily[K]("x_total", "X", expires=False))
    fam.get(K("a")).inc()
    reg.render()
    clock.now += 100
    assert 'x_total{k="a"} 1' in reg.render()


def test_evicted_handle_revives_with_its_count() -> None:
    clock = FakeClock()
    reg = Registry(retain_idle=5, clock=clock)
    fam = reg.register(CounterFamily[K]("x_total", "X"))
    kept = fam.get(K("a"))
    kept.add(7)
    reg.render()
    clock.now += 10
    reg.render()
    assert len(fam) == 0
    # A stale handle updated again comes back; a fresh lookup finds the same object.
    kept.inc()
    assert fam.get(K("a")) is kept
    assert 'x_total{k="a"} 8' in reg.render()
    # And after eviction, get() resurrects the object a handle still references.
    clock.now += 10
    reg.render()
    clock.now += 10
    reg.render()
    assert len(fam) == 0
    again = fam.get(K("a"))
    assert again is kept
    again.inc()
    assert len(fam) == 1
    assert 'x_total{k="a"} 9' in reg.render()


@attrs.frozen
class Rich:
    """Carries more than it renders (what the label classes must never do)."""

    k: str
    session: int

    def render(self) -> str:
        return label("k", self.k)


def test_series_are_keyed_by_rendered_text_not_by_object() -> None:
    # linkerd2#13821: keys that compare unrendered fields made duplicate series.
    reg = Registry()
    fam = reg.register(CounterFamily[Rich]("x_total", "X"))
    fam.get(Rich("a", session=1)).inc()
    fam.get(Rich("a", session=2)).inc()
    assert len(fam) == 1
    assert reg.render().splitlines()[2:] == ['x_total{k="a"} 2']
