"""The identity certificate metrics: ``control_identity_cert_*``.

Part of the identity client (``identity/``), on the proxy's own metrics registry
(``linkerd_proxy.metrics``); pure: no I/O, no trio. The Certify loop
(``identity/certify.py``) records each attempt here:

- ``control_identity_cert_expiration_timestamp_seconds``: when the current
  certificate expires (seconds since the UNIX epoch; 0 before the first one).
- ``control_identity_cert_refresh_timestamp_seconds``: when the current certificate
  was installed (0 before the first one).
- ``control_identity_cert_refreshes_total{result="ok"|"error"}``: Certify attempts
  by outcome. Both series exist from the start at 0, as in the reference.

The families never expire under ``METRICS_RETAIN_IDLE``: a certificate lasts a day
and is refreshed every ~17 hours, far longer than the default retention of idle
series, and these are the series an operator alerts on.

Timestamps are floats, which the registry's integer :class:`~linkerd_proxy.metrics.Gauge`
does not hold, so this module adds a small float gauge family of its own.
"""

from __future__ import annotations

import enum
from typing import Any

from linkerd_proxy.metrics.labels import NO_LABELS, NoLabels
from linkerd_proxy.metrics.registry import (
    Counter,
    CounterFamily,
    Family,
    Registry,
    Series,
    format_value,
)

EXPIRATION = "control_identity_cert_expiration_timestamp_seconds"
REFRESH = "control_identity_cert_refresh_timestamp_seconds"
REFRESHES = "control_identity_cert_refreshes_total"


class RefreshResult(enum.Enum):
    """``result="ok"|"error"``: how one Certify attempt ended."""

    OK = "ok"
    ERROR = "error"

    def render(self) -> str:
        return f'result="{self.value}"'


class FloatGauge(Series):
    """A gauge holding a float (a timestamp)."""

    __slots__ = ("value",)

    def __init__(self, family: Family[Any, Any], key: str, now: float) -> None:
        super().__init__(family, key, now)
        self.value = 0.0

    def set(self, value: float) -> None:
        self.value = value
        if self.stale:
            self._touch()


class FloatGaugeFamily(Family[NoLabels, FloatGauge]):
    """A family of float gauges, rendered with :func:`format_value`."""

    kind = "gauge"
    series_type = FloatGauge

    def _render_series(self, out: list[str], key: str, series: FloatGauge) -> None:
        value = format_value(series.value)
        out.append(f"{self.name}{{{key}}} {value}\n" if key else f"{self.name} {value}\n")


class IdentityMetrics:
    """The three identity families, registered on ``registry``.

    Args:
        registry: the proxy's metrics registry.

    Raises:
        ValueError: the families are already registered on ``registry``.
    """

    def __init__(self, registry: Registry) -> None:
        self._expiry = registry.register(
            FloatGaugeFamily(
                EXPIRATION,
                "Time when this proxy's current mTLS identity certificate will expire "
                "(in seconds since the UNIX epoch)",
                expires=False,
            )
        ).get(NO_LABELS)
        self._refreshed = registry.register(
            FloatGaugeFamily(
                REFRESH,
                "Time when this proxy's current mTLS identity certificate was last updated",
                expires=False,
            )
        ).get(NO_LABELS)
        refreshes: CounterFamily[RefreshResult] = registry.register(
            CounterFamily(
                REFRESHES,
                "The total number of times this proxy's mTLS identity certificate has "
                "been refreshed by the Identity provider",
                expires=False,
            )
        )
        self._ok: Counter = refreshes.get(RefreshResult.OK)
        self._error: Counter = refreshes.get(RefreshResult.ERROR)

    def certified(self, *, now: float, expiry: float) -> None:
        """Record a certificate installed at ``now`` expiring at ``expiry`` (epoch seconds)."""
        self._ok.inc()
        self._refreshed.set(now)
        self._expiry.set(expiry)

    def failed(self) -> None:
        """Record a failed attempt (the current certificate, if any, stays)."""
        self._error.inc()

    @property
    def expiration_timestamp(self) -> float:
        return self._expiry.value

    @property
    def refresh_timestamp(self) -> float:
        return self._refreshed.value

    def refreshes(self, result: RefreshResult) -> int:
        """The count of attempts that ended with ``result``."""
        return (self._ok if result is RefreshResult.OK else self._error).value


__all__ = ["EXPIRATION", "REFRESH", "REFRESHES", "IdentityMetrics", "RefreshResult"]
