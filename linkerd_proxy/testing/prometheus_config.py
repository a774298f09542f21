"""What a test tells Prometheus, and what it gets back: targets, results, the config.

The pure half of :mod:`linkerd_proxy.testing.prometheus` (which runs the server and
re-exports everything here): the scrape targets, the query result types, the
generated ``prometheus.yml`` and a free loopback port for the web API.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Sequence

import attrs

from linkerd_proxy.addrs import SocketAddr

__all__ = [
    "RangeSeries",
    "ScrapeTarget",
    "VectorSample",
    "free_loopback_port",
    "render_config",
]


@attrs.frozen
class ScrapeTarget:
    """One thing for Prometheus to scrape: ``http://<addr><path>``, as job ``job``."""

    job: str
    addr: SocketAddr
    path: str = "/metrics"


@attrs.frozen
class VectorSample:
    """One element of an instant-vector query result."""

    labels: dict[str, str] = attrs.field(hash=False)
    timestamp: float
    value: float


@attrs.frozen
class RangeSeries:
    """One series of a range query result: its labels and ``(timestamp, value)`` points."""

    labels: dict[str, str] = attrs.field(hash=False)
    points: tuple[tuple[float, float], ...]

    @property
    def values(self) -> list[float]:
        return [v for _, v in self.points]


def _duration(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


def render_config(targets: Sequence[ScrapeTarget], scrape_interval: float = 1.0) -> str:
    """The ``prometheus.yml`` that scrapes ``targets`` every ``scrape_interval`` seconds.

    It is JSON, which is YAML: no YAML library needed. Each target is its own job
    (jobs must have unique names), with a scrape timeout equal to the interval.
    """
    jobs = [t.job for t in targets]
    if len(set(jobs)) != len(jobs):
        raise ValueError(f"job names must be unique: {jobs}")
    interval = _duration(scrape_interval)
    config = {
        "global": {
            "scrape_interval": interval,
            "scrape_timeout": interval,
            "evaluation_interval": interval,
        },
        "scrape_configs": [
            {
                "job_name": t.job,
                "metrics_path": t.path,
                "static_configs": [{"targets": [str(t.addr)]}],
            }
            for t in targets
        ],
    }
    return json.dumps(config, indent=2) + "\n"


def free_loopback_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago (the caller retries on a race)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
