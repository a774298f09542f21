"""The identity directory: key and CSR files, and the trust anchors.

Sits beneath the Certify loop. Before the proxy starts, the injector's
``proxy-identity`` step (here ``linkerd-proxy identity``, :func:`main`) writes
``key.p8`` (a P-256 private key, PKCS#8 DER, mode 0600) and ``csr.der`` (a CSR
whose CN and only DNS SAN are the local identity) into
``LINKERD2_PROXY_IDENTITY_DIR``, normally a tmpfs volume. The proxy then loads
them with :func:`load_identity_dir`, and parses
``LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS`` with :func:`load_trust_anchors`.

Files that already exist are kept (a restarted container keeps its key); a CSR
that does not match the key or the name is written again. Blocking file I/O:
call it before the runtime starts, or from a worker thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import NameOID

from linkerd_proxy.errors import IdentityFilesError

__all__ = [
    "CSR_FILE",
    "KEY_FILE",
    "IdentityFilesError",
    "load_identity_dir",
    "load_trust_anchors",
    "main",
    "prepare_identity_dir",
    "private_key_pem",
]

log = logging.getLogger("linkerd_proxy.identity")

KEY_FILE = "key.p8"
CSR_FILE = "csr.der"

ENV_DIR = "LINKERD2_PROXY_IDENTITY_DIR"
ENV_LOCAL_NAME = "LINKERD2_PROXY_IDENTITY_LOCAL_NAME"
ENV_TRUST_ANCHORS = "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS"

# What the injector accepts as an identity: a fully qualified RFC 1123 name
# (at least two lower-case labels; a trailing dot is tolerated).
_FQDN = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)+\Z")
_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----\r?\n.*?-----END CERTIFICATE-----", re.DOTALL)


def _check_name(name: str) -> None:
    bare = name[:-1] if name.endswith(".") else name
    if not name or len(bare) > 253 or not _FQDN.match(bare):
        raise IdentityFilesError(f"{name!r} is not a fully qualified DNS name")


def _write_private(path: Path, data: bytes) -> None:
    """Write a file readable by its owner only, atomically (temp file + rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _build_csr(key: ec.EllipticCurvePrivateKey, name: str) -> bytes:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.DER)


def _csr_matches(csr_der: bytes, key: PrivateKeyTypes, name: str) -> bool:
    try:
        csr = x509.load_der_x509_csr(csr_der)
        sans = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except (ValueError, x509.ExtensionNotFound):
        return False
    return (
        csr.is_signature_valid
        and csr.public_key() == key.public_key()
        and sans.value.get_values_for_type(x509.DNSName) == [name]
    )


def prepare_identity_dir(directory: str | os.PathLike[str], local_name: str) -> tuple[bool, bool]:
    """Write ``key.p8`` and ``csr.der`` for ``local_name`` where they are missing.

    The directory must exist (it should be a tmpfs the pod provides; creating it
    would hide a misconfiguration). An existing key is kept; an existing CSR is
    kept if it is signed by that key for exactly ``local_name``.

    Args:
      directory: the identity directory (``LINKERD2_PROXY_IDENTITY_DIR``).
      local_name: the proxy's identity (``LINKERD2_PROXY_IDENTITY_LOCAL_NAME``).

    Returns:
      ``(key_written, csr_written)``.

    Raises:
      IdentityFilesError: the directory is missing or not a directory, the name is
        not a fully qualified DNS name, or an existing key cannot be read.
      OSError: writing a file failed.
    """
    _check_name(local_name)
    path = Path(directory)
    if not path.is_dir():
        raise IdentityFilesError(f"identity directory {str(path)!r} does not exist")
    key_path, csr_path = path / KEY_FILE, path / CSR_FILE

    key_written = False
    if key_path.exists():
        log.info("found pre-existing key: %s", key_path)
        key = _read_key(key_path)
    else:
        key = ec.generate_private_key(ec.SECP256R1())
        der = key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        _write_private(key_path, der)
        key_written = True

    if csr_path.exists() and _csr_matches(csr_path.read_bytes(), key, local_name):
        log.info("found pre-existing CSR: %s", csr_path)
        return key_written, False
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise IdentityFilesError(f"{key_path}: cannot sign a CSR with a {type(key).__name__}")
    _write_private(csr_path, _build_csr(key, local_name))
    return key_written, True


def _read_nonempty(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise IdentityFilesError(f"{what} {str(path)!r} does not exist") from None
    except OSError as exc:
        raise IdentityFilesError(f"{what} {str(path)!r} cannot be read: {exc}") from None
    if not data:
        raise IdentityFilesError(f"{what} {str(path)!r} is empty")
    return data


def _read_key(path: Path) -> PrivateKeyTypes:
    data = _read_nonempty(path, "private key")
    try:
        return serialization.load_der_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise IdentityFilesError(
            f"private key {str(path)!r} is not an unencrypted PKCS#8 DER key"
        ) from None


def load_identity_dir(directory: str | os.PathLike[str]) -> tuple[PrivateKeyTypes, bytes]:
    """Load the key and CSR that the Certify loop sends.

    Args:
      directory: the identity directory (``LINKERD2_PROXY_IDENTITY_DIR``).

    Returns:
      ``(private_key, csr_der)``: the key from ``key.p8`` and the raw bytes of
      ``csr.der`` (sent as they are).

    Raises:
      IdentityFilesError: a file is missing or empty, the key is not PKCS#8 DER,
        the CSR is not DER or not signed by the key.
    """
    path = Path(directory)
    if not path.is_dir():
        raise IdentityFilesError(f"identity directory {str(path)!r} does not exist")
    key = _read_key(path / KEY_FILE)
    csr_path = path / CSR_FILE
    csr_der = _read_nonempty(csr_path, "CSR")
    try:
        csr = x509.load_der_x509_csr(csr_der)
    except ValueError:
        raise IdentityFilesError(f"CSR {str(csr_path)!r} is not a DER CSR") from None
    if not csr.is_signature_valid or csr.public_key() != key.public_key():
        raise IdentityFilesError(f"CSR {str(csr_path)!r} is not signed by {KEY_FILE}")
    return key, csr_der


def private_key_pem(key: PrivateKeyTypes) -> bytes:
    """``key`` as an unencrypted PKCS#8 PEM block (what ``ssl`` loads)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_trust_anchors(pem: str | bytes) -> list[x509.Certificate]:
    """Parse the trust anchors (``LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS``).

    As the reference does, blocks that do not parse as certificates are skipped
    with a warning, as long as one does.

    Args:
      pem: one or more PEM ``CERTIFICATE`` blocks.

    Returns:
      The certificates, in order.

    Raises:
      IdentityFilesError: no certificate could be read.
    """
    data = pem.encode() if isinstance(pem, str) else pem
    certs: list[x509.Certificate] = []
    blocks = _PEM_CERT.findall(data)
    for index, block in enumerate(blocks):
        try:
            certs.append(x509.load_pem_x509_certificate(block))
        except ValueError as exc:
            log.warning("skipping invalid trust anchor #%d: %s", index + 1, exc)
    if not certs:
        what = "no valid certificate" if blocks else "no PEM certificate"
        raise IdentityFilesError(f"trust anchors: {what} found")
    return certs


def main(argv: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    """``linkerd-proxy identity``: prepare the identity directory, then exit.

    Reads ``LINKERD2_PROXY_IDENTITY_DIR``, ``LINKERD2_PROXY_IDENTITY_LOCAL_NAME``
    and ``LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS`` (checked, as the injector's
    step does, so a bad value fails before the proxy starts).

    Returns:
      The exit status: 0 on success, 1 with a message on stderr otherwise, 2 for
      a usage error.
    """
    if argv and argv[0] in ("-h", "--help"):
        print(
            "usage: linkerd-proxy identity\n\nWrite key.p8 and csr.der into "
            f"${ENV_DIR} for ${ENV_LOCAL_NAME} if missing; check ${ENV_TRUST_ANCHORS}."
        )
        return 0
    if argv:
        print(f"linkerd-proxy identity: unexpected arguments: {' '.join(argv)}", file=sys.stderr)
        return 2
    env = os.environ if env is None else env
    try:
        directory = env.get(ENV_DIR, "")
        if not directory:
            raise IdentityFilesError(f"{ENV_DIR} must be set")
        anchors = env.get(ENV_TRUST_ANCHORS, "")
        if not anchors:
            raise IdentityFilesError(f"{ENV_TRUST_ANCHORS} must be set")
        load_trust_anchors(anchors)
        local_name = env.get(ENV_LOCAL_NAME, "")
        if not local_name:
            raise IdentityFilesError(f"{ENV_LOCAL_NAME} must be set")
        key_written, csr_written = prepare_identity_dir(directory, local_name)
    except (IdentityFilesError, OSError) as exc:
        print(f"linkerd-proxy identity: {exc}", file=sys.stderr)
        return 1
    log.info(
        "identity directory ready (key written: %s, CSR written: %s)", key_written, csr_written
    )
    return 0
