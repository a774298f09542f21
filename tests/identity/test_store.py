"""IdentityStore: certificate validation, TLS 1.3 contexts, peer identity checks.

Handshakes run over real loopback sockets between contexts built from two stores
whose identities the same CA issued.
"""

from __future__ import annotations

import os
import ssl
import time

import pytest

from linkerd_proxy.errors import InvalidIdentityCertificate, PeerIdentityMismatch
from linkerd_proxy.identity import (
    TRANSPORT_ALPN,
    IdentityStore,
    certify_client_context,
    check_server_identity,
    peer_identity,
)

from .conftest import ALICE, BOB, Ca, handshake, new_key

DAY = 86400.0


def certified(ca: Ca, name: str, *, lifetime: float = DAY) -> IdentityStore:
    key = new_key()
    store = IdentityStore(name, ca.anchors_pem, key)
    now = time.time()
    leaf = ca.leaf([name], key, now - 20, now + lifetime)
    store.set_certificate(leaf, ca.intermediates, now + lifetime, now=now)
    return store


async def test_mtls_handshake_each_side_sees_the_other() -> None:
    ca = Ca()
    alice, bob = certified(ca, ALICE), certified(ca, BOB)
    hs = await handshake(alice.server_context(), bob.client_context(), sni=ALICE)
    assert hs.server_error is None and hs.client_error is None
    assert hs.server is not None and hs.client is not None
    assert hs.client.version() == "TLSv1.3" and hs.server.version() == "TLSv1.3"
    assert peer_identity(hs.server) == BOB
    assert check_server_identity(hs.client, ALICE) == ALICE
    assert peer_identity(hs.client) == ALICE
    # Meshed HTTP offers no ALPN, so none is negotiated.
    assert hs.client.selected_alpn_protocol() is None
    await hs.aclose()


async def test_client_expecting_another_identity_fails() -> None:
    ca = Ca()
    alice, bob = certified(ca, ALICE), certified(ca, BOB)
    hs = await handshake(alice.server_context(), bob.client_context())
    assert hs.client is not None
    with pytest.raises(PeerIdentityMismatch) as info:
        check_server_identity(hs.client, BOB)
    assert info.value.actual == (ALICE,)
    await hs.aclose()


async def test_sni_differs_from_identity_no_hostname_check() -> None:
    # The data-path client does not check the SNI name: only the SAN check decides.
    ca = Ca()
    alice, bob = certified(ca, ALICE), certified(ca, BOB)
    hs = await handshake(alice.server_context(), bob.client_context(), sni="other.example")
    assert hs.client is not None
    check_server_identity(hs.client, ALICE)
    await hs.aclose()


async def test_server_accepts_anonymous_clients() -> None:
    ca = Ca()
    alice = certified(ca, ALICE)
    anonymous = certify_client_context(ca.anchors_pem)
    anonymous.check_hostname = False
    anonymous.set_alpn_protocols([TRANSPORT_ALPN])
    hs = await handshake(alice.server_context(), anonymous)
    assert hs.server is not None and hs.client is not None, hs
    assert peer_identity(hs.server) is None
    assert hs.server.selected_alpn_protocol() == TRANSPORT_ALPN
    await hs.aclose()


async def test_transport_alpn_negotiated_when_offered() -> None:
    ca = Ca()
    alice, bob = certified(ca, ALICE), certified(ca, BOB)
    ctx = bob.client_context(alpn=[TRANSPORT_ALPN])
    assert bob.client_context(alpn=[TRANSPORT_ALPN]) is ctx  # cached per certificate
    hs = await handshake(alice.server_context(), ctx)
    assert hs.client is not None
    assert hs.client.selected_alpn_protocol() == TRANSPORT_ALPN
    await hs.aclose()


async def test_peers_of_another_ca_are_refused() -> None:
    alice = certified(Ca(), ALICE)
    mallory = certified(Ca("other"), BOB)
    # The client refuses a server chained to an unknown root...
    hs = await handshake(mallory.server_context(), alice.client_context())
    assert hs.client is None and hs.client_error is not None
    assert isinstance(hs.client_error.__cause__, ssl.SSLCertVerificationError)
    # ...and the server a client certificate chained to one.
    hs = await handshake(alice.server_context(), mallory.client_context())
    assert hs.server is None and hs.server_error is not None
    await hs.aclose()


async def test_tls12_client_refused() -> None:
    ca = Ca()
    alice = certified(ca, ALICE)
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    old.check_hostname = False
    old.verify_mode = ssl.CERT_NONE
    hs = await handshake(alice.server_context(), old)
    assert hs.server is None and hs.client is None


async def test_new_certificate_new_contexts() -> None:
    ca = Ca()
    key = new_key()
    store = IdentityStore(ALICE, ca.anchors_pem, key)
    assert store.credentials is None and not store.is_certified()
    with pytest.raises(RuntimeError):
        store.server_context()
    with pytest.raises(RuntimeError):
        store.client_context()
    now = time.time()
    first = store.set_certificate(
        ca.leaf([ALICE], key, now - 20, now + 60), ca.intermediates, now + 60, now=now
    )
    server1, client1 = store.server_context(), store.client_context()
    second = store.set_certificate(
        ca.leaf([ALICE], key, now - 20, now + 120), ca.intermediates, now + 120, now=now
    )
    assert store.credentials == second != first
    assert store.generation == 2
    assert store.server_context() is not server1 and store.client_context() is not client1
    # The new context serves the new leaf.
    bob = certified(ca, BOB)
    hs = await handshake(store.server_context(), bob.client_context())
    assert hs.client is not None
    assert hs.client.getpeercert(binary_form=True) == second.leaf_der
    await hs.aclose()


def test_expiry_is_the_earlier_of_valid_until_and_not_after() -> None:
    ca = Ca()
    key = new_key()
    store = IdentityStore(ALICE, ca.anchors_pem, key)
    now = time.time()
    leaf = ca.leaf([ALICE], key, now - 20, now + 50)
    assert store.set_certificate(leaf, ca.intermediates, now + 90, now=now).expiry == pytest.approx(
        now + 50, abs=1
    )
    assert store.set_certificate(leaf, ca.intermediates, now + 30, now=now).expiry == now + 30


def test_rejections_keep_the_current_certificate() -> None:
    ca = Ca()
    key = new_key()
    store = IdentityStore(ALICE, ca.anchors_pem, key)
    now = time.time()
    good = store.set_certificate(
        ca.leaf([ALICE], key, now - 20, now + 60), ca.intermediates, now + 60, now=now
    )
    server = store.server_context()
    bad: list[tuple[bytes, list[bytes], float]] = [
        # valid_until already passed
        (ca.leaf([ALICE], key, now - 20, now + 60), ca.intermediates, now - 1),
        # leaf already expired, or not yet valid
        (ca.leaf([ALICE], key, now - 60, now - 10), ca.intermediates, now + 60),
        (ca.leaf([ALICE], key, now + 100, now + 200), ca.intermediates, now + 200),
        # the local identity is not among the SANs
        (ca.leaf([BOB], key, now - 20, now + 60), ca.intermediates, now + 60),
        # another CA, or the intermediate missing
        (Ca("x").leaf([ALICE], key, now - 20, now + 60), ca.intermediates, now + 60),
        (ca.leaf([ALICE], key, now - 20, now + 60), [], now + 60),
        # a leaf for someone else's key
        (ca.leaf([ALICE], new_key(), now - 20, now + 60), ca.intermediates, now + 60),
        # garbage
        (b"not a certificate", ca.intermediates, now + 60),
    ]
    for leaf, chain, valid_until in bad:
        with pytest.raises(InvalidIdentityCertificate):
            store.set_certificate(leaf, chain, valid_until, now=now)
        assert store.credentials == good
        assert store.server_context() is server
        assert store.generation == 1


def test_identity_among_several_sans_and_uri() -> None:
    ca = Ca()
    key = new_key()
    spiffe = "spiffe://cluster.local/ns/ns/sa/alice"
    store = IdentityStore(spiffe, ca.anchors_pem, key)
    now = time.time()
    leaf = ca.leaf(["other.example", spiffe], key, now - 20, now + 60)
    store.set_certificate(leaf, ca.intermediates, now + 60, now=now)
    assert store.credentials is not None


def test_bad_trust_anchors() -> None:
    with pytest.raises(InvalidIdentityCertificate):
        IdentityStore(ALICE, "no pem here", new_key())


def test_key_loading_leaves_no_file_descriptor() -> None:
    ca = Ca()
    before = set(os.listdir("/proc/self/fd"))
    store = certified(ca, ALICE)
    store.client_context(alpn=[TRANSPORT_ALPN])
    store.control_client_context()
    after = set(os.listdir("/proc/self/fd"))
    assert after <= before | set()  # no memfd left behind


async def test_rotated_trust_bundle_applies_to_new_connections() -> None:
    old_ca, new_ca = Ca(), Ca("rotated")
    alice = certified(old_ca, ALICE)
    bob_new = certified(new_ca, BOB)
    # Before the rotation Alice does not trust Bob's new root.
    hs = await handshake(bob_new.server_context(), alice.client_context())
    assert hs.client is None
    await hs.aclose()
    # The rotated bundle holds both roots: new connections trust both, and
    # Alice's current certificate (old root) stays usable.
    generation = alice.generation
    alice.set_trust_anchors(old_ca.anchors_pem + new_ca.anchors_pem)
    assert alice.generation == generation + 1
    hs = await handshake(bob_new.server_context(), alice.client_context())
    assert hs.client is not None, hs.client_error
    await hs.aclose()
    with pytest.raises(InvalidIdentityCertificate):
        alice.set_trust_anchors("not a certificate")
