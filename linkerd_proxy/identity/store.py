"""The proxy's current identity credentials and the TLS contexts built from them.

Part of the identity client (``identity/``): the Certify loop (``certify.py``)
installs each certificate here with :meth:`IdentityStore.set_certificate`; the
data path (inbound TLS termination, outbound mTLS) and the control-plane clients
take ``ssl.SSLContext`` objects from it. Below it: ``tls.verify`` (the chain
check of each new certificate), ``tls.identity_files`` (trust anchors) and the
stdlib ``ssl`` module. No trio.

TLS rules (SPEC section 6), as the reference's rustls configuration has them:

- TLS 1.3 only, no session resumption (no tickets).
- **Server**: presents the current leaf and intermediates; requests a client
  certificate but accepts anonymous clients (``CERT_OPTIONAL``); a presented
  certificate must chain to the trust anchors. It negotiates the ALPN
  ``transport.l5d.io/v1`` when a client offers it (the transport header).
- **Client** (data path): presents the current leaf; verifies the server's chain
  against the anchors **without hostname checking** (SNI may differ from the
  identity), after which the caller checks the expected identity among the leaf's
  DNS/URI SANs with :func:`check_server_identity`.
- **Control clients**: Certify itself goes over TLS without a client certificate
  (:func:`certify_client_context`); Destination and Policy over mTLS
  (:meth:`IdentityStore.control_client_context`). Both check the service's name
  with OpenSSL's hostname check, which for a DNS identity is the same SAN test and
  is what the gRPC library can run during its handshake.

A context is built once per certificate and kept: new connections take the
current one, connections already open keep theirs. The private key reaches OpenSSL
through an anonymous memory file (``memfd_create``); it is never written to a
filesystem (docs/decisions.md, "Identity keys never touch a filesystem").
"""

from __future__ import annotations

import datetime
import os
import ssl
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, Protocol

import attrs

from linkerd_proxy.errors import (
    CertificateVerifyError,
    IdentityFilesError,
    InvalidIdentityCertificate,
    PeerIdentityMismatch,
)

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

# The data path imports this module for TRANSPORT_ALPN and the IdentityStore type
# even when the proxy has no identity. cryptography (its Rust extension and ~60
# modules, ~8 MiB resident) is needed only to parse and verify certificates and
# to serialize the key, so ``tls.verify`` and ``tls.identity_files``, which bring
# it, are imported in the functions that do that: a standalone proxy never loads
# it; a proxy with identity does, when it builds its store.

#: The ALPN protocol that announces the transport header (SPEC section 5).
TRANSPORT_ALPN = "transport.l5d.io/v1"

#: gRPC runs over HTTP/2; the control clients offer it.
_H2 = "h2"


class PeerCertSource(Protocol):
    """Anything with ``getpeercert(binary_form=True)``: ``ssl.SSLObject``,
    ``ssl.SSLSocket``, or a ``trio.SSLStream`` (which forwards it) after its handshake."""

    def getpeercert(self, binary_form: Literal[True]) -> bytes | None: ...


@attrs.frozen
class Credentials:
    """One certificate for the proxy's key.

    Attributes:
        leaf_der: the leaf certificate, DER.
        intermediates_der: the chain from the leaf towards a trust anchor, DER.
        expiry: when it stops being usable, seconds since the UNIX epoch (the
            earlier of the service's ``valid_until`` and the leaf's notAfter).
    """

    leaf_der: bytes
    intermediates_der: tuple[bytes, ...]
    expiry: float


def _base_context(purpose: int) -> ssl.SSLContext:
    ctx = ssl.SSLContext(purpose)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.options |= ssl.OP_NO_TICKET
    return ctx


def certify_client_context(trust_anchors_pem: str) -> ssl.SSLContext:
    """The context for ``Identity.Certify``: anchors, no client certificate, ALPN h2.

    The service's name (``IDENTITY_SVC_NAME``) is checked by hostname verification,
    so pass it as the server name (``ControlClient(server_name=...)``).

    Raises:
        ssl.SSLError: ``trust_anchors_pem`` holds no usable certificate.
    """
    ctx = _base_context(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cadata=trust_anchors_pem)
    ctx.set_alpn_protocols([_H2])
    return ctx


def peer_identities(tls: PeerCertSource) -> tuple[str, ...]:
    """The DNS then URI SANs of the peer's leaf, in certificate order (``()`` if none)."""
    der = tls.getpeercert(binary_form=True)
    if not der:
        return ()
    from linkerd_proxy.tls.verify import identities_of_der  # cryptography: see the top

    return identities_of_der(der)


def peer_identity(tls: PeerCertSource) -> str | None:
    """The peer's identity: the first DNS or URI SAN of its leaf, or ``None``.

    On the server side, ``None`` means an anonymous (unauthenticated) client.
    """
    names = peer_identities(tls)
    return names[0] if names else None


def check_server_identity(tls: PeerCertSource, expected: str) -> str:
    """Require ``expected`` among the DNS/URI SANs of the peer's (verified) leaf.

    Call after the handshake of a connection made with a client context from
    :class:`IdentityStore` (which verified the chain but not any name).

    Returns:
        ``expected``, the identity the peer proved.

    Raises:
        PeerIdentityMismatch: the peer presented no certificate, or one for other
            identities.
    """
    names = peer_identities(tls)
    if not _identity_matches(expected, names):
        raise PeerIdentityMismatch(expected, names)
    return expected


def _key_pem(key: PrivateKeyTypes) -> bytes:
    from linkerd_proxy.tls.identity_files import private_key_pem  # cryptography: see the top

    return private_key_pem(key)


def _load_chain(ctx: ssl.SSLContext, creds: Credentials, key_pem: bytes) -> None:
    """Load leaf, intermediates and key into ``ctx`` through an anonymous memory file.

    ``ssl`` loads a certificate chain and key only by path. A ``memfd`` is a file in
    memory with no name in any filesystem; ``/proc/self/fd/N`` names it for the
    moment of loading, and closing it frees it.
    """
    certs = "".join(ssl.DER_cert_to_PEM_cert(d) for d in (creds.leaf_der, *creds.intermediates_der))
    data = memoryview(certs.encode() + key_pem)
    fd = os.memfd_create("linkerd-identity", os.MFD_CLOEXEC)
    try:
        while data:
            data = data[os.write(fd, data) :]
        ctx.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


class IdentityStore:
    """The local identity: key, current certificate, trust anchors, TLS contexts.

    Args:
        local_name: the proxy's identity (``IDENTITY_LOCAL_NAME``); must be among
            each certificate's SANs.
        trust_anchors_pem: ``IDENTITY_TRUST_ANCHORS``.
        key: the private key (``key.p8``) the CSR was made with.

    Raises:
        InvalidIdentityCertificate: ``trust_anchors_pem`` holds no certificate.
    """

    def __init__(self, local_name: str, trust_anchors_pem: str, key: PrivateKeyTypes) -> None:
        self.local_name = local_name
        self.trust_anchors_pem = trust_anchors_pem
        self._anchors = _load_anchors(trust_anchors_pem)
        self._key_pem = _key_pem(key)
        self._creds: Credentials | None = None
        self._contexts: dict[tuple[str, ...], ssl.SSLContext] = {}
        self.generation = 0

    @property
    def credentials(self) -> Credentials | None:
        """The current certificate, or ``None`` before the first one."""
        return self._creds

    def is_certified(self) -> bool:
        return self._creds is not None

    def set_certificate(
        self,
        leaf_der: bytes,
        intermediates_der: Sequence[bytes],
        valid_until: float,
        *,
        now: float,
    ) -> Credentials:
        """Validate a certificate from the identity service and make it current.

        Args:
            leaf_der: the leaf, DER.
            intermediates_der: its chain up to (not including) an anchor, DER.
            valid_until: the response's ``valid_until``, epoch seconds.
            now: the current time, epoch seconds.

        Returns:
            The installed :class:`Credentials`.

        Raises:
            InvalidIdentityCertificate: already expired; a chain that does not
                verify to the anchors at ``now``; ``local_name`` not among the
                leaf's SANs; a leaf not for this store's key. The current
                certificate then stays.
        """
        if valid_until <= now:
            raise InvalidIdentityCertificate("certificate already expired")
        not_after = _verify_chain(leaf_der, intermediates_der, self._anchors, self.local_name, now)
        creds = Credentials(leaf_der, tuple(intermediates_der), min(valid_until, not_after))
        try:
            server = self._build_server(creds)
            client = self._build_client(creds, ())
        except ssl.SSLError as exc:
            # OpenSSL checks that the leaf's public key is the private key's.
            raise InvalidIdentityCertificate(f"certificate not usable: {exc}") from exc
        self._creds = creds
        self._contexts = {("server",): server, ("client",): client}
        self.generation += 1
        return creds

    def set_trust_anchors(self, trust_anchors_pem: str) -> None:
        """Trust a new bundle of anchors from now on.

        Connections already established keep the TLS state they negotiated; every
        new connection (both directions) and the next certificate are verified
        against the new bundle. A rotation normally ships a bundle holding both
        the old and the new roots, so the current certificate stays valid.

        Raises:
            InvalidIdentityCertificate: ``trust_anchors_pem`` holds no certificate
                (the old bundle stays).
        """
        anchors = _load_anchors(trust_anchors_pem)
        self.trust_anchors_pem = trust_anchors_pem
        self._anchors = anchors
        if self._creds is not None:
            self._contexts = {
                ("server",): self._build_server(self._creds),
                ("client",): self._build_client(self._creds, ()),
            }
        else:
            self._contexts = {}
        self.generation += 1

    # ------------------------------------------------------------------ contexts

    def _current(self) -> Credentials:
        if self._creds is None:
            raise RuntimeError("identity is not certified yet")
        return self._creds

    def _cached(self, key: tuple[str, ...]) -> ssl.SSLContext | None:
        return self._contexts.get(key)

    def server_context(self) -> ssl.SSLContext:
        """The server context of the current certificate (inbound TLS termination).

        Raises:
            RuntimeError: no certificate yet (wait for readiness first).
        """
        self._current()
        return self._contexts[("server",)]

    def client_context(self, *, alpn: Sequence[str] = ()) -> ssl.SSLContext:
        """A data-path client context of the current certificate.

        Args:
            alpn: protocols to offer; ``(TRANSPORT_ALPN,)`` for an endpoint that
                takes the transport header, else nothing (meshed HTTP needs no ALPN).

        Raises:
            RuntimeError: no certificate yet.
        """
        creds = self._current()
        key = ("client", *alpn)
        ctx = self._cached(key)
        if ctx is None:
            ctx = self._contexts[key] = self._build_client(creds, alpn)
        return ctx

    def control_client_context(self) -> ssl.SSLContext:
        """mTLS for the Destination and Policy clients: the current certificate,
        ALPN h2, the server's name checked by hostname verification.

        Raises:
            RuntimeError: no certificate yet.
        """
        creds = self._current()
        key = ("control",)
        ctx = self._cached(key)
        if ctx is None:
            ctx = self._contexts[key] = self._build_control(creds)
        return ctx

    def _build_server(self, creds: Credentials) -> ssl.SSLContext:
        ctx = _base_context(ssl.PROTOCOL_TLS_SERVER)
        ctx.num_tickets = 0
        _load_chain(ctx, creds, self._key_pem)
        ctx.load_verify_locations(cadata=self.trust_anchors_pem)
        ctx.verify_mode = ssl.CERT_OPTIONAL
        ctx.set_alpn_protocols([TRANSPORT_ALPN])
        return ctx

    def _build_client(self, creds: Credentials, alpn: Sequence[str]) -> ssl.SSLContext:
        ctx = _base_context(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_REQUIRED
        _load_chain(ctx, creds, self._key_pem)
        ctx.load_verify_locations(cadata=self.trust_anchors_pem)
        if alpn:
            ctx.set_alpn_protocols(list(alpn))
        return ctx

    def _build_control(self, creds: Credentials) -> ssl.SSLContext:
        ctx = certify_client_context(self.trust_anchors_pem)
        _load_chain(ctx, creds, self._key_pem)
        return ctx


# --------------------------------------------------------------- verification


def _identity_matches(expected: str, names: Sequence[str]) -> bool:
    # As tls.verify matches a certificate: spiffe:// URIs exactly, DNS names
    # without regard to case or a trailing dot.
    if expected.startswith("spiffe://"):
        return expected in names
    wanted = expected.lower().removesuffix(".")
    return any(n.lower().removesuffix(".") == wanted for n in names if ":" not in n)


def _load_anchors(pem: str) -> list[x509.Certificate]:
    from linkerd_proxy.tls.identity_files import load_trust_anchors  # cryptography: see the top

    try:
        return load_trust_anchors(pem)
    except IdentityFilesError as exc:
        raise InvalidIdentityCertificate(str(exc)) from exc


def _verify_chain(
    leaf_der: bytes,
    intermediates_der: Sequence[bytes],
    anchors: Sequence[x509.Certificate],
    identity: str,
    now: float,
) -> float:
    """Verify leaf -> intermediates -> an anchor for ``identity`` at ``now``; notAfter."""
    from linkerd_proxy.tls.verify import verify_chain  # cryptography: see the top

    at = datetime.datetime.fromtimestamp(now, datetime.UTC)
    try:
        not_after = verify_chain(leaf_der, list(intermediates_der), anchors, identity, now=at)
    except CertificateVerifyError as exc:
        raise InvalidIdentityCertificate(str(exc)) from exc
    return not_after.timestamp()


__all__ = [
    "TRANSPORT_ALPN",
    "Credentials",
    "IdentityStore",
    "PeerCertSource",
    "certify_client_context",
    "check_server_identity",
    "peer_identities",
    "peer_identity",
]
