"""A fake CA shared between control planes (``TestCa.shared``, ``--ca-dir``)."""

from __future__ import annotations

import datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from linkerd_proxy.testing.control.identity import TestCa


def test_shared_ca_is_made_once_and_issues_leaves_under_the_same_root(tmp_path: Path) -> None:
    first = TestCa.shared(str(tmp_path))
    second = TestCa.shared(str(tmp_path))
    assert second.trust_anchors_pem == first.trust_anchors_pem
    assert second.intermediates_der == first.intermediates_der
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = second.issue(["b.ns"], key.public_key(), datetime.timedelta(seconds=30))
    # Signed by the first CA's issuer key: verify with the first issuer's public key.
    leaf.verify_directly_issued_by(first.issuer)
    assert (
        TestCa(  # a fresh CA is another root
        ).trust_anchors_pem
        != first.trust_anchors_pem
    )
