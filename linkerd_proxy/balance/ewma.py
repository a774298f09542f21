"""PeakEWMA: the per-endpoint load estimate the P2C balancer compares (pure).

Sits under :mod:`linkerd_proxy.balance.balancer`: every endpoint in a pool has one
:class:`PeakEwma`. The estimate is the reference's (tower's ``PeakEwma``, as
``linkerd/proxy/balance`` configures it), restated in seconds:

- the RTT estimate starts at ``default_rtt`` (30 ms; floored at 1 ms so a fresh
  endpoint never looks free) when the endpoint joins the pool;
- a sample ``rtt`` (request start to completion) *larger* than the current
  estimate replaces it at once (the "peak");
- a smaller sample is blended in: with ``w = exp(-elapsed / decay)``, where
  ``elapsed`` is the time since the estimate was last touched, the estimate
  becomes ``estimate * w + rtt * (1 - w)``;
- reading the load first decays the estimate towards zero, as a zero sample at
  ``now`` would (``estimate * w``); tower does this on every read and so do we,
  so an endpoint that is not used slowly becomes attractive again;
- the load is ``estimate * (pending + 1)``, where ``pending`` counts requests
  started on the endpoint and not yet completed: the pending-request penalty
  that makes P2C spread concurrent requests.

No I/O, no trio: every method takes ``now`` (seconds on any monotonic clock), so
tests drive it by hand.
"""

from __future__ import annotations

import math

import attrs

__all__ = ["DEFAULT_DECAY", "DEFAULT_RTT", "MIN_DEFAULT_RTT", "EwmaConfig", "PeakEwma", "Pending"]

#: The reference's default RTT for a fresh endpoint (30 ms).
DEFAULT_RTT = 0.030
#: The reference's decay time constant (10 s).
DEFAULT_DECAY = 10.0
#: The floor for ``default_rtt``: a near-zero seed would make a new endpoint look free.
MIN_DEFAULT_RTT = 0.001
#: The floor for ``decay`` (avoids dividing by zero).
MIN_DECAY = 0.001


@attrs.frozen
class EwmaConfig:
    """PeakEWMA parameters, in seconds (hashable: it can sit in a target).

    Raises:
        ValueError: a value is negative or not finite.
    """

    default_rtt: float = attrs.field(default=DEFAULT_RTT, converter=float)
    decay: float = attrs.field(default=DEFAULT_DECAY, converter=float)

    def __attrs_post_init__(self) -> None:
        for name in ("default_rtt", "decay"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"invalid EWMA {name}: {value!r}")


class PeakEwma:
    """The load estimate of one endpoint.

    Args:
        config: default RTT and decay.
        now: the time the endpoint joined the pool (the estimate's timestamp).
    """

    __slots__ = ("_decay", "estimate", "pending", "updated_at")

    def __init__(self, config: EwmaConfig, now: float) -> None:
        self._decay = max(config.decay, MIN_DECAY)
        self.estimate = max(config.default_rtt, MIN_DEFAULT_RTT)
        self.updated_at = now
        self.pending = 0

    def _observe(self, rtt: float, now: float) -> float:
        if self.estimate < rtt:
            self.estimate = rtt
        else:
            elapsed = max(0.0, now - self.updated_at)
            w = math.exp(-elapsed / self._decay)
            self.estimate = self.estimate * w + rtt * (1.0 - w)
        self.updated_at = max(self.updated_at, now)
        return self.estimate

    def load(self, now: float) -> float:
        """The cost of sending one more request here: decayed estimate x (pending + 1).

        Decays the stored estimate to ``now`` (tower's read-side decay).
        """
        return self._observe(0.0, now) * (self.pending + 1)

    def start(self, now: float) -> Pending:
        """Count a request as started at ``now``; complete the returned handle once."""
        self.pending += 1
        return Pending(self, now)

    def observe(self, rtt: float, now: float) -> None:
        """Fold one RTT sample (seconds) into the estimate at ``now``."""
        self._observe(max(0.0, rtt), now)


class Pending:
    """One request in flight on an endpoint (tower's ``Handle``)."""

    __slots__ = ("_ewma", "done", "sent_at")

    def __init__(self, ewma: PeakEwma, sent_at: float) -> None:
        self._ewma = ewma
        self.sent_at = sent_at
        self.done = False

    def complete(self, now: float) -> None:
        """The request is complete: record ``now - sent_at``. Idempotent."""
        if self.done:
            return
        self.done = True
        self._ewma.pending -= 1
        self._ewma.observe(now - self.sent_at, now)
