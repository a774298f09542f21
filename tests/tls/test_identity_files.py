"""The identity directory: key.p8 and csr.der written once, loaded with clear errors."""

from __future__ import annotations

import os
import pathlib
import stat
import subprocess
import sys

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from linkerd_proxy.errors import IdentityFilesError
from linkerd_proxy.tls.identity_files import (
    CSR_FILE,
    KEY_FILE,
    load_identity_dir,
    load_trust_anchors,
    main,
    prepare_identity_dir,
)

NAME = "web.default.serviceaccount.identity.linkerd.cluster.local"


def test_writes_a_p256_pkcs8_key_and_a_matching_csr(tmp_path: pathlib.Path) -> None:
    assert prepare_identity_dir(tmp_path, NAME) == (True, True)
    key_der = (tmp_path / KEY_FILE).read_bytes()
    key = serialization.load_der_private_key(key_der, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.curve.name == "secp256r1"
    # PKCS#8, not the SEC1 "EC PRIVATE KEY" form.
    assert key_der == key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    csr = x509.load_der_x509_csr((tmp_path / CSR_FILE).read_bytes())
    assert csr.is_signature_valid
    assert csr.public_key() == key.public_key()
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == NAME
    sans = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == [NAME]
    for name in (KEY_FILE, CSR_FILE):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == [CSR_FILE, KEY_FILE]


def test_existing_files_are_kept(tmp_path: pathlib.Path) -> None:
    prepare_identity_dir(tmp_path, NAME)
    key, csr = (tmp_path / KEY_FILE).read_bytes(), (tmp_path / CSR_FILE).read_bytes()
    assert prepare_identity_dir(tmp_path, NAME) == (False, False)
    assert (tmp_path / KEY_FILE).read_bytes() == key
    assert (tmp_path / CSR_FILE).read_bytes() == csr


def test_a_missing_or_stale_csr_is_rewritten_for_the_kept_key(tmp_path: pathlib.Path) -> None:
    prepare_identity_dir(tmp_path, NAME)
    key = (tmp_path / KEY_FILE).read_bytes()
    (tmp_path / CSR_FILE).unlink()
    assert prepare_identity_dir(tmp_path, NAME) == (False, True)
    # A CSR for another name is not one to send.
    assert prepare_identity_dir(tmp_path, "other.ns.serviceaccount.identity.l5d.local") == (
        False,
        True,
    )
    assert (tmp_path / KEY_FILE).read_bytes() == key
    loaded_key, csr_der = load_identity_dir(tmp_path)
    csr = x509.load_der_x509_csr(csr_der)
    assert csr.public_key() == loaded_key.public_key()
    # A new key makes any old CSR useless.
    (tmp_path / KEY_FILE).unlink()
    assert prepare_identity_dir(tmp_path, NAME) == (True, True)
    load_identity_dir(tmp_path)


def test_the_directory_must_exist(tmp_path: pathlib.Path) -> None:
    with pytest.raises(IdentityFilesError, match="does not exist"):
        prepare_identity_dir(tmp_path / "missing", NAME)
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(IdentityFilesError, match="does not exist"):
        prepare_identity_dir(tmp_path / "file", NAME)


@pytest.mark.parametrize("name", ["", "localhost", "UPPER.example", "a..b", "-a.example", "a_b.c"])
def test_the_name_must_be_a_fqdn(tmp_path: pathlib.Path, name: str) -> None:
    with pytest.raises(IdentityFilesError, match="fully qualified"):
        prepare_identity_dir(tmp_path, name)
    assert list(tmp_path.iterdir()) == []


def test_load_round_trip(tmp_path: pathlib.Path) -> None:
    prepare_identity_dir(tmp_path, NAME)
    key, csr_der = load_identity_dir(tmp_path)
    assert csr_der == (tmp_path / CSR_FILE).read_bytes()
    assert (
        key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        == (tmp_path / KEY_FILE).read_bytes()
    )


def test_load_errors_name_the_problem(tmp_path: pathlib.Path) -> None:
    with pytest.raises(IdentityFilesError, match=r"directory .* does not exist"):
        load_identity_dir(tmp_path / "missing")
    with pytest.raises(IdentityFilesError, match=r"private key .*key\.p8.* does not exist"):
        load_identity_dir(tmp_path)
    prepare_identity_dir(tmp_path, NAME)
    good_key = (tmp_path / KEY_FILE).read_bytes()
    good_csr = (tmp_path / CSR_FILE).read_bytes()

    (tmp_path / CSR_FILE).write_bytes(b"")
    with pytest.raises(IdentityFilesError, match=r"CSR .* is empty"):
        load_identity_dir(tmp_path)
    (tmp_path / CSR_FILE).write_bytes(b"\x30\x03\x02\x01\x00")
    with pytest.raises(IdentityFilesError, match="not a DER CSR"):
        load_identity_dir(tmp_path)
    (tmp_path / CSR_FILE).unlink()
    with pytest.raises(IdentityFilesError, match=r"CSR .* does not exist"):
        load_identity_dir(tmp_path)
    (tmp_path / CSR_FILE).write_bytes(good_csr)

    (tmp_path / KEY_FILE).write_bytes(b"")
    with pytest.raises(IdentityFilesError, match=r"private key .* is empty"):
        load_identity_dir(tmp_path)
    # PEM instead of DER.
    pem = serialization.load_der_private_key(good_key, None).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (tmp_path / KEY_FILE).write_bytes(pem)
    with pytest.raises(IdentityFilesError, match="not an unencrypted PKCS#8 DER key"):
        load_identity_dir(tmp_path)
    # A different key than the one that signed the CSR.
    other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (tmp_path / KEY_FILE).write_bytes(other)
    with pytest.raises(IdentityFilesError, match=r"not signed by key\.p8"):
        load_identity_dir(tmp_path)


def test_an_existing_key_that_cannot_sign_a_csr_is_an_error(tmp_path: pathlib.Path) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp_path / KEY_FILE).write_bytes(
        rsa_key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(IdentityFilesError, match="cannot sign"):
        prepare_identity_dir(tmp_path, NAME)


def _ca_pem(common_name: str) -> bytes:
    return trustme.CA(organization_unit_name=common_name).cert_pem.bytes()


def test_trust_anchors() -> None:
    one, two = _ca_pem("one"), _ca_pem("two")
    certs = load_trust_anchors(one + b"\n" + two)
    assert [c.public_bytes(serialization.Encoding.PEM) for c in certs] == [one, two]
    assert len(load_trust_anchors(one.decode())) == 1
    # CRLF line endings and surrounding text are tolerated.
    assert len(load_trust_anchors(b"# anchors\r\n" + one.replace(b"\n", b"\r\n"))) == 1


def test_trust_anchors_skip_invalid_blocks_but_need_one() -> None:
    bad = b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n"
    good = _ca_pem("good")
    assert len(load_trust_anchors(bad + good)) == 1
    with pytest.raises(IdentityFilesError, match="no valid certificate"):
        load_trust_anchors(bad)
    with pytest.raises(IdentityFilesError, match="no PEM certificate"):
        load_trust_anchors("")
    with pytest.raises(IdentityFilesError, match="no PEM certificate"):
        load_trust_anchors(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")


def _env(tmp_path: pathlib.Path, **overrides: str) -> dict[str, str]:
    env = {
        "LINKERD2_PROXY_IDENTITY_DIR": str(tmp_path),
        "LINKERD2_PROXY_IDENTITY_LOCAL_NAME": NAME,
        "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS": _ca_pem("anchor").decode(),
    }
    env.update(overrides)
    return env


def test_main_prepares_the_directory(tmp_path: pathlib.Path) -> None:
    assert main([], _env(tmp_path)) == 0
    load_identity_dir(tmp_path)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"LINKERD2_PROXY_IDENTITY_DIR": ""}, "LINKERD2_PROXY_IDENTITY_DIR must be set"),
        ({"LINKERD2_PROXY_IDENTITY_LOCAL_NAME": ""}, "LOCAL_NAME must be set"),
        ({"LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS": ""}, "TRUST_ANCHORS must be set"),
        ({"LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS": "junk"}, "no PEM certificate"),
        ({"LINKERD2_PROXY_IDENTITY_LOCAL_NAME": "nodots"}, "fully qualified"),
    ],
)
def test_main_errors(
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
    overrides: dict[str, str],
    message: str,
) -> None:
    assert main([], _env(tmp_path, **overrides)) == 1
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_main_usage(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"], _env(tmp_path)) == 0
    assert "key.p8" in capsys.readouterr().out
    assert main(["extra"], _env(tmp_path)) == 2


def test_binary_identity_subcommand(tmp_path: pathlib.Path) -> None:
    env = {**os.environ, **_env(tmp_path)}
    cmd = [sys.executable, "-m", "linkerd_proxy_bin", "identity"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    load_identity_dir(tmp_path)
    env["LINKERD2_PROXY_IDENTITY_DIR"] = str(tmp_path / "missing")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert "does not exist" in proc.stderr
