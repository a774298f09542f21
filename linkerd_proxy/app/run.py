"""Run the proxy: bind the listeners, serve, and shut down gracefully.

This is where everything is wired together; both the binary
(``linkerd_proxy_bin``) and the in-process harness (``linkerd_proxy.testing``)
call :func:`run`.

Order, as the reference's (SPEC.md sections 2 and 10):

1. the admin listener is bound and served first;
2. the inbound and outbound listeners are bound at once (a bind failure is an
   init failure: :func:`run` raises before anything is served);
3. they are served once the proxy can serve them: at once standalone (and then
   ``/ready`` answers 200);
4. on shutdown (SIGTERM/SIGINT in the binary, ``POST /shutdown``, or the
   harness) the listeners stop accepting, connections in flight run to their end,
   and what is left when ``SHUTDOWN_GRACE_PERIOD`` is over is cancelled.

The task tree::

    run
    ├── background nursery: admin server, cache sweepers
    └── connections nursery (grace deadline set at shutdown)
        ├── accept loops (cancelled first at shutdown)
        └── one task per connection
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING

import attrs
import trio

from linkerd_proxy.addrs import SocketAddr
from linkerd_proxy.admin import AdminState, Readiness, serve_admin
from linkerd_proxy.admin.state import LogLevelHandle
from linkerd_proxy.app.config import Config
from linkerd_proxy.app.http_settings import h2_client_settings, server_params
from linkerd_proxy.app.shutdown import Shutdown
from linkerd_proxy.errors import IdentityFilesError
from linkerd_proxy.identity.metrics import IdentityMetrics
from linkerd_proxy.identity.store import IdentityStore
from linkerd_proxy.inbound import InboundServer
from linkerd_proxy.inbound.http import InboundHttp
from linkerd_proxy.metrics import expose
from linkerd_proxy.metrics.errors import (
    InboundHttpErrorMetrics,
    OutboundHttpErrorMetrics,
    TcpErrorMetrics,
)
from linkerd_proxy.metrics.http import HttpMetrics
from linkerd_proxy.metrics.labels import Direction
from linkerd_proxy.metrics.process import ProcessMetrics
from linkerd_proxy.metrics.registry import Registry
from linkerd_proxy.metrics.tcp import TcpMetrics
from linkerd_proxy.outbound import OutboundServer
from linkerd_proxy.outbound.http import OutboundHttp
from linkerd_proxy.transport.listen import TcpListener, open_listener, serve_listener
from linkerd_proxy.transport.orig_dst import OrigDstLookup, orig_dst_addr

if TYPE_CHECKING:
    from linkerd_proxy.app.control import ControlPlane

# The control-plane wiring (``app.control``: grpclib on trio-asyncio, the
# generated API) and the identity files (``tls.identity_files``: cryptography)
# are imported where a proxy with a control plane or identity needs them, not
# at the top: together ~20 MiB resident that a standalone proxy never uses
# (tests/app/test_standalone_imports.py keeps it so).

log = logging.getLogger("linkerd_proxy.app")


class UnsupportedConfig(Exception):
    """The configuration asks for something this build cannot do yet."""


class InitError(Exception):
    """The proxy could not start (identity files unreadable ...)."""


#: How often the proxy says it is still waiting for its first certificate.
CERTIFY_WARNING_INTERVAL = 15.0


async def _wait_certified(readiness: Readiness, shutdown: Shutdown) -> bool:
    """Wait for the first certificate, warning every 15 s; False if shut down first."""
    while True:
        with trio.move_on_after(CERTIFY_WARNING_INTERVAL):
            async with trio.open_nursery() as nursery:

                async def stop_on_shutdown() -> None:
                    await shutdown.wait()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(stop_on_shutdown)
                await readiness.wait()
                nursery.cancel_scope.cancel()
        if readiness.is_ready():
            return True
        if shutdown.is_triggered:
            return False
        log.warning("Waiting for identity to be initialized...")


@attrs.frozen
class BoundAddrs:
    """The addresses the running proxy listens on (ports resolved if 0 was asked)."""

    admin: SocketAddr
    inbound: SocketAddr
    outbound: tuple[SocketAddr, ...]


@attrs.define
class ProxyMetrics:
    """The metric registries and the families the stacks share."""

    registry: Registry
    process: ProcessMetrics
    tcp: TcpMetrics
    http: HttpMetrics
    inbound_errors: TcpErrorMetrics
    outbound_errors: TcpErrorMetrics
    inbound_http_errors: InboundHttpErrorMetrics
    outbound_http_errors: OutboundHttpErrorMetrics

    @classmethod
    def new(cls, retain_idle: float | None) -> ProxyMetrics:
        registry = Registry(retain_idle=retain_idle)
        return cls(
            registry=registry,
            process=ProcessMetrics(),
            tcp=TcpMetrics(registry),
            http=HttpMetrics(registry),
            inbound_errors=TcpErrorMetrics(registry, Direction.INBOUND),
            outbound_errors=TcpErrorMetrics(registry, Direction.OUTBOUND),
            inbound_http_errors=InboundHttpErrorMetrics(registry),
            outbound_http_errors=OutboundHttpErrorMetrics(registry),
        )

    def render(self) -> str:
        return expose.render(self.registry, self.process)


@contextlib.asynccontextmanager
async def _open_control_plane(config: Config) -> AsyncIterator[ControlPlane | None]:
    """The control plane's gRPC bridge, or ``None`` for a standalone proxy."""
    if config.standalone:
        yield None
        return
    from linkerd_proxy.app.control import open_control_plane  # see the top

    async with open_control_plane(config) as plane:
        yield plane


def check_supported(config: Config) -> None:
    """Refuse configurations this build cannot honour, rather than ignore them.

    A proxy that silently skipped mTLS or discovery while the mesh expected them
    would be worse than one that does not start.

    Raises:
        UnsupportedConfig: naming the variable that asks for the missing feature.
    """
    if config.spire_identity is not None:
        raise UnsupportedConfig(
            "SPIRE identity (LINKERD2_PROXY_IDENTITY_SPIRE_WORKLOAD_API_ADDRESS) is not "
            "supported by this build yet"
        )
    # Control-plane TLS needs identity: without it only loopback (plaintext, as
    # the reference allows) control-plane addresses work.
    if config.identity is None:
        for var, svc in (
            ("LINKERD2_PROXY_DESTINATION_SVC_ADDR", config.destination),
            ("LINKERD2_PROXY_POLICY_SVC_ADDR", config.policy),
        ):
            if svc is not None and not svc.svc.is_loopback:
                raise UnsupportedConfig(
                    f"{var}={svc.svc.addr}: a non-loopback control plane needs mTLS, which "
                    "needs identity (LINKERD2_PROXY_IDENTITY_*); use a loopback address"
                )


async def run(
    config: Config,
    *,
    env: Mapping[str, str] | None = None,
    orig_dst: OrigDstLookup = orig_dst_addr,
    shutdown: Shutdown | None = None,
    log_level: LogLevelHandle | None = None,
    metrics: ProxyMetrics | None = None,
    task_status: trio.TaskStatus[BoundAddrs] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a proxy until it is shut down.

    Args:
        config: the configuration (``Config.from_env(os.environ)`` in the binary).
        env: what ``/env.json`` shows (default: this process's environment).
        orig_dst: how to read an accepted connection's original destination
            (default ``SO_ORIGINAL_DST``; the harness injects others).
        shutdown: the trigger to watch (default: a new one, reachable only
            through ``/shutdown`` when that is enabled).
        log_level: the handle behind ``/proxy-log-level`` (``None``: 404 there).
        metrics: the registries to record into (default: new ones).
        task_status: ``started(BoundAddrs)`` once every listener is serving.

    Raises:
        UnsupportedConfig: see :func:`check_supported`.
        OSError: a listener could not be bound.
    """
    check_supported(config)
    shutdown = shutdown or Shutdown()
    metrics = metrics or ProxyMetrics.new(config.metrics_retain_idle)
    if config.tap_svc_name is not None:
        log.warning("tap is disabled: it needs identity (LINKERD2_PROXY_TAP_SVC_NAME is ignored)")

    identity: IdentityStore | None = None
    csr_der = b""
    if config.identity is not None:
        from linkerd_proxy.tls.identity_files import load_identity_dir  # see the top

        try:
            key, csr_der = load_identity_dir(config.identity.dir)
            identity = IdentityStore(
                config.identity.local_name, config.identity.trust_anchors_pem, key
            )
        except (IdentityFilesError, ValueError) as exc:
            raise InitError(f"identity: {exc}") from exc

    listeners: list[TcpListener] = []
    try:
        admin_l = await open_listener(config.admin.listen_addr)
        listeners.append(admin_l)
        accept = config.inbound.accept
        inbound_l = await open_listener(
            config.inbound.listen_addr,
            backlog=accept.backlog,
            keepalive=accept.keepalive,
            user_timeout=accept.user_timeout,
        )
        listeners.append(inbound_l)
        outbound_ls: list[TcpListener] = []
        accept = config.outbound.accept
        for addr in config.outbound.listen_addrs:
            listener = await open_listener(
                addr,
                backlog=accept.backlog,
                keepalive=accept.keepalive,
                user_timeout=accept.user_timeout,
            )
            listeners.append(listener)
            outbound_ls.append(listener)
    except BaseException:
        for listener in listeners:
            await trio.aclose_forcefully(listener)
        raise

    bound = BoundAddrs(
        admin=admin_l.local_addr,
        inbound=inbound_l.local_addr,
        outbound=tuple(lst.local_addr for lst in outbound_ls),
    )
    readiness = Readiness()
    state = AdminState(
        render_metrics=metrics.render,
        readiness=readiness,
        log_level=log_level,
        shutdown=(lambda: shutdown.trigger("/shutdown"))
        if config.shutdown_endpoint_enabled
        else None,
        env=dict(os.environ) if env is None else env,
    )

    async with _open_control_plane(config) as plane, trio.open_nursery() as background:
        await background.start(serve_admin, admin_l, state)
        if identity is not None:
            assert plane is not None
            plane.start_identity(
                identity,
                csr_der,
                readiness=readiness,
                metrics=IdentityMetrics(metrics.registry),
                background=background,
            )
            if not await _wait_certified(readiness, shutdown):
                background.cancel_scope.cancel()
                return
        control = plane.outbound_control(background, identity) if plane is not None else None
        h2_client = h2_client_settings(config.h2.client)
        inbound = InboundServer(
            config.inbound,
            tcp=metrics.tcp,
            errors=metrics.inbound_errors,
            http=InboundHttp(
                config.inbound,
                metrics=metrics.http,
                errors=metrics.inbound_http_errors,
                tcp=metrics.tcp,
                h2_client=h2_client,
                background=background,
            ),
            http_params=server_params(config, inbound=True, drain=shutdown),
            orig_dst=orig_dst,
            listen_addr=bound.inbound,
            background=background,
            identity=identity,
        )
        outbound = OutboundServer(
            config.outbound,
            tcp=metrics.tcp,
            errors=metrics.outbound_errors,
            http=OutboundHttp(
                config.outbound,
                metrics=metrics.http,
                errors=metrics.outbound_http_errors,
                tcp=metrics.tcp,
                h2_client=h2_client,
                background=background,
                control=control,
            ),
            http_params=server_params(config, inbound=False, drain=shutdown),
            opaque_ports=config.inbound.ports_disable_protocol_detection,
            orig_dst=orig_dst,
            listen_addrs=bound.outbound,
            background=background,
            control=control,
        )
        async with trio.open_nursery() as connections:
            async with trio.open_nursery() as accepting:
                serve = functools.partial(serve_listener, handler_nursery=connections)
                await accepting.start(serve, inbound_l, inbound)
                for listener in outbound_ls:
                    await accepting.start(serve, listener, outbound)
                if identity is None:
                    readiness.set_ready()  # standalone: ready at once
                log.info(
                    "proxy ready: admin=%s inbound=%s outbound=%s",
                    bound.admin,
                    bound.inbound,
                    ",".join(str(a) for a in bound.outbound),
                )
                task_status.started(bound)
                await shutdown.wait()
                log.info("shutting down (%s): no longer accepting connections", shutdown.reason)
                accepting.cancel_scope.cancel()
            # Connections in flight run to their end, until the grace period is over.
            connections.cancel_scope.deadline = trio.current_time() + config.shutdown_grace_period
        if connections.cancel_scope.cancelled_caught:
            log.warning(
                "Graceful shutdown did not complete in %ss, terminating now",
                config.shutdown_grace_period,
            )
        else:
            log.info("all connections finished; exiting")
        background.cancel_scope.cancel()
