"""Run a real proxy in-process, inside your trio test.

The proxy is the same code the binary runs (:func:`linkerd_proxy.app.run.run`),
with two things made injectable for tests that have no iptables:

* ``orig_dst``: where each accepted connection "was going". Pass a
  :class:`~linkerd_proxy.addrs.SocketAddr` to send every connection there, or any
  ``OrigDstLookup`` callable (see :mod:`linkerd_proxy.transport.orig_dst`).
* the listeners default to ``127.0.0.1:0`` so tests run in parallel without port
  clashes; :attr:`RunningProxy.addrs` has the real ports.

Example::

    async def test_forwarding():
        async with open_proxy(orig_dst=backend_addr) as proxy:
            stream = await trio.open_tcp_stream(*proxy.addrs.outbound[0].to_sockaddr())
            ...
            scrape = await proxy.scrape()
            assert scrape.value("tcp_open_total", direction="outbound") == 1

Leaving the block shuts the proxy down gracefully (bounded by
``shutdown_timeout``) and cancels it if that does not finish in time.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
from collections.abc import AsyncIterator, Mapping

import attrs
import trio

from linkerd_proxy.addrs import SocketAddr
from linkerd_proxy.app.config import Config
from linkerd_proxy.app.run import BoundAddrs, ProxyMetrics, run
from linkerd_proxy.app.shutdown import Shutdown
from linkerd_proxy.testing.scrape import Scrape
from linkerd_proxy.transport.orig_dst import OrigDstLookup, fixed_orig_dst, orig_dst_addr

LOCAL_ANY_PORT = SocketAddr(ipaddress.IPv4Address("127.0.0.1"), 0)


def local_config(config: Config | None = None) -> Config:
    """``config`` (default: the standalone defaults) with every listener on 127.0.0.1:0."""
    config = config or Config()
    return attrs.evolve(
        config,
        admin=attrs.evolve(config.admin, listen_addr=LOCAL_ANY_PORT),
        inbound=attrs.evolve(config.inbound, listen_addr=LOCAL_ANY_PORT),
        outbound=attrs.evolve(config.outbound, listen_addrs=(LOCAL_ANY_PORT,)),
    )


@attrs.define
class HttpResponse:
    """A response from :meth:`RunningProxy.admin_request`."""

    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


@attrs.define
class RunningProxy:
    """A proxy started by :func:`open_proxy`.

    Attributes:
        addrs: the bound addresses (admin, inbound, outbound).
        config: the configuration it runs with.
        metrics: its registries (read them directly, or :meth:`scrape`).
        shutdown: its shutdown trigger.
    """

    addrs: BoundAddrs
    config: Config
    metrics: ProxyMetrics
    shutdown: Shutdown

    async def admin_request(
        self,
        method: str,
        path: str,
        *,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,  # noqa: ASYNC109 (a test harness bound, raises TooSlowError)
    ) -> HttpResponse:
        """Send one HTTP/1.0 request to the admin server and read the whole response.

        Raises:
            trio.TooSlowError: no complete response within ``timeout``.
        """
        head = [f"{method} {path} HTTP/1.0", "Host: localhost", f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        raw = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        with trio.fail_after(timeout):
            stream = await trio.open_tcp_stream(*self.addrs.admin.to_sockaddr())
            async with stream:
                await stream.send_all(raw)
                chunks = []
                while chunk := await stream.receive_some(65536):
                    chunks.append(chunk)
        data = b"".join(chunks)
        head_bytes, _, rest = data.partition(b"\r\n\r\n")
        lines = head_bytes.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        parsed: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            parsed[name.strip().lower()] = value.strip()
        return HttpResponse(status, parsed, rest)

    async def scrape(self) -> Scrape:
        """GET ``/metrics`` and parse it."""
        rsp = await self.admin_request("GET", "/metrics")
        if rsp.status != 200:
            raise RuntimeError(f"/metrics answered {rsp.status}: {rsp.text}")
        return Scrape.parse(rsp.text)


@contextlib.asynccontextmanager
async def open_proxy(
    config: Config | None = None,
    *,
    orig_dst: SocketAddr | OrigDstLookup | None = None,
    env: Mapping[str, str] | None = None,
    shutdown_timeout: float = 10.0,
    bind_locally: bool = True,
) -> AsyncIterator[RunningProxy]:
    """Start a proxy in the current trio run; yield it; shut it down on exit.

    Args:
        config: the configuration (default: standalone defaults).
        orig_dst: a fixed original destination for every connection, or a lookup
            (default: the real ``SO_ORIGINAL_DST``, which needs iptables).
        env: what ``/env.json`` shows (default: empty).
        shutdown_timeout: how long leaving the block waits for a graceful
            shutdown before cancelling the proxy.
        bind_locally: put every listener on ``127.0.0.1:0`` (see
            :func:`local_config`); ``False`` keeps ``config``'s addresses.

    Raises:
        OSError: a listener could not be bound.
    """
    config = config or Config()
    if bind_locally:
        config = local_config(config)
    if isinstance(orig_dst, SocketAddr):
        lookup: OrigDstLookup | None = fixed_orig_dst(orig_dst)
    else:
        lookup = orig_dst
    shutdown = Shutdown()
    metrics = ProxyMetrics.new(config.metrics_retain_idle)
    runner = functools.partial(
        run,
        config,
        env=env or {},
        orig_dst=lookup or orig_dst_addr,
        shutdown=shutdown,
        metrics=metrics,
    )
    async with trio.open_nursery() as nursery:
        addrs: BoundAddrs = await nursery.start(runner)
        try:
            yield RunningProxy(addrs, config, metrics, shutdown)
        finally:
            shutdown.trigger("test harness")
            nursery.cancel_scope.deadline = trio.current_time() + shutdown_timeout
