"""The identity client: the proxy's certificate and the TLS contexts built on it.

Where it sits: above the control-plane gRPC client (``grpc/``) and the identity
files (``tls/identity_files.py``: ``key.p8``, ``csr.der``, trust anchors); below
the data path (inbound TLS termination, outbound mTLS) and the Destination and
Policy clients, which take ``ssl.SSLContext`` objects from the store, and the admin
server, whose ``/ready`` waits for the first certificate.

- ``store``: :class:`IdentityStore` (key, current certificate, anchors; server,
  client and control contexts rebuilt on every new certificate) and the peer
  identity checks :func:`check_server_identity` / :func:`peer_identity`.
- ``certify``: :func:`run_certify`, the Certify-and-refresh loop.
- ``metrics``: ``control_identity_cert_*``.

The data path imports ``store`` (for :data:`TRANSPORT_ALPN` and the
:class:`IdentityStore` type) even in a proxy without identity, and importing
``store`` runs this module first; so the ``certify`` names, which bring the gRPC
client and the generated API, are loaded here on first use only.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from linkerd_proxy.identity.certify import (
        CERTIFY,
        CERTIFY_CODEC,
        Certifier,
        CertifySettings,
        certify_once,
        control_certifier,
        read_token,
        refresh_delay,
        run_certify,
    )
from linkerd_proxy.identity.metrics import IdentityMetrics, RefreshResult
from linkerd_proxy.identity.store import (
    TRANSPORT_ALPN,
    Credentials,
    IdentityStore,
    PeerCertSource,
    certify_client_context,
    check_server_identity,
    peer_identities,
    peer_identity,
)

__all__ = [
    "CERTIFY",
    "CERTIFY_CODEC",
    "TRANSPORT_ALPN",
    "Certifier",
    "CertifySettings",
    "Credentials",
    "IdentityMetrics",
    "IdentityStore",
    "PeerCertSource",
    "RefreshResult",
    "certify_client_context",
    "certify_once",
    "check_server_identity",
    "control_certifier",
    "peer_identities",
    "peer_identity",
    "read_token",
    "refresh_delay",
    "run_certify",
]

_CERTIFY_NAMES = frozenset(
    {
        "CERTIFY",
        "CERTIFY_CODEC",
        "Certifier",
        "CertifySettings",
        "certify_once",
        "control_certifier",
        "read_token",
        "refresh_delay",
        "run_certify",
    }
)


def __getattr__(name: str) -> Any:
    if name not in _CERTIFY_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module("linkerd_proxy.identity.certify"), name)
    globals()[name] = value
    return value
