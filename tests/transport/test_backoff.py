"""Backoff: the reference's formula, its bounds, reset."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from linkerd_proxy.transport.backoff import ExponentialBackoff

durations = st.floats(min_value=0.0, max_value=3600.0, allow_nan=False)
jitters = st.floats(min_value=0.0, max_value=100.0, allow_nan=False)
uniforms = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)


def test_doubles_from_min_and_caps_at_max() -> None:
    b = ExponentialBackoff(0.1, 1.0, 0.0)
    delays = list(itertools.islice(b.series(), 7))
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0])


def test_jitter_is_a_ratio_of_the_base_capped_at_max() -> None:
    b = ExponentialBackoff(1.0, 10.0, 0.5)
    draws = iter([0.5, 0.0, 0.99, 0.99])
    series = b.series(lambda: next(draws))
    # base 1 + 0.5*0.5*1; base 2 + 0; base 4 + 0.99*0.5*4; base 8 + min(3.96, 2)
    assert [next(series) for _ in range(4)] == pytest.approx([1.25, 2.0, 5.98, 10.0])


def test_reset_starts_over() -> None:
    series = ExponentialBackoff(1.0, 60.0, 0.0).series()
    assert [next(series) for _ in range(3)] == [1.0, 2.0, 4.0]
    assert series.attempts == 3
    series.reset()
    assert next(series) == 1.0


def test_huge_attempt_counts_stay_finite() -> None:
    b = ExponentialBackoff(0.001, 5.0, 1.0)
    assert b.base(10**6) == 5.0
    assert b.delay(5000, 0.9) == 5.0


@pytest.mark.parametrize(
    ("lo", "hi", "jitter"),
    [
        (2.0, 1.0, 0.0),
        (0.0, 0.0, 0.0),
        (-1.0, 1.0, 0.0),
        (0.1, 1.0, -0.1),
        (0.1, 1.0, 101.0),
        (0.1, 1.0, float("nan")),
        (0.1, float("inf"), 0.0),
    ],
)
def test_invalid_policies_are_rejected(lo: float, hi: float, jitter: float) -> None:
    with pytest.raises(ValueError, match="invalid backoff"):
        ExponentialBackoff(lo, hi, jitter)


def test_hashable_for_targets() -> None:
    assert {ExponentialBackoff(1, 2, 0.5), ExponentialBackoff(1.0, 2.0, 0.5)} == {
        ExponentialBackoff(1, 2, 0.5)
    }


@given(lo=durations, span=durations, jitter=jitters, draws=st.lists(uniforms, max_size=40))
def test_delays_within_bounds_and_bases_non_decreasing(
    lo: float, span: float, jitter: float, draws: list[float]
) -> None:
    hi = lo + span
    if hi == 0:
        return
    b = ExponentialBackoff(lo, hi, jitter)
    bases = [b.base(n) for n in range(len(draws) + 1)]
    assert bases[0] == lo
    assert all(x <= y for x, y in itertools.pairwise(bases))
    values = iter(draws)
    series = b.series(lambda: next(values))
    for _ in draws:
        delay = next(series)
        # The reference caps jitter at max - base, so every delay is in [min, max]
        # (which is inside the looser [min, max * (1 + jitter)]).
        assert lo <= delay <= hi


@given(lo=st.floats(min_value=0.001, max_value=10.0), jitter=st.floats(0.01, 100.0))
def test_positive_jitter_adds_something_below_max(lo: float, jitter: float) -> None:
    b = ExponentialBackoff(lo, lo * 1000, jitter)
    assert b.delay(0, 0.5) > lo
    assert b.delay(0, 0.0) == lo


def test_backoff_module_is_pure() -> None:
    import ast
    import pathlib

    import linkerd_proxy.transport.backoff as module

    tree = ast.parse(pathlib.Path(module.__file__).read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (
            node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")]
        )
    }
    assert "trio" not in imported
    assert "socket" not in imported
