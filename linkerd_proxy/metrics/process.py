"""Process and build metrics, on a prometheus-client registry.

The prometheus-client side of the metrics layer: ``process_*`` (the library's
process collector plus ``process_threads``, which it lacks and the reference has)
and ``proxy_build_info{date,git_sha,profile,vendor,version} 1`` (label order as the
reference encodes its ``BuildInfo`` struct). ``expose.render`` prints this registry
after the legacy families. Pure: reads ``/proc`` at scrape time, no trio.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator
from pathlib import Path

import attrs
from prometheus_client import CollectorRegistry, Gauge, ProcessCollector
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

import linkerd_proxy

VENDOR = "linkerd-proxy-py"


@attrs.frozen
class BuildInfo:
    """What ``proxy_build_info`` reports."""

    date: str
    git_sha: str
    profile: str
    vendor: str
    version: str

    @classmethod
    def current(cls) -> BuildInfo:
        """This build: package version, best-effort git sha and date, ``release``.

        ``git_sha`` is read from the source checkout's ``.git`` when there is one
        (``"unknown"`` otherwise); ``date`` is the package's modification time
        (build or install time) in RFC 3339 UTC.
        """
        pkg = Path(linkerd_proxy.__file__).resolve().parent
        return cls(
            date=_package_date(pkg),
            git_sha=_git_sha(pkg.parent / ".git"),
            profile="release",
            vendor=VENDOR,
            version=linkerd_proxy.__version__,
        )


def _package_date(pkg: Path) -> str:
    try:
        mtime = (pkg / "__init__.py").stat().st_mtime
    except OSError:
        return "unknown"
    when = datetime.datetime.fromtimestamp(int(mtime), tz=datetime.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _git_sha(git_dir: Path) -> str:
    """Resolve ``HEAD`` without running git (loose ref, then packed-refs)."""
    try:
        head = (git_dir / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head if _is_sha(head) else "unknown"
        ref = head[5:]
        ref_file = git_dir / ref
        if ref_file.is_file():
            sha = ref_file.read_text().strip()
            return sha if _is_sha(sha) else "unknown"
        packed = git_dir / "packed-refs"
        if packed.is_file():
            for line in packed.read_text().splitlines():
                sha, _, name = line.partition(" ")
                if name == ref and _is_sha(sha):
                    return sha
    except OSError:
        pass
    return "unknown"


def _is_sha(text: str) -> bool:
    return len(text) in (40, 64) and all(c in "0123456789abcdef" for c in text)


class ThreadsCollector(Collector):
    """``process_threads``: the number of OS threads (Linux ``/proc``)."""

    def __init__(self, proc: Path = Path("/proc/self/task")) -> None:
        self._proc = proc

    def collect(self) -> Iterator[Metric]:
        try:
            count = len(os.listdir(self._proc))
        except OSError:
            return
        yield GaugeMetricFamily("process_threads", "Number of OS threads in the process.", count)


def register_process_metrics(registry: CollectorRegistry) -> None:
    """Register ``process_*`` (CPU, memory, fds, start time, threads) on ``registry``."""
    ProcessCollector(registry=registry)
    registry.register(ThreadsCollector())


def register_build_info(registry: CollectorRegistry, info: BuildInfo | None = None) -> None:
    """Register ``proxy_build_info`` (a constant 1 with the build's labels)."""
    info = info or BuildInfo.current()
    gauge = Gauge(
        "proxy_build_info",
        "Proxy build info",
        ["date", "git_sha", "profile", "vendor", "version"],
        registry=registry,
    )
    gauge.labels(info.date, info.git_sha, info.profile, info.vendor, info.version).set(1)


def new_prom_registry(info: BuildInfo | None = None) -> CollectorRegistry:
    """A prometheus-client registry with the process and build-info metrics."""
    registry = CollectorRegistry(auto_describe=True)
    register_process_metrics(registry)
    register_build_info(registry, info)
    return registry
