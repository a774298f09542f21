"""PeakEWMA arithmetic against hand-computed values, and the P2C choice."""

from __future__ import annotations

import math
import random

import pytest

from linkerd_proxy.balance.ewma import EwmaConfig, PeakEwma
from linkerd_proxy.balance.p2c import p2c, pick_pair


def test_fresh_endpoint_costs_the_default_rtt() -> None:
    e = PeakEwma(EwmaConfig(), now=0.0)
    assert e.load(0.0) == pytest.approx(0.030)
    # Tower floors a zero seed at 1 ms so a new endpoint never looks free.
    assert PeakEwma(EwmaConfig(default_rtt=0.0), now=0.0).load(0.0) == pytest.approx(0.001)


def test_reads_decay_towards_zero_with_the_time_constant() -> None:
    e = PeakEwma(EwmaConfig(default_rtt=0.030, decay=10.0), now=0.0)
    # 10 s later: 0.030 * e^-1 = 0.0110364...
    assert e.load(10.0) == pytest.approx(0.0110364, rel=1e-5)
    # Reads compose: another 10 s gives 0.030 * e^-2 = 0.0040601...
    assert e.load(20.0) == pytest.approx(0.0040601, rel=1e-4)


def test_pending_requests_multiply_the_cost() -> None:
    e = PeakEwma(EwmaConfig(default_rtt=0.030), now=0.0)
    h1 = e.start(0.0)
    e.start(0.0)
    assert e.pending == 2
    assert e.load(0.0) == pytest.approx(0.090)  # 0.030 * (2 + 1)
    h1.complete(0.0)
    h1.complete(5.0)  # idempotent
    assert e.pending == 1


def test_peak_replaces_and_smaller_samples_blend() -> None:
    e = PeakEwma(EwmaConfig(default_rtt=0.030, decay=10.0), now=0.0)
    h = e.start(0.0)
    h.complete(0.1)  # rtt 100 ms > 30 ms: the peak replaces the estimate
    assert e.estimate == pytest.approx(0.1)
    h = e.start(0.1)
    h.complete(0.12)
    # rtt 20 ms < 100 ms, 20 ms after the last update: w = e^-0.002 = 0.998002
    # 0.1 * 0.998002 + 0.02 * 0.001998 = 0.0998401
    assert e.estimate == pytest.approx(0.0998401, rel=1e-5)
    assert e.load(0.12) == pytest.approx(0.0998401, rel=1e-5)


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        EwmaConfig(default_rtt=-1.0)
    with pytest.raises(ValueError):
        EwmaConfig(decay=math.inf)


def test_pick_pair_is_distinct_and_covers_every_index() -> None:
    rng = random.Random(7)
    seen: set[int] = set()
    for _ in range(500):
        a, b = pick_pair(rng, 5)
        assert a != b
        seen.update((a, b))
    assert seen == set(range(5))
    with pytest.raises(ValueError):
        pick_pair(rng, 1)


def test_p2c_picks_the_less_loaded_of_two() -> None:
    rng = random.Random(1)
    loads = {"a": 5.0, "b": 1.0}
    # With two candidates both are always drawn, so the lighter always wins.
    assert all(p2c(["a", "b"], loads.__getitem__, rng) == "b" for _ in range(100))
    assert p2c([], loads.__getitem__, rng) is None
    assert p2c(["a"], loads.__getitem__, rng) == "a"


def test_p2c_never_picks_the_most_loaded_of_three() -> None:
    rng = random.Random(3)
    loads = [1.0, 2.0, 3.0]
    counts = [0, 0, 0]
    for _ in range(3000):
        i = p2c([0, 1, 2], loads.__getitem__, rng)
        assert i is not None
        counts[i] += 1
    assert counts[2] == 0
    # The lightest wins every pair it is in: 2 of the 3 pairs.
    assert abs(counts[0] / 3000 - 2 / 3) < 0.05
