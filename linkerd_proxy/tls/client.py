"""Outbound mTLS: the client side of a connection to a meshed endpoint.

SPEC.md section 6: SNI is the endpoint's server name (its identity by default), the
chain is verified against the trust anchors without hostname checking, and the
endpoint's identity must be among the leaf's SANs. When ALPN
``transport.l5d.io/v1`` is negotiated, the caller writes the transport header.
"""

from __future__ import annotations

import ssl

import trio

from linkerd_proxy.identity.store import check_server_identity
from linkerd_proxy.tls.stream import TlsStream


async def connect_tls(
    stream: trio.abc.Stream,
    context: ssl.SSLContext,
    *,
    server_name: str,
    server_id: str,
    timeout: float,  # noqa: ASYNC109 (bounded handshake, raises TooSlowError)
) -> TlsStream:
    """Wrap ``stream`` in TLS and check that the server is ``server_id``.

    Raises:
        trio.TooSlowError: the handshake did not finish in time.
        trio.BrokenResourceError: the handshake failed.
        PeerIdentityMismatch: the server is not ``server_id``.
    """
    tls = TlsStream(stream, context, server_hostname=server_name)
    with trio.fail_after(timeout):
        await tls.do_handshake()
    check_server_identity(tls, server_id)
    return tls


def negotiated_alpn(tls: TlsStream) -> str | None:
    """The ALPN protocol the handshake settled on, if any."""
    return tls.selected_alpn_protocol()
