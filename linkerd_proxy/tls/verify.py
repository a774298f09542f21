"""Certificate chain verification for an identity (no I/O, no trio).

Sits beneath the identity client: before the proxy takes a certificate from the
identity service into use, it checks what the reference checks with its
"any SAN" server verifier: the chain (leaf, then intermediates) verifies to the
trust anchors at the given time, and the identity is among the leaf's DNS or
URI SANs (the reference's ``verify_id``). The TLS data path does its own
verification in ``ssl``; this is for certificates the proxy is handed.

Chain building and signature checks are cryptography's
``x509.verification`` (a webpki-style verifier: ECDSA P-256/P-384 and RSA
>= 2048 bits, basic constraints and path lengths, validity periods), with the
extension rules relaxed to what rustls-webpki, the reference's verifier,
enforces: an end entity needs no particular extensions, but an extended key
usage, if present, must allow serverAuth (the certificate serves TLS), and an
end entity must not be a CA; a CA's key usage, if present, must allow signing
certificates.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    Policy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from linkerd_proxy.errors import CertificateVerifyError

__all__ = ["MAX_CHAIN_DEPTH", "identities_of", "identities_of_der", "verify_chain"]

#: Intermediates allowed between the leaf and an anchor (the webpki default).
MAX_CHAIN_DEPTH = 8

_SPIFFE = "spiffe://"

Cert = x509.Certificate | bytes


def _ee_eku(_policy: Policy, _cert: x509.Certificate, eku: x509.ExtendedKeyUsage | None) -> None:
    if eku is not None and ExtendedKeyUsageOID.SERVER_AUTH not in eku:
        raise ValueError("extended key usage does not allow serverAuth")


def _ee_basic_constraints(
    _policy: Policy, _cert: x509.Certificate, bc: x509.BasicConstraints | None
) -> None:
    if bc is not None and bc.ca:
        raise ValueError("end-entity certificate is a CA")


def _ca_key_usage(_policy: Policy, _cert: x509.Certificate, ku: x509.KeyUsage | None) -> None:
    if ku is not None and not ku.key_cert_sign:
        raise ValueError("CA key usage does not allow keyCertSign")


_EE_POLICY = (
    ExtensionPolicy.permit_all()
    .may_be_present(x509.ExtendedKeyUsage, Criticality.AGNOSTIC, _ee_eku)
    .may_be_present(x509.BasicConstraints, Criticality.AGNOSTIC, _ee_basic_constraints)
)
_CA_POLICY = ExtensionPolicy.webpki_defaults_ca().may_be_present(
    x509.KeyUsage, Criticality.AGNOSTIC, _ca_key_usage
)


def _load(cert: Cert, what: str) -> x509.Certificate:
    if isinstance(cert, x509.Certificate):
        return cert
    try:
        return x509.load_der_x509_certificate(cert)
    except ValueError:
        raise CertificateVerifyError(f"{what} is not a DER certificate") from None


def _normalize_dns(name: str) -> str:
    return name.lower().removesuffix(".")


def _sans(cert: x509.Certificate) -> tuple[list[str], list[str]]:
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], []
    return (
        sans.get_values_for_type(x509.DNSName),
        sans.get_values_for_type(x509.UniformResourceIdentifier),
    )


def identities_of(cert: x509.Certificate) -> tuple[str, ...]:
    """The identities a certificate names: its DNS SANs, then its URI SANs.

    Returns:
      The SAN values as written (no SAN extension: an empty tuple).
    """
    dns, uris = _sans(cert)
    return (*dns, *uris)


def identities_of_der(der: bytes) -> tuple[str, ...]:
    """:func:`identities_of` a DER certificate (``()`` if it does not parse)."""
    try:
        return identities_of(x509.load_der_x509_certificate(der))
    except ValueError:
        return ()


def _names_identity(cert: x509.Certificate, identity: str) -> bool:
    dns, uris = _sans(cert)
    if identity.startswith(_SPIFFE):
        return identity in uris
    wanted = _normalize_dns(identity)
    return any(_normalize_dns(name) == wanted for name in dns)


def verify_chain(
    leaf: Cert,
    intermediates: Sequence[Cert],
    anchors: Sequence[x509.Certificate],
    identity: str,
    *,
    now: datetime.datetime | None = None,
) -> datetime.datetime:
    """Check that a certificate chain proves ``identity`` at ``now``.

    Args:
      leaf: the end-entity certificate (parsed or DER).
      intermediates: the certificates between the leaf and an anchor, in any
        order (parsed or DER).
      anchors: the trust anchors.
      identity: a DNS identity (matched case-insensitively against DNS SANs) or
        a ``spiffe://`` URI (matched exactly against URI SANs).
      now: the time of the check (timezone-aware, or naive UTC); the current
        time when None.

    Returns:
      The leaf's expiry (``notAfter``, timezone-aware UTC).

    Raises:
      CertificateVerifyError: a certificate does not parse; the chain does not
        verify to an anchor at ``now`` (a bad signature, an expired or
        not-yet-valid certificate, a CA that may not sign); or the leaf's SANs
        do not include ``identity``.
    """
    if not anchors:
        raise CertificateVerifyError("no trust anchors to verify against")
    leaf_cert = _load(leaf, "leaf certificate")
    chain = [
        _load(cert, f"intermediate certificate #{i + 1}") for i, cert in enumerate(intermediates)
    ]
    at = datetime.datetime.now(datetime.UTC) if now is None else now
    verifier = (
        PolicyBuilder()
        .store(Store(list(anchors)))
        .time(at)
        .max_chain_depth(MAX_CHAIN_DEPTH)
        .extension_policies(ca_policy=_CA_POLICY, ee_policy=_EE_POLICY)
        .build_client_verifier()
    )
    try:
        verifier.verify(leaf_cert, chain)
    except VerificationError as exc:
        raise CertificateVerifyError(f"certificate chain does not verify: {exc}") from None
    if not _names_identity(leaf_cert, identity):
        shown = ", ".join(identities_of(leaf_cert)) or "no DNS or URI SAN"
        raise CertificateVerifyError(f"certificate for {shown} does not match identity {identity}")
    return leaf_cert.not_valid_after_utc
