"""Connecting to a discovered endpoint: plaintext, mTLS, and the transport header.

SPEC.md sections 5 and 6. When discovery gives the endpoint an identity and this
proxy has one, the connection is mTLS: SNI is the endpoint's server name, the chain
is verified against the trust anchors and the identity must be in the leaf's SANs.
When the endpoint also advertises an opaque-transport inbound port (usually 4143),
the proxy connects to that port instead, offers ALPN ``transport.l5d.io/v1``, and,
if negotiated, writes the transport header naming the real port (and, for HTTP, the
session protocol) before any application bytes.

Without an identity from discovery (or without our own), the connection is
plaintext to the endpoint's address.
"""

from __future__ import annotations

import attrs
import trio

from linkerd_proxy.addrs import SocketAddr
from linkerd_proxy.discovery.endpoint import EndpointMeta, ProtocolHint
from linkerd_proxy.identity.store import TRANSPORT_ALPN, IdentityStore
from linkerd_proxy.metrics.labels import ClientTlsEstablished, ClientTlsLabels, NoClientTls
from linkerd_proxy.tcp.forward import Connect
from linkerd_proxy.tls.client import connect_tls, negotiated_alpn
from linkerd_proxy.transport.header import SessionProtocol, TransportHeader


@attrs.frozen
class EndpointConnector:
    """How to open a connection to one endpoint (see the module docstring).

    Attributes:
        addr: the endpoint's application address.
        meta: what discovery said about it.
        dial: opens the TCP connection (timeout and socket options bound in).
        identity: this proxy's identity, or ``None`` (plaintext only).
        handshake_timeout: bound on the TLS handshake.
        session: the session protocol to name in the transport header (HTTP
            endpoints), ``None`` for opaque TCP.
    """

    addr: SocketAddr
    meta: EndpointMeta
    dial: Connect
    identity: IdentityStore | None
    handshake_timeout: float
    session: SessionProtocol | None = None

    @property
    def tls_labels(self) -> ClientTlsLabels:
        """The client TLS labels of connections this connector opens."""
        if self.meta.tls_identity is None or self.identity is None:
            return NoClientTls.NOT_PROVIDED_BY_SERVICE_DISCOVERY
        return ClientTlsEstablished(self.meta.tls_identity.server_id)

    async def __call__(self) -> trio.abc.Stream:
        """Open the connection (TLS and header included).

        Raises:
            ConnectError / ConnectTimeout: TCP failed.
            trio.TooSlowError, trio.BrokenResourceError, PeerIdentityMismatch:
                the TLS handshake failed.
        """
        tls_id = self.meta.tls_identity
        if tls_id is None or self.identity is None or not self.identity.is_certified():
            return await self.dial(self.addr)
        port = self.meta.opaque_transport_port
        target = SocketAddr(self.addr.ip, port) if port else self.addr
        raw = await self.dial(target)
        alpn = (TRANSPORT_ALPN,) if port else ()
        try:
            tls = await connect_tls(
                raw,
                self.identity.client_context(alpn=alpn),
                server_name=tls_id.server_name or tls_id.server_id,
                server_id=tls_id.server_id,
                timeout=self.handshake_timeout,
            )
            if port and negotiated_alpn(tls) == TRANSPORT_ALPN:
                session = self.session
                if self.meta.protocol_hint is ProtocolHint.OPAQUE:
                    session = None
                header = TransportHeader(port=self.addr.port, name=None, protocol=session)
                await tls.send_all(header.encode())
        except BaseException:
            await trio.aclose_forcefully(raw)
            raise
        return tls
