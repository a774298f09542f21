"""A real Prometheus server on loopback, for tests that prove the metrics end to end.

Part of the public test harness (next to :func:`~linkerd_proxy.testing.open_proxy`):
:func:`open_prometheus` starts the ``prometheus`` binary (Debian package
``prometheus``) as a subprocess of the trio test, with a generated configuration
scraping the targets you give it, its TSDB in a scratch directory and its web API on
``127.0.0.1:<free port>``. :class:`PrometheusServer` then queries its HTTP API
(``urllib`` in a worker thread: nothing to install), reads its log, and reports
what went wrong while ingesting: the "duplicate sample" / "out of order" class of
warnings that a broken exposition (linkerd2#13821) produces.

Example::

    async with open_proxy(orig_dst=backend) as proxy:
        targets = [ScrapeTarget("proxy", proxy.addrs.admin)]
        async with open_prometheus(targets, scrape_interval=1.0) as prom:
            await prom.wait_for_scrapes(3)
            ...  # traffic
            assert prom.ingestion_problems() == []
            rate = await prom.query_value("sum(rate(tcp_open_total[10s]))")

The process is stopped (SIGTERM, then SIGKILL) when the block is left, also when
the test fails or is cancelled, and after ``max_runtime`` seconds whatever the test
(or the test runner) does: ``timeout(1)`` runs it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import trio

from linkerd_proxy.addrs import SocketAddr
from linkerd_proxy.testing.prometheus_config import (
    RangeSeries,
    ScrapeTarget,
    VectorSample,
    free_loopback_port,
    render_config,
)
from linkerd_proxy.testing.scrape import Scrape

#: Log lines (lower-cased) that mean samples were dropped while ingesting.
PROBLEM_PATTERNS: tuple[str, ...] = (
    "duplicate sample",
    "same timestamp",
    "out of order",
    "out-of-order",
    "out of bounds",
    "out-of-bounds",
)

#: Prometheus's own counters of samples it rejected while ingesting scrapes.
REJECTION_COUNTERS: tuple[str, ...] = (
    "prometheus_target_scrapes_sample_duplicate_timestamp_total",
    "prometheus_target_scrapes_sample_out_of_order_total",
    "prometheus_target_scrapes_sample_out_of_bounds_total",
    "prometheus_tsdb_out_of_order_samples_total",
)


#: ``timeout(1)``'s exit status when ``max_runtime`` ran out.
TIMED_OUT = 124


class PrometheusError(RuntimeError):
    """Prometheus did not start, exited early, or its API answered with an error."""


#: Series Prometheus writes itself for every scrape (not part of the exposition).
SYNTHETIC_SERIES = "up|scrape_.+"
_PART_SUFFIX = re.compile(r"_(bucket|sum|count)$")


def _get_json(url: str, timeout: float) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as rsp:
            return json.load(rsp)
    except urllib.error.HTTPError as e:
        # The API answers 400/422/503 with a JSON error body.
        body = e.read()
        try:
            return json.loads(body)
        except ValueError:
            raise PrometheusError(f"GET {url}: {e.code} {body[:200]!r}") from e


def _get_text(url: str, timeout: float) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as rsp:
        text: str = rsp.read().decode("utf-8")
        return text


@attrs.define
class PrometheusServer:
    """A running Prometheus started by :func:`open_prometheus`.

    Attributes:
        addr: where its web UI and API listen (127.0.0.1).
        workdir: its scratch directory (``prometheus.yml``, ``data/``, ``prometheus.log``).
        process: the subprocess.
    """

    addr: SocketAddr
    workdir: Path
    process: trio.Process

    @property
    def timed_out(self) -> bool:
        """True if ``max_runtime`` ran out and ``timeout(1)`` stopped Prometheus."""
        return self.process.returncode == TIMED_OUT

    @property
    def url(self) -> str:
        return f"http://{self.addr}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "prometheus.log"

    def log(self) -> str:
        """Everything Prometheus has logged so far (stdout and stderr)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def ingestion_problems(self, target: str | None = None) -> list[str]:
        """Log lines saying samples were dropped (duplicate, out of order, out of bounds).

        Args:
            target: only lines that mention this text (e.g. a target's ``addr``);
                every problem line when ``None``.
        """
        lines = []
        for line in self.log().splitlines():
            low = line.lower()
            if any(p in low for p in PROBLEM_PATTERNS) and (target is None or target in line):
                lines.append(line)
        return lines

    async def api(
        self,
        path: str,
        params: Mapping[str, str] | None = None,
        *,
        timeout: float = 10.0,  # noqa: ASYNC109 (a bound on the urllib call in a thread)
    ) -> Any:
        """GET ``/api/v1/<path>?<params>`` and return its ``data``.

        Raises:
            PrometheusError: the API answered ``status: error``.
            OSError: the server could not be reached within ``timeout``.
        """
        params = dict(params or {})
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        url = f"{self.url}/api/v1/{path}{query}"
        reply = await trio.to_thread.run_sync(_get_json, url, timeout)
        if reply.get("status") != "success":
            raise PrometheusError(
                f"{path} {params}: {reply.get('errorType')}: {reply.get('error')}"
            )
        return reply["data"]

    async def query(self, promql: str, at: float | None = None) -> list[VectorSample]:
        """Evaluate an instant query (at Unix time ``at``, default now).

        Returns:
            The instant vector (a scalar result comes back as one label-less sample).

        Raises:
            PrometheusError: a bad query, or a result that is neither vector nor scalar.
        """
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = await self.api("query", params)
        kind = data["resultType"]
        if kind == "scalar":
            ts, value = data["result"]
            return [VectorSample({}, float(ts), float(value))]
        if kind != "vector":
            raise PrometheusError(f"{promql!r}: expected a vector, got {kind}")
        return [
            VectorSample(dict(r["metric"]), float(r["value"][0]), float(r["value"][1]))
            for r in data["result"]
        ]

    async def query_value(self, promql: str, at: float | None = None) -> float | None:
        """The single value of a query, or ``None`` when the result is empty.

        Raises:
            PrometheusError: the result has more than one element.
        """
        result = await self.query(promql, at)
        if not result:
            return None
        if len(result) > 1:
            raise PrometheusError(f"{promql!r}: {len(result)} results, expected one")
        return result[0].value

    async def query_range(
        self, promql: str, start: float, end: float, step: float
    ) -> list[RangeSeries]:
        """Evaluate ``promql`` every ``step`` seconds from ``start`` to ``end`` (Unix times).

        Raises:
            PrometheusError: a bad query.
        """
        data = await self.api(
            "query_range",
            {"query": promql, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step}"},
        )
        return [
            RangeSeries(dict(r["metric"]), tuple((float(t), float(v)) for t, v in r["values"]))
            for r in data["result"]
        ]

    async def excess_samples(self, job: str, start: float, end: float) -> list[float]:
        """Per instant (every 250 ms), samples in ``job``'s latest scrape minus series stored.

        The exposition's sample count (``scrape_samples_scraped``) against the
        number of distinct series Prometheus holds from that scrape: anything above
        0 is a duplicated series, which Prometheus may drop *without logging it*
        (2.42 keeps the first of two same-series samples in one scrape silently).
        Instants before the first scrape give no value.
        """
        selector = f'{{job="{job}",__name__!~"{SYNTHETIC_SERIES}"}}'
        promql = f'scrape_samples_scraped{{job="{job}"}} - on() count({selector})'
        series = await self.query_range(promql, start, end, 0.25)
        return [v for s in series for v in s.values]

    async def untyped_metrics(self, job: str) -> list[str]:
        """Metric names ingested from ``job`` that have no ``# TYPE`` under their name.

        A histogram's (summary's) ``_bucket``/``_sum``/``_count`` series count as
        typed by their family. Prometheus files metadata under the name the TYPE
        line gives, so an OpenMetrics counter served as ``text/plain``
        (``# TYPE x counter`` over ``x_total``) leaves ``x_total`` untyped.
        """
        names: list[str] = await self.api("label/__name__/values", {"match[]": f'{{job="{job}"}}'})
        meta = await self.api("targets/metadata", {"match_target": f'{{job="{job}"}}'})
        types = {m["metric"]: m["type"] for m in meta}
        untyped = []
        for name in names:
            if re.fullmatch(SYNTHETIC_SERIES, name):
                continue
            kind = types.get(name)
            if kind is None:
                family = _PART_SUFFIX.sub("", name)
                kind = types.get(family) if types.get(family) in ("histogram", "summary") else None
            if kind in (None, "unknown", "untyped"):
                untyped.append(name)
        return untyped

    async def targets(self) -> list[dict[str, Any]]:
        """The active targets, as ``/api/v1/targets`` describes them."""
        data = await self.api("targets", {"state": "active"})
        active: list[dict[str, Any]] = data["activeTargets"]
        return active

    async def wait_for_scrapes(self, count: int = 1, timeout: float = 30.0) -> None:  # noqa: ASYNC109
        """Wait until every target has been scraped successfully ``count`` times.

        Counted with the ``up`` series Prometheus writes per scrape.

        Raises:
            PrometheusError: a target is down (the message has its last error), or
                ``timeout`` ran out.
        """
        with trio.move_on_after(timeout):
            while True:
                targets = await self.targets()
                down = [t for t in targets if t.get("health") == "down"]
                if down:
                    errors = [f"{t['scrapeUrl']}: {t.get('lastError')}" for t in down]
                    raise PrometheusError(f"targets down: {errors}")
                ups = await self.query("count_over_time(up[1h])")
                counts = [s.value for s in ups]
                if targets and len(counts) == len(targets) and min(counts) >= count:
                    return
                await trio.sleep(0.2)
        raise PrometheusError(f"targets not scraped {count} times within {timeout}s")

    async def wait_for_scrape_after(self, when: float, timeout: float = 30.0) -> None:  # noqa: ASYNC109
        """Wait until every target has been scraped after Unix time ``when``.

        Raises:
            PrometheusError: ``timeout`` ran out first.
        """
        with trio.move_on_after(timeout):
            while True:
                stamps = await self.query("timestamp(up)")
                if stamps and min(s.value for s in stamps) > when:
                    return
                await trio.sleep(0.2)
        raise PrometheusError(f"no scrape of every target after {when} within {timeout}s")

    async def self_scrape(self) -> Scrape:
        """Prometheus's own ``/metrics``, parsed."""
        text = await trio.to_thread.run_sync(_get_text, f"{self.url}/metrics", 10.0)
        return Scrape.parse(text)

    async def rejected_samples(self) -> dict[str, float]:
        """Prometheus's counters of rejected samples (:data:`REJECTION_COUNTERS`)."""
        scrape = await self.self_scrape()
        return {name: scrape.value(name) for name in REJECTION_COUNTERS}


async def _wait_ready(server: PrometheusServer, timeout: float) -> None:  # noqa: ASYNC109
    url = f"{server.url}/-/ready"
    with trio.move_on_after(timeout):
        while server.process.returncode is None:
            try:
                await trio.to_thread.run_sync(_get_text, url, 2.0)
                return
            except OSError:
                await trio.sleep(0.05)
        raise PrometheusError(
            f"prometheus exited with {server.process.returncode}:\n{server.log()[-3000:]}"
        )
    raise PrometheusError(f"prometheus not ready within {timeout}s:\n{server.log()[-3000:]}")


async def _stop(process: trio.Process, grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL to the whole process group (``timeout`` and Prometheus)."""
    if process.returncode is None:
        process.terminate()
        with trio.move_on_after(grace):
            await process.wait()
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()


def _command(binary: str, max_runtime: float, args: Sequence[str]) -> list[str]:
    # The runtime bound is enforced by timeout(1), outside this process: it holds
    # even if the test runner is killed. Without timeout(1), _stop still applies.
    timeout = shutil.which("timeout")
    if timeout is None:
        return [binary, *args]
    return [timeout, "--kill-after=5", f"{max_runtime}", binary, *args]


@contextlib.asynccontextmanager
async def open_prometheus(
    targets: Sequence[ScrapeTarget],
    *,
    scrape_interval: float = 1.0,
    binary: str = "prometheus",
    workdir: Path | None = None,
    startup_timeout: float = 30.0,
    max_runtime: float = 300.0,
    log_level: str = "info",
    extra_args: Sequence[str] = (),
) -> AsyncIterator[PrometheusServer]:
    """Start Prometheus scraping ``targets``; yield it; stop it and clean up on exit.

    Args:
        targets: what to scrape (one job each).
        scrape_interval: seconds between scrapes (also the scrape timeout).
        binary: the ``prometheus`` executable.
        workdir: where to put the config, TSDB and log (kept, e.g. pytest's
            ``tmp_path``); default a temporary directory removed on exit.
        startup_timeout: how long to wait for ``/-/ready``.
        max_runtime: Prometheus is stopped after this many seconds whatever happens
            (by ``timeout(1)``, so even if this process dies; see
            :attr:`PrometheusServer.timed_out`).
        log_level: ``--log.level`` (``debug`` also logs each dropped sample).
        extra_args: more command-line flags.

    Raises:
        PrometheusError: it exited early or was not ready within ``startup_timeout``.
        FileNotFoundError: ``binary`` is not installed.

    Cancellation:
        The process is stopped (SIGTERM, then SIGKILL to its process group after
        5 s) in a shielded scope, so a cancelled or failed test still reaps it.
    """
    own_dir = workdir is None
    root = Path(tempfile.mkdtemp(prefix="prometheus-")) if workdir is None else workdir
    try:
        root.mkdir(parents=True, exist_ok=True)
        (root / "prometheus.yml").write_text(render_config(targets, scrape_interval))
        # A port picked here can be taken before Prometheus binds it: retry then.
        for attempt in range(3):
            port = free_loopback_port()
            args = [
                f"--config.file={root / 'prometheus.yml'}",
                f"--storage.tsdb.path={root / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                f"--log.level={log_level}",
                *extra_args,
            ]
            with (root / "prometheus.log").open("ab") as log_file:
                process = await trio.lowlevel.open_process(
                    _command(binary, max_runtime, args),
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            server = PrometheusServer(SocketAddr.parse(f"127.0.0.1:{port}"), root, process)
            try:
                try:
                    await _wait_ready(server, startup_timeout)
                except PrometheusError:
                    if attempt < 2 and "address already in use" in server.log():
                        continue
                    raise
                yield server
                return
            finally:
                with trio.CancelScope(shield=True):
                    await _stop(process)
    finally:
        if own_dir:
            shutil.rmtree(root, ignore_errors=True)


__all__ = [
    "PROBLEM_PATTERNS",
    "REJECTION_COUNTERS",
    "SYNTHETIC_SERIES",
    "TIMED_OUT",
    "PrometheusError",
    "PrometheusServer",
    "RangeSeries",
    "ScrapeTarget",
    "VectorSample",
    "free_loopback_port",
    "open_prometheus",
    "render_config",
]
