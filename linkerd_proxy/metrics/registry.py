"""Metric families, series handles and the registry (with METRICS_RETAIN_IDLE).

This is the middle of the metrics layer (pure: no I/O, no trio). A family maps the
*rendered* text of a label set (see ``labels.py``) to one series; nothing richer is
ever a key, so two label values that print alike are one series by construction.

Hot path: a connection or request resolves its series handle once
(``family.get(labels)``); updates are then attribute arithmetic on the handle
(``inc()``, ``add(n)``, ``observe(v)``), with no lookup, no rendering and no clock
read. Freshness is tracked with a flag the first update after each scrape clears;
the scrape (``Registry.render``) turns that into a timestamp and evicts series idle
for longer than ``retain_idle`` unless a handle *holds* them (``hold()`` /
``release()``, e.g. the series of an open connection). An evicted handle that is
updated again puts itself back, so a stale handle never loses counts silently.

Values render as the reference's legacy text does: integers without ``.0``,
counters wrap past 2**53, bucket bounds as ``le="1"``, ``le="0.5"``, ``le="+Inf"``.
"""

from __future__ import annotations

import bisect
import itertools
import math
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar, Generic, TypeVar

from linkerd_proxy.metrics.labels import LabelSet, is_label_name, join

L = TypeVar("L", bound=LabelSet)
S = TypeVar("S", bound="Series")
F = TypeVar("F", bound="Family[Any, Any]")

# The reference wraps counters so Prometheus' f64 never loses precision.
_MAX_PRECISE = 2**53

#: Linkerd's legacy latency histogram bounds, in milliseconds (+Inf is implicit).
LATENCY_MS_BUCKETS: tuple[float, ...] = (
    1, 2, 3, 4, 5, 10, 20, 30, 40, 50, 100, 200, 300, 400, 500,
    1_000, 2_000, 3_000, 4_000, 5_000, 10_000, 20_000, 30_000, 40_000, 50_000,
)  # fmt: skip


def format_value(value: float) -> str:
    """Render a sample value as the reference does (``1``, ``0.5``, ``+Inf``)."""
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    if value.is_integer():
        return str(int(value))
    return repr(value)


def _wrap(n: int) -> int:
    return n % (_MAX_PRECISE + 1) if n > _MAX_PRECISE else n


class Series:
    """State shared by every series handle: freshness, holds, eviction.

    ``stale`` is true once a scrape has seen the series without an update since;
    the next update clears it through :meth:`_touch` (a method call once per
    scrape interval, a boolean test otherwise).
    """

    __slots__ = ("__weakref__", "_family", "_key", "evicted", "held", "stale", "touched")

    def __init__(self, family: Family[Any, Any], key: str, now: float) -> None:
        self._family = family
        self._key = key
        self.touched = now
        self.stale = False
        self.evicted = False
        self.held = 0

    def _touch(self) -> None:
        self.stale = False
        if self.evicted:
            self._family._revive(self)

    def hold(self) -> None:
        """Pin the series: it is not evicted while held, however long it idles."""
        self.held += 1
        self._touch()

    def release(self) -> None:
        """Undo one :meth:`hold`; idle time counts from the next scrape on."""
        if self.held > 0:
            self.held -= 1
        self.stale = False

    @property
    def key(self) -> str:
        """The rendered label text this series is keyed by."""
        return self._key


class Counter(Series):
    """A monotonically increasing integer."""

    __slots__ = ("value",)

    def __init__(self, family: Family[Any, Any], key: str, now: float) -> None:
        super().__init__(family, key, now)
        self.value = 0

    def inc(self) -> None:
        self.value += 1
        if self.stale:
            self._touch()

    def add(self, n: int) -> None:
        self.value += n
        if self.stale:
            self._touch()


class Gauge(Series):
    """An integer that goes up and down."""

    __slots__ = ("value",)

    def __init__(self, family: Family[Any, Any], key: str, now: float) -> None:
        super().__init__(family, key, now)
        self.value = 0

    def inc(self) -> None:
        self.value += 1
        if self.stale:
            self._touch()

    def dec(self) -> None:
        self.value -= 1
        if self.stale:
            self._touch()

    def set(self, value: int) -> None:
        self.value = value
        if self.stale:
            self._touch()


class Histogram(Series):
    """Per-bucket counts (not cumulative) plus the sum of observations."""

    __slots__ = ("_bounds", "counts", "sum")

    def __init__(self, family: Family[Any, Any], key: str, now: float) -> None:
        super().__init__(family, key, now)
        assert isinstance(family, HistogramFamily)
        self._bounds: tuple[float, ...] = family.buckets
        self.counts = [0] * (len(self._bounds) + 1)
        self.sum: float = 0

    def observe(self, value: float) -> None:
        """Count ``value`` in the first bucket whose bound is ``>= value``."""
        self.counts[bisect.bisect_left(self._bounds, value)] += 1
        self.sum += value
        if self.stale:
            self._touch()


class Family(Generic[L, S]):
    """All series of one metric name, keyed by rendered label text."""

    kind: ClassVar[str]
    series_type: ClassVar[type[Series]]

    def __init__(self, name: str, help: str, *, expires: bool = True) -> None:
        if not is_label_name(name) or name.startswith("__"):
            raise ValueError(f"invalid metric name: {name!r}")
        self.name = name
        self.help = help
        self.expires = expires
        self._series: dict[str, S] = {}
        # Evicted series some handle still references: `get` and updates revive
        # the very same object, so one key never has two live series objects.
        self._evicted: weakref.WeakValueDictionary[str, S] = weakref.WeakValueDictionary()
        self._clock: Callable[[], float] = time.monotonic

    def get(self, labels: L) -> S:
        """Resolve the series for ``labels``, creating it if needed.

        Resolve once per connection or request and keep the handle; this renders
        the labels and does a dict lookup.
        """
        key = labels.render()
        series = self._series.get(key)
        if series is None:
            series = self._evicted.pop(key, None)
            if series is None:
                series = self._new(key)
            else:
                series.evicted = False
            self._series[key] = series
        series.stale = False
        return series

    def _new(self, key: str) -> S:
        return self.series_type(self, key, self._clock())  # type: ignore[return-value]

    def _revive(self, series: Series) -> None:
        series.evicted = False
        self._evicted.pop(series.key, None)
        self._series[series.key] = series  # type: ignore[assignment]

    def __len__(self) -> int:
        return len(self._series)

    def __iter__(self) -> Iterator[S]:
        return iter(list(self._series.values()))

    def sweep(self, now: float, retain_idle: float | None) -> None:
        """Stamp series updated since the last sweep; evict idle, unheld ones."""
        evict: list[str] = []
        for key, series in list(self._series.items()):
            if not series.stale:
                series.touched = now
                series.stale = True
            elif (
                self.expires
                and retain_idle is not None
                and series.held == 0
                and now - series.touched >= retain_idle
            ):
                evict.append(key)
        for key in evict:
            series = self._series.pop(key)
            series.evicted = True
            self._evicted[key] = series

    def render(self, out: list[str]) -> None:
        """Append this family's text (nothing at all when it has no series)."""
        series = list(self._series.items())
        if not series:
            return
        out.append(f"# HELP {self.name} {self.help}\n# TYPE {self.name} {self.kind}\n")
        for key, s in series:
            self._render_series(out, key, s)

    def _render_series(self, out: list[str], key: str, series: S) -> None:
        raise NotImplementedError

    def _line(self, out: list[str], key: str, value: int) -> None:
        out.append(f"{self.name}{{{key}}} {value}\n" if key else f"{self.name} {value}\n")


class CounterFamily(Family[L, Counter]):
    """A family of counters; name it with its ``_total`` suffix, as the reference does."""

    kind = "counter"
    series_type = Counter

    def _render_series(self, out: list[str], key: str, series: Counter) -> None:
        self._line(out, key, _wrap(series.value))


class GaugeFamily(Family[L, Gauge]):
    """A family of gauges."""

    kind = "gauge"
    series_type = Gauge

    def _render_series(self, out: list[str], key: str, series: Gauge) -> None:
        self._line(out, key, series.value)


class HistogramFamily(Family[L, Histogram]):
    """A family of histograms with fixed bucket bounds (``+Inf`` implicit)."""

    kind = "histogram"
    series_type = Histogram

    def __init__(
        self, name: str, help: str, buckets: Sequence[float], *, expires: bool = True
    ) -> None:
        super().__init__(name, help, expires=expires)
        bounds = tuple(buckets)
        if not bounds or any(b >= c for b, c in itertools.pairwise(bounds)):
            raise ValueError("histogram buckets must be non-empty and strictly increasing")
        if math.isinf(bounds[-1]):
            bounds = bounds[:-1]
        self.buckets = bounds
        self._le = [f'le="{format_value(b)}"' for b in bounds] + ['le="+Inf"']

    def _render_series(self, out: list[str], key: str, series: Histogram) -> None:
        name = self.name
        total = 0
        for le, n in zip(self._le, series.counts, strict=True):
            total += n
            out.append(f"{name}_bucket{{{join(key, le)}}} {_wrap(total)}\n")
        if key:
            out.append(f"{name}_count{{{key}}} {_wrap(total)}\n")
            out.append(f"{name}_sum{{{key}}} {format_value(series.sum)}\n")
        else:
            out.append(f"{name}_count {_wrap(total)}\n")
            out.append(f"{name}_sum {format_value(series.sum)}\n")


class Registry:
    """An ordered set of uniquely named families, rendered in registration order.

    Instances are independent (tests make their own); the binary makes one.

    Args:
      retain_idle: seconds after which a series that was not updated (and is not
        held) is removed at the next render; ``None`` keeps series forever.
        ``METRICS_RETAIN_IDLE`` (default 10 minutes) sets it.
      clock: monotonic time source, injected by tests.
    """

    def __init__(
        self, *, retain_idle: float | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.retain_idle = retain_idle
        self._clock = clock
        self._families: dict[str, Family[Any, Any]] = {}

    def register(self, family: F) -> F:
        """Add ``family``.

        Raises:
          ValueError: a family of that name exists (names cannot duplicate either).
        """
        if family.name in self._families:
            raise ValueError(f"metric family already registered: {family.name}")
        family._clock = self._clock
        self._families[family.name] = family
        return family

    def counter(self, name: str, help: str, *, expires: bool = True) -> CounterFamily[L]:
        """Register and return a counter family (annotate the label type at the call)."""
        fam: CounterFamily[L] = CounterFamily(name, help, expires=expires)
        self.register(fam)
        return fam

    def gauge(self, name: str, help: str, *, expires: bool = True) -> GaugeFamily[L]:
        """Register and return a gauge family."""
        fam: GaugeFamily[L] = GaugeFamily(name, help, expires=expires)
        self.register(fam)
        return fam

    def histogram(
        self, name: str, help: str, buckets: Sequence[float], *, expires: bool = True
    ) -> HistogramFamily[L]:
        """Register and return a histogram family with ``buckets`` bounds."""
        fam: HistogramFamily[L] = HistogramFamily(name, help, buckets, expires=expires)
        self.register(fam)
        return fam

    def families(self) -> list[Family[Any, Any]]:
        return list(self._families.values())

    def sweep(self) -> None:
        """Run retain-idle bookkeeping now (``render`` does it too)."""
        now = self._clock()
        for family in list(self._families.values()):
            family.sweep(now, self.retain_idle)

    def render(self) -> str:
        """The legacy text of every family, then sweep idle series.

        Like the reference, eviction happens after rendering, so a series is
        exported at least once after its last update.
        """
        out: list[str] = []
        for family in list(self._families.values()):
            family.render(out)
        self.sweep()
        return "".join(out)
