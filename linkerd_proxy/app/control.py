"""Config -> the control-plane clients the stacks use (when a control plane is set).

``app.run`` imports this module only when identity, discovery or policy is
configured: what it brings (grpclib on trio-asyncio, the generated API,
cryptography) is ~20 MiB resident that a standalone proxy never uses.

Discovery (``DESTINATION_SVC_ADDR``) and policy (``POLICY_SVC_ADDR``) run over the
gRPC bridge. Until identity lands, their addresses must be loopback (plaintext, as
the reference allows); anything else is refused at startup (see
``app.run.check_supported``).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator

import attrs
import trio

from linkerd_proxy.admin.state import Readiness
from linkerd_proxy.app.config import Config
from linkerd_proxy.discovery.policy import policy_is_fatal
from linkerd_proxy.grpc.bridge import Bridge, open_bridge
from linkerd_proxy.grpc.client import ControlClient, StreamLimits
from linkerd_proxy.grpc.dns import DnsResolver, DnsSettings
from linkerd_proxy.identity.certify import CertifySettings, control_certifier, run_certify
from linkerd_proxy.identity.metrics import IdentityMetrics
from linkerd_proxy.identity.store import IdentityStore, certify_client_context
from linkerd_proxy.outbound.control import OutboundControl
from linkerd_proxy.outbound.discover import DiscoveryClients
from linkerd_proxy.outbound.logical import Discoveries
from linkerd_proxy.transport.backoff import ExponentialBackoff

#: Reconnect backoff of control-plane streams (the reference's control backoff).
CONTROL_BACKOFF = ExponentialBackoff(0.1, 10.0, 0.1)


def _resolver(config: Config) -> DnsResolver:
    return DnsResolver(DnsSettings(min_ttl=config.dns.min_ttl, max_ttl=config.dns.max_ttl))


@attrs.frozen
class ControlPlane:
    """The gRPC bridge to the control plane and the clients built on it."""

    config: Config
    bridge: Bridge

    def start_identity(
        self,
        store: IdentityStore,
        csr_der: bytes,
        *,
        readiness: Readiness,
        metrics: IdentityMetrics,
        background: trio.Nursery,
    ) -> None:
        """Start the Certify loop in ``background`` (readiness is set by the first cert)."""
        ident = self.config.identity
        assert ident is not None
        client = ControlClient(
            self.bridge,
            ident.svc.addr,
            resolver=_resolver(self.config),
            backoff=CONTROL_BACKOFF,
            # A loopback identity service without a name is plaintext, as the
            # reference allows; otherwise TLS verified as IDENTITY_SVC_NAME.
            ssl_context=certify_client_context(ident.trust_anchors_pem)
            if ident.svc.identity
            else None,
            server_name=ident.svc.identity,
        )
        settings = CertifySettings(
            ident.token_file,
            csr_der,
            min_refresh=ident.min_refresh,
            max_refresh=ident.max_refresh,
        )
        background.start_soon(
            functools.partial(
                run_certify,
                control_certifier(client, timeout=10.0),
                store,
                settings,
                readiness=readiness,
                metrics=metrics,
            )
        )

    def outbound_control(
        self, background: trio.Nursery, identity: IdentityStore | None = None
    ) -> OutboundControl | None:
        """The outbound discovery state (``None``: no discovery or policy configured).

        With identity, the Destination and Policy clients use mTLS with the current
        certificate (build this after the first certificate).
        """
        config, bridge = self.config, self.bridge
        if config.destination is None and config.policy is None:
            return None
        ssl_context = identity.control_client_context() if identity is not None else None
        cs = config.control_stream
        limits = StreamLimits(
            initial=cs.initial_timeout, idle=cs.idle_timeout, lifetime=cs.lifetime
        )
        resolver = _resolver(config)
        dst = policy = None
        if config.destination is not None:
            dst = ControlClient(
                bridge,
                config.destination.svc.addr,
                resolver=resolver,
                backoff=CONTROL_BACKOFF,
                ssl_context=ssl_context if config.destination.svc.identity else None,
                server_name=config.destination.svc.identity,
                limits=limits,
            )
        if config.policy is not None:
            policy = ControlClient(
                bridge,
                config.policy.svc.addr,
                resolver=resolver,
                backoff=CONTROL_BACKOFF,
                ssl_context=ssl_context if config.policy.svc.identity else None,
                server_name=config.policy.svc.identity,
                limits=limits,
                is_fatal=policy_is_fatal,
            )
        d = config.destination
        clients = DiscoveryClients(
            destination=dst,
            policy=policy,
            context_token=d.context if d is not None else "",
            workload=config.policy.workload if config.policy is not None else "",
            profile_suffixes=d.profile_suffixes if d is not None else frozenset(),
            profile_networks=d.profile_networks if d is not None else frozenset(),
            detect_timeout=config.outbound.detect_timeout,
        )
        discoveries = Discoveries(
            clients,
            idle=config.outbound.discovery_idle_timeout,
            failfast=config.outbound.http_failfast_timeout,
            background=background,
        )
        return OutboundControl(discoveries, dst, clients.context_token, identity)


@contextlib.asynccontextmanager
async def open_control_plane(config: Config) -> AsyncIterator[ControlPlane]:
    """Open the gRPC bridge for the control plane ``config`` names.

    Open it *outside* the nursery whose tasks use it: every call must have
    finished before the bridge closes.
    """
    async with open_bridge() as bridge:
        yield ControlPlane(config, bridge)
