"""Chain verification: certificates made here (a root, an intermediate, leaves)."""

from __future__ import annotations

import datetime

import attrs
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from linkerd_proxy.errors import CertificateVerifyError
from linkerd_proxy.tls.verify import identities_of, verify_chain

NOW = datetime.datetime(2030, 6, 1, 12, 0, tzinfo=datetime.UTC)
HOUR = datetime.timedelta(hours=1)
ID = "web.default.serviceaccount.identity.linkerd.cluster.local"
SPIFFE_ID = "spiffe://cluster.local/ns/default/sa/web"


@attrs.frozen
class Issuer:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _cert(
    subject: str,
    public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
    issuer: Issuer | None,
    signing_key: CertificateIssuerPrivateKeyTypes,
    *,
    ca: bool,
    sans: list[x509.GeneralName] | None = None,
    not_before: datetime.datetime = NOW - 24 * HOUR,
    not_after: datetime.datetime = NOW + 24 * HOUR,
    eku: list[x509.ObjectIdentifier] | None = None,
    key_usage_cert_sign: bool = True,
    with_key_usage: bool = True,
    with_basic_constraints: bool = True,
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.cert.subject if issuer else name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    if ca and with_basic_constraints:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=True, path_length=None), critical=True
        )
    if ca and with_key_usage:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=key_usage_cert_sign,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def _root(name: str = "root") -> Issuer:
    key = _key()
    return Issuer(_cert(name, key.public_key(), None, key, ca=True), key)


def _intermediate(root: Issuer, *, key_usage_cert_sign: bool = True) -> Issuer:
    key = _key()
    cert = _cert(
        "issuer", key.public_key(), root, root.key, ca=True, key_usage_cert_sign=key_usage_cert_sign
    )
    return Issuer(cert, key)


def _leaf(
    issuer: Issuer,
    sans: list[x509.GeneralName] | None = None,
    *,
    not_before: datetime.datetime = NOW - 24 * HOUR,
    not_after: datetime.datetime = NOW + 24 * HOUR,
    eku: list[x509.ObjectIdentifier] | None = None,
) -> x509.Certificate:
    return _cert(
        "leaf",
        _key().public_key(),
        issuer,
        issuer.key,
        ca=False,
        sans=[x509.DNSName(ID)] if sans is None else sans,
        not_before=not_before,
        not_after=not_after,
        eku=eku,
    )


@pytest.fixture(scope="module")
def root() -> Issuer:
    return _root()


@pytest.fixture(scope="module")
def issuer(root: Issuer) -> Issuer:
    return _intermediate(root)


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def test_leaf_through_an_intermediate(root: Issuer, issuer: Issuer) -> None:
    leaf = _leaf(issuer)
    expiry = verify_chain(leaf, [issuer.cert], [root.cert], ID, now=NOW)
    assert expiry == NOW + 24 * HOUR
    assert expiry.tzinfo is not None
    # DER in, same answer; the naive-UTC form of now too.
    assert verify_chain(_der(leaf), [_der(issuer.cert)], [root.cert], ID, now=NOW) == expiry
    assert verify_chain(leaf, [issuer.cert], [root.cert], ID, now=NOW.replace(tzinfo=None))


def test_leaf_signed_by_the_anchor_directly(root: Issuer) -> None:
    assert verify_chain(_leaf(root), [], [root.cert], ID, now=NOW) == NOW + 24 * HOUR


def test_identity_match_dns_case_insensitive_and_uri_exact(issuer: Issuer, root: Issuer) -> None:
    leaf = _leaf(issuer, [x509.DNSName("Other.Example"), x509.DNSName(ID.upper())])
    verify_chain(leaf, [issuer.cert], [root.cert], ID, now=NOW)
    verify_chain(leaf, [issuer.cert], [root.cert], "other.example.", now=NOW)
    uri_leaf = _leaf(issuer, [x509.UniformResourceIdentifier(SPIFFE_ID)])
    verify_chain(uri_leaf, [issuer.cert], [root.cert], SPIFFE_ID, now=NOW)
    assert identities_of(uri_leaf) == (SPIFFE_ID,)
    with pytest.raises(CertificateVerifyError, match="does not match"):
        verify_chain(uri_leaf, [issuer.cert], [root.cert], SPIFFE_ID.upper(), now=NOW)
    # A DNS identity is not matched by a URI SAN, nor the other way round.
    with pytest.raises(CertificateVerifyError, match="does not match"):
        verify_chain(uri_leaf, [issuer.cert], [root.cert], ID, now=NOW)
    with pytest.raises(CertificateVerifyError, match="does not match"):
        verify_chain(_leaf(issuer), [issuer.cert], [root.cert], f"spiffe://{ID}", now=NOW)


def test_wrong_san(issuer: Issuer, root: Issuer) -> None:
    leaf = _leaf(
        issuer, [x509.DNSName("other.default.serviceaccount.identity.linkerd.cluster.local")]
    )
    with pytest.raises(CertificateVerifyError, match=f"does not match identity {ID}"):
        verify_chain(leaf, [issuer.cert], [root.cert], ID, now=NOW)
    # The CN is not an identity.
    no_san = _cert(ID, _key().public_key(), issuer, issuer.key, ca=False)
    assert identities_of(no_san) == ()
    with pytest.raises(CertificateVerifyError, match="no DNS or URI SAN"):
        verify_chain(no_san, [issuer.cert], [root.cert], ID, now=NOW)


def test_validity_period_against_now(issuer: Issuer, root: Issuer) -> None:
    leaf = _leaf(issuer, not_before=NOW - HOUR, not_after=NOW + HOUR)
    verify_chain(
        leaf, [issuer.cert], [root.cert], ID, now=NOW + HOUR - datetime.timedelta(seconds=1)
    )
    with pytest.raises(CertificateVerifyError, match="not valid"):
        verify_chain(
            leaf, [issuer.cert], [root.cert], ID, now=NOW + HOUR + datetime.timedelta(seconds=1)
        )
    with pytest.raises(CertificateVerifyError, match="not valid"):
        verify_chain(leaf, [issuer.cert], [root.cert], ID, now=NOW - 2 * HOUR)


def test_expired_intermediate(root: Issuer) -> None:
    key = _key()
    old = Issuer(
        _cert("issuer", key.public_key(), root, root.key, ca=True, not_after=NOW - HOUR),
        key,
    )
    with pytest.raises(CertificateVerifyError, match="does not verify"):
        verify_chain(_leaf(old), [old.cert], [root.cert], ID, now=NOW)


def test_wrong_ca(issuer: Issuer, root: Issuer) -> None:
    stranger = _root("root")  # the same name, another key
    with pytest.raises(CertificateVerifyError, match="does not verify"):
        verify_chain(_leaf(issuer), [issuer.cert], [stranger.cert], ID, now=NOW)
    # Missing intermediate.
    with pytest.raises(CertificateVerifyError, match="does not verify"):
        verify_chain(_leaf(issuer), [], [root.cert], ID, now=NOW)
    # Any of several anchors will do.
    verify_chain(_leaf(issuer), [issuer.cert], [stranger.cert, root.cert], ID, now=NOW)
    with pytest.raises(CertificateVerifyError, match="no trust anchors"):
        verify_chain(_leaf(issuer), [issuer.cert], [], ID, now=NOW)


def test_forged_signature(issuer: Issuer, root: Issuer) -> None:
    # Named as issued by the intermediate but signed by another key.
    impostor = Issuer(issuer.cert, _key())
    with pytest.raises(CertificateVerifyError, match="does not verify"):
        verify_chain(_leaf(impostor), [issuer.cert], [root.cert], ID, now=NOW)


def test_a_leaf_cannot_issue(issuer: Issuer, root: Issuer) -> None:
    key = _key()
    leaf_as_ca = Issuer(_cert("leaf", key.public_key(), issuer, issuer.key, ca=False), key)
    with pytest.raises(CertificateVerifyError, match="does not verify"):
        verify_chain(_leaf(leaf_as_ca), [leaf_as_ca.cert, issuer.cert], [root.cert], ID, now=NOW)


def test_ca_key_usage_must_allow_cert_sign(root: Issuer) -> None:
    weak = _intermediate(root, key_usage_cert_sign=False)
    with pytest.raises(CertificateVerifyError, match="does not verify"):
        verify_chain(_leaf(weak), [weak.cert], [root.cert], ID, now=NOW)


def test_ca_extensions_as_webpki_wants_them(root: Issuer) -> None:
    # No key usage at all is fine (rustls-webpki does not require one) ...
    key = _key()
    bare = Issuer(
        _cert("issuer", key.public_key(), root, root.key, ca=True, with_key_usage=False), key
    )
    verify_chain(_leaf(bare), [bare.cert], [root.cert], ID, now=NOW)
    # ... but a CA without basic constraints cannot issue.
    key = _key()
    no_bc = Issuer(
        _cert("issuer", key.public_key(), root, root.key, ca=True, with_basic_constraints=False),
        key,
    )
    with pytest.raises(CertificateVerifyError, match="does not verify"):
        verify_chain(_leaf(no_bc), [no_bc.cert], [root.cert], ID, now=NOW)


def test_extended_key_usage_must_allow_server_auth(issuer: Issuer, root: Issuer) -> None:
    both = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    verify_chain(_leaf(issuer, eku=both), [issuer.cert], [root.cert], ID, now=NOW)
    client_only = _leaf(issuer, eku=[ExtendedKeyUsageOID.CLIENT_AUTH])
    with pytest.raises(CertificateVerifyError, match="does not verify"):
        verify_chain(client_only, [issuer.cert], [root.cert], ID, now=NOW)


def test_rsa_chain(root: Issuer) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_issuer_cert = _cert("rsa-issuer", rsa_key.public_key(), root, root.key, ca=True)
    leaf = _cert(
        "leaf",
        _key().public_key(),
        Issuer(rsa_issuer_cert, _key()),
        rsa_key,
        ca=False,
        sans=[x509.DNSName(ID)],
    )
    verify_chain(leaf, [rsa_issuer_cert], [root.cert], ID, now=NOW)


def test_garbage_der() -> None:
    with pytest.raises(CertificateVerifyError, match="leaf certificate is not a DER"):
        verify_chain(b"\x30\x00", [], [_root().cert], ID, now=NOW)
    with pytest.raises(CertificateVerifyError, match="intermediate certificate #1"):
        verify_chain(_der(_root().cert), [b"junk"], [_root().cert], ID, now=NOW)


def test_default_now_is_the_current_time() -> None:
    now = datetime.datetime.now(datetime.UTC)
    key = _key()
    root = Issuer(
        _cert(
            "root",
            key.public_key(),
            None,
            key,
            ca=True,
            not_before=now - HOUR,
            not_after=now + 3 * HOUR,
        ),
        key,
    )
    current = _leaf(root, not_before=now - HOUR, not_after=now + HOUR)
    verify_chain(current, [], [root.cert], ID)
    future = _leaf(root, not_before=now + HOUR, not_after=now + 2 * HOUR)
    with pytest.raises(CertificateVerifyError, match="not valid"):
        verify_chain(future, [], [root.cert], ID)
