"""The fake identity service: a test CA answering ``Identity.Certify``.

Part of the fake control plane (:mod:`linkerd_proxy.testing.control`), on its
asyncio loop. :class:`TestCa` is a root (the trust anchors) with an intermediate
that signs leaves, all ECDSA P-256 as Linkerd's issuer uses. :class:`FakeIdentity`
checks a ``CertifyRequest`` as the identity controller does (a token, a CSR signed by
its key whose DNS SAN is exactly the requested identity), and issues a leaf for the
CSR's key with that SAN and the configured lifetime. Tests can make the next calls
fail, or the whole service refuse until it comes back.
"""

from __future__ import annotations

import datetime
import os
import ssl
import tempfile
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import linkerd_proxy.api as api
from linkerd_proxy.grpc.status import Code
from linkerd_proxy.testing.control.streams import grpc_error

#: How far back leaves are valid from, for clock skew (the issuer's allowance).
CLOCK_SKEW = datetime.timedelta(seconds=20)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _ca_cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
) -> x509.Certificate:
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer.subject if issuer else _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _load_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("the CA key is not ECDSA")
    return key


class TestCa:
    """A root CA and an intermediate issuer, made fresh for each instance."""

    __test__ = False  # not a pytest test class

    def __init__(self, trust_domain: str = "cluster.local") -> None:
        self._root_key = ec.generate_private_key(ec.SECP256R1())
        self.root = _ca_cert(f"root.{trust_domain}", self._root_key, None, self._root_key)
        self._issuer_key = ec.generate_private_key(ec.SECP256R1())
        self.issuer = _ca_cert(
            f"identity.linkerd.{trust_domain}", self._issuer_key, self.root, self._root_key
        )

    _FILES = ("root.pem", "root.key", "issuer.pem", "issuer.key")

    def save(self, directory: str) -> None:
        """Write the root and the issuer (certificates and keys, PEM) to ``directory``,
        so that another fake control plane can issue from the same CA (:meth:`load`)."""
        os.makedirs(directory, exist_ok=True)
        blobs = (
            self.root.public_bytes(serialization.Encoding.PEM),
            _key_pem(self._root_key),
            self.issuer.public_bytes(serialization.Encoding.PEM),
            _key_pem(self._issuer_key),
        )
        for name, blob in zip(self._FILES, blobs, strict=True):
            with open(os.path.join(directory, name), "wb") as f:
                f.write(blob)

    @classmethod
    def load(cls, directory: str) -> TestCa:
        """The CA :meth:`save` wrote to ``directory``.

        Raises:
            OSError: a file is missing. ValueError: a file is malformed.
        """
        blobs = []
        for name in cls._FILES:
            with open(os.path.join(directory, name), "rb") as f:
                blobs.append(f.read())
        ca = cls.__new__(cls)
        ca.root = x509.load_pem_x509_certificate(blobs[0])
        ca._root_key = _load_key(blobs[1])
        ca.issuer = x509.load_pem_x509_certificate(blobs[2])
        ca._issuer_key = _load_key(blobs[3])
        return ca

    @classmethod
    def shared(cls, directory: str, trust_domain: str = "cluster.local") -> TestCa:
        """The CA saved in ``directory``, made (and saved) first if there is none."""
        if os.path.exists(os.path.join(directory, cls._FILES[-1])):
            return cls.load(directory)
        ca = cls(trust_domain)
        ca.save(directory)
        return ca

    @property
    def trust_anchors_pem(self) -> str:
        """The root certificate, PEM: what ``LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS`` holds."""
        return self.root.public_bytes(serialization.Encoding.PEM).decode()

    @property
    def intermediates_der(self) -> list[bytes]:
        """The chain between a leaf and the root, DER."""
        return [self.issuer.public_bytes(serialization.Encoding.DER)]

    def issue(
        self,
        names: Sequence[str],
        public_key: ec.EllipticCurvePublicKey | None,
        lifetime: datetime.timedelta,
    ) -> x509.Certificate:
        """A leaf for ``public_key`` with DNS SANs ``names``, valid for ``lifetime`` from now."""
        if public_key is None:
            raise ValueError("a leaf needs a public key")
        now = _now()
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self.issuer.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(now + lifetime)
            .add_extension(
                x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=True
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._issuer_key.public_key()),
                critical=False,
            )
            .sign(self._issuer_key, hashes.SHA256())
        )

    def server_context(self, names: Sequence[str]) -> ssl.SSLContext:
        """A TLS 1.3 server context for ``names`` (ALPN h2), asking for optional client certs."""
        key = ec.generate_private_key(ec.SECP256R1())
        leaf = self.issue(names, key.public_key(), datetime.timedelta(days=1))
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        pem = b"".join(
            c.public_bytes(serialization.Encoding.PEM) for c in (leaf, self.issuer)
        ) + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        # ssl loads a certificate chain only from a file.
        with tempfile.NamedTemporaryFile(suffix=".pem") as f:
            f.write(pem)
            f.flush()
            ctx.load_cert_chain(f.name)
        ctx.load_verify_locations(cadata=self.trust_anchors_pem)
        ctx.verify_mode = ssl.CERT_OPTIONAL
        ctx.set_alpn_protocols(["h2"])
        return ctx


def _check_csr(request: api.identity.CertifyRequest) -> x509.CertificateSigningRequest:
    if not request.token:
        raise grpc_error(Code.UNAUTHENTICATED, "token is empty")
    if not request.identity:
        raise grpc_error(Code.INVALID_ARGUMENT, "identity is empty")
    try:
        csr = x509.load_der_x509_csr(request.certificate_signing_request)
    except ValueError as exc:
        raise grpc_error(Code.INVALID_ARGUMENT, f"malformed CSR: {exc}") from exc
    if not csr.is_signature_valid:
        raise grpc_error(Code.INVALID_ARGUMENT, "CSR signature is invalid")
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound as exc:
        raise grpc_error(Code.INVALID_ARGUMENT, "CSR has no SAN") from exc
    names = san.get_values_for_type(x509.DNSName)
    if names != [request.identity]:
        raise grpc_error(
            Code.INVALID_ARGUMENT, f"CSR names {names} do not match identity {request.identity}"
        )
    return csr


class FakeIdentity(api.identity.IdentityBase):
    """The identity service's state and the ``Certify`` handler (asyncio side).

    Args:
        ca: the CA that signs leaves.
        lifetime: how long issued leaves are valid, in seconds.
        token: when set, the only token accepted (else any non-empty token).
    """

    def __init__(self, ca: TestCa, lifetime: float = 24 * 3600.0, token: bytes | None = None):
        self.ca = ca
        self.lifetime = lifetime
        self.token = token
        self.certify_count = 0
        self.issued: list[str] = []
        self._failures: list[int] = []
        self._down: int | None = None

    def fail(self, n: int = 1, code: int = Code.UNAVAILABLE) -> None:
        """Fail the next ``n`` calls with ``code``."""
        self._failures.extend([int(code)] * n)

    def go_down(self, code: int = Code.UNAVAILABLE) -> None:
        """Fail every call with ``code`` until :meth:`come_up`."""
        self._down = int(code)

    def come_up(self) -> None:
        """Answer calls again (pending :meth:`fail` counts stay)."""
        self._down = None

    def set_lifetime(self, seconds: float) -> None:
        """Issue later leaves for ``seconds``."""
        self.lifetime = seconds

    async def certify(self, message: api.identity.CertifyRequest) -> api.identity.CertifyResponse:
        self.certify_count += 1
        if self._down is not None:
            raise grpc_error(self._down, "fake identity service is down")
        if self._failures:
            raise grpc_error(self._failures.pop(0), "fake identity service: injected failure")
        if self.token is not None and message.token != self.token:
            raise grpc_error(Code.UNAUTHENTICATED, "token is not valid")
        csr = _check_csr(message)
        public_key = csr.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise grpc_error(Code.INVALID_ARGUMENT, "CSR key is not ECDSA")
        leaf = self.ca.issue(
            [message.identity], public_key, datetime.timedelta(seconds=self.lifetime)
        )
        self.issued.append(message.identity)
        return api.identity.CertifyResponse(
            leaf_certificate=leaf.public_bytes(serialization.Encoding.DER),
            intermediate_certificates=self.ca.intermediates_der,
            valid_until=leaf.not_valid_after_utc,
        )


def make_csr(identity: str) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    """A P-256 key and a DER CSR for ``identity`` (a DNS SAN), as a proxy sends."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(identity)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, csr.public_bytes(serialization.Encoding.DER)


__all__ = ["CLOCK_SKEW", "FakeIdentity", "TestCa", "make_csr"]
