"""Helpers for the identity tests: a CA whose leaves have chosen validity times,
and a TLS handshake over real loopback sockets."""

from __future__ import annotations

import datetime
import ssl
from collections.abc import Sequence

import attrs
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ALICE = "alice.ns.serviceaccount.identity.linkerd.cluster.local"
BOB = "bob.ns.serviceaccount.identity.linkerd.cluster.local"


def _at(epoch: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC)


def _ca(
    name: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    signer: ec.EllipticCurvePrivateKey,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=400))
        .not_valid_after(now + datetime.timedelta(days=400))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(signer, hashes.SHA256())
    )


class Ca:
    """A root (the trust anchor) and an intermediate that signs leaves."""

    def __init__(self, name: str = "root") -> None:
        root_key = ec.generate_private_key(ec.SECP256R1())
        root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.root = _ca(name, root_key, root_name, root_key)
        self._key = ec.generate_private_key(ec.SECP256R1())
        self.issuer = _ca(f"{name}-issuer", self._key, root_name, root_key)

    @property
    def anchors_pem(self) -> str:
        return self.root.public_bytes(serialization.Encoding.PEM).decode()

    @property
    def intermediates(self) -> list[bytes]:
        return [self.issuer.public_bytes(serialization.Encoding.DER)]

    def leaf(
        self,
        names: Sequence[str],
        key: ec.EllipticCurvePrivateKey,
        not_before: float,
        not_after: float,
    ) -> bytes:
        """A DER leaf for ``key`` with DNS SANs ``names`` (``spiffe://`` names as URIs)."""
        sans: list[x509.GeneralName] = [
            x509.UniformResourceIdentifier(n) if n.startswith("spiffe://") else x509.DNSName(n)
            for n in names
        ]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self.issuer.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_at(not_before))
            .not_valid_after(_at(not_after))
            .add_extension(x509.SubjectAlternativeName(sans), critical=True)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.DER)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@attrs.define
class Handshake:
    """Both ends of a completed TLS handshake (or the errors each side raised)."""

    server: trio.SSLStream[trio.SocketStream] | None = None
    client: trio.SSLStream[trio.SocketStream] | None = None
    server_error: BaseException | None = None
    client_error: BaseException | None = None

    async def aclose(self) -> None:
        for stream in (self.server, self.client):
            if stream is not None:
                await stream.transport_stream.aclose()


async def handshake(
    server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, sni: str = ALICE
) -> Handshake:
    """Run one TLS handshake over a real 127.0.0.1 TCP connection, bounded to 5 s."""
    result = Handshake()
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    listener = listeners[0]
    port = listener.socket.getsockname()[1]

    async def serve() -> None:
        sock = await listener.accept()
        stream = trio.SSLStream(sock, server_ctx, server_side=True)
        try:
            await stream.do_handshake()
            result.server = stream
        except (trio.BrokenResourceError, ssl.SSLError) as exc:
            result.server_error = exc
            await sock.aclose()

    async def connect() -> None:
        sock = await trio.open_tcp_stream("127.0.0.1", port)
        stream = trio.SSLStream(sock, client_ctx, server_hostname=sni)
        try:
            await stream.do_handshake()
            # TLS 1.3: a server's rejection of the client certificate arrives
            # after the client's handshake ends; one round trip surfaces it.
            await stream.send_all(b"x")
            result.client = stream
        except (trio.BrokenResourceError, ssl.SSLError) as exc:
            result.client_error = exc
            await sock.aclose()

    with trio.fail_after(5):
        async with listener, trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            nursery.start_soon(connect)
    return result
