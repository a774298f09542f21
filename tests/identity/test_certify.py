"""The Certify loop: readiness, refresh schedule, outages, token re-reads, metrics.

The schedule tests drive ``run_certify`` with a ``MockClock`` and an in-test
certifier whose leaves are dated on the matching fake wall clock; the end-to-end
tests run it against the fake control plane's Identity service over real TLS.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
import trio.testing

import linkerd_proxy.api as api
from linkerd_proxy.addrs import SocketAddr
from linkerd_proxy.admin.state import Readiness
from linkerd_proxy.errors import GrpcError
from linkerd_proxy.grpc.bridge import Bridge, open_bridge
from linkerd_proxy.grpc.client import ControlClient
from linkerd_proxy.grpc.dns import DnsResolver, DnsSettings
from linkerd_proxy.grpc.status import Code
from linkerd_proxy.identity import (
    CertifySettings,
    IdentityMetrics,
    IdentityStore,
    RefreshResult,
    certify_client_context,
    control_certifier,
    refresh_delay,
    run_certify,
)
from linkerd_proxy.metrics import Registry
from linkerd_proxy.testing.control.identity import make_csr
from linkerd_proxy.testing.control_plane import open_control_plane
from linkerd_proxy.transport.backoff import ExponentialBackoff

from .conftest import ALICE, BOB, Ca

EPOCH = float(int(time.time()))
SVC_NAME = "linkerd-identity.linkerd.serviceaccount.identity.linkerd.cluster.local"


def test_refresh_delay() -> None:
    assert refresh_delay(EPOCH + 30, EPOCH, 10, 86400) == pytest.approx(21)
    assert refresh_delay(EPOCH + 3, EPOCH, 0.5, 86400) == pytest.approx(2.1)
    assert refresh_delay(EPOCH + 5, EPOCH, 10, 86400) == 10  # clamped up
    assert refresh_delay(EPOCH + 10 * 86400, EPOCH, 10, 86400) == 86400  # clamped down
    assert refresh_delay(None, EPOCH, 10, 86400) == 10
    assert refresh_delay(EPOCH - 1, EPOCH, 10, 86400) == 10
    assert refresh_delay(EPOCH, EPOCH, 10, 86400) == 10


class FakeIdentity:
    """An in-test Identity service on the mock clock: records each call's time."""

    def __init__(self, ca: Ca, lifetime: float, name: str = ALICE) -> None:
        self.ca = ca
        self.lifetime = lifetime
        self.name = name
        self.down = False
        self.calls: list[float] = []
        self.tokens: list[bytes] = []
        self.key = make_csr(ALICE)[0]

    def wall(self) -> float:
        return EPOCH + trio.current_time()

    async def __call__(self, req: api.identity.CertifyRequest) -> api.identity.CertifyResponse:
        self.calls.append(trio.current_time())
        self.tokens.append(req.token)
        assert req.identity == ALICE
        if self.down:
            raise GrpcError(Code.UNAVAILABLE, "down")
        now = self.wall()
        return api.identity.CertifyResponse(
            leaf_certificate=self.ca.leaf([self.name], self.key, now - 20, now + self.lifetime),
            intermediate_certificates=self.ca.intermediates,
            valid_until=datetime.datetime.fromtimestamp(now + self.lifetime, datetime.UTC),
        )


def setup(
    tmp_path: Path, lifetime: float, min_refresh: float = 10.0, name: str = ALICE
) -> tuple[FakeIdentity, IdentityStore, CertifySettings, Path]:
    ca = Ca()
    fake = FakeIdentity(ca, lifetime, name)
    store = IdentityStore(ALICE, ca.anchors_pem, fake.key)
    token = tmp_path / "token"
    token.write_bytes(b"token-1")
    settings = CertifySettings(str(token), b"csr", min_refresh=min_refresh, max_refresh=86400)
    return fake, store, settings, token


def start_loop(
    nursery: trio.Nursery,
    fake: FakeIdentity,
    store: IdentityStore,
    settings: CertifySettings,
    readiness: Readiness,
    metrics: IdentityMetrics,
) -> None:
    nursery.start_soon(
        lambda: run_certify(
            fake, store, settings, readiness=readiness, metrics=metrics, wall_clock=fake.wall
        )
    )


async def test_first_certificate_ready_then_refresh_at_70_percent(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    fake, store, settings, _ = setup(tmp_path, lifetime=30)
    readiness = Readiness()
    metrics = IdentityMetrics(Registry())
    async with trio.open_nursery() as nursery:
        start_loop(nursery, fake, store, settings, readiness, metrics)
        with trio.fail_after(1):
            await readiness.wait()
        assert store.credentials is not None
        assert store.credentials.expiry == EPOCH + 30
        assert metrics.expiration_timestamp == EPOCH + 30
        assert metrics.refresh_timestamp == EPOCH
        first_leaf = store.credentials.leaf_der
        await trio.sleep(50)
        nursery.cancel_scope.cancel()
    # A 30 s leaf is refreshed at 21 s (70%), the next one 21 s later.
    assert fake.calls == pytest.approx([0, 21, 42])
    assert store.credentials.leaf_der != first_leaf
    assert metrics.refreshes(RefreshResult.OK) == 3
    assert metrics.refreshes(RefreshResult.ERROR) == 0
    assert metrics.expiration_timestamp == pytest.approx(EPOCH + 42 + 30)
    assert metrics.refresh_timestamp == pytest.approx(EPOCH + 42)


async def test_outage_keeps_the_certificate_and_spaces_retries(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    fake, store, settings, _ = setup(tmp_path, lifetime=100, min_refresh=10)
    readiness = Readiness()
    metrics = IdentityMetrics(Registry())
    async with trio.open_nursery() as nursery:
        start_loop(nursery, fake, store, settings, readiness, metrics)
        await trio.sleep(1)
        current = store.credentials
        assert current is not None and readiness.is_ready()
        fake.down = True
        await trio.sleep(144)
        # Kept through the outage (until and past its expiry at 100 s).
        assert store.credentials is current
        fake.down = False
        await trio.sleep(10)
        nursery.cancel_scope.cancel()
    # 0: ok; 70 (70% of 100): fails; then 70% of what is left of the old
    # certificate (21 s), then min_refresh, and min_refresh once it expired.
    assert fake.calls == pytest.approx([0, 70, 91, 101, 111, 121, 131, 141, 151])
    gaps = [b - a for a, b in zip(fake.calls, fake.calls[1:], strict=False)]
    assert min(gaps) >= settings.min_refresh
    assert store.credentials is not current  # renewed once the service came back
    assert metrics.refreshes(RefreshResult.OK) == 2
    assert metrics.refreshes(RefreshResult.ERROR) == 7
    assert readiness.is_ready()


async def test_no_certificate_retries_every_min_refresh_and_stays_unready(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    fake, store, settings, _ = setup(tmp_path, lifetime=100, min_refresh=10)
    fake.down = True
    readiness = Readiness()
    metrics = IdentityMetrics(Registry())
    async with trio.open_nursery() as nursery:
        start_loop(nursery, fake, store, settings, readiness, metrics)
        await trio.sleep(35)
        assert not readiness.is_ready() and store.credentials is None
        fake.down = False
        with trio.fail_after(11):
            await readiness.wait()
        nursery.cancel_scope.cancel()
    assert fake.calls == pytest.approx([0, 10, 20, 30, 40])
    assert metrics.refreshes(RefreshResult.ERROR) == 4
    assert metrics.expiration_timestamp == pytest.approx(EPOCH + 40 + 100)


async def test_invalid_certificate_is_refused(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    # The service answers with a leaf for another identity: never installed.
    fake, store, settings, _ = setup(tmp_path, lifetime=100, name=BOB)
    readiness = Readiness()
    metrics = IdentityMetrics(Registry())
    async with trio.open_nursery() as nursery:
        start_loop(nursery, fake, store, settings, readiness, metrics)
        await trio.sleep(25)
        nursery.cancel_scope.cancel()
    assert len(fake.calls) == 3
    assert store.credentials is None and not readiness.is_ready()
    assert metrics.refreshes(RefreshResult.ERROR) == 3
    assert metrics.expiration_timestamp == 0


async def test_token_is_read_afresh_every_time(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    fake, store, settings, token = setup(tmp_path, lifetime=30)
    readiness = Readiness()
    metrics = IdentityMetrics(Registry())
    async with trio.open_nursery() as nursery:
        start_loop(nursery, fake, store, settings, readiness, metrics)
        await trio.sleep(1)
        token.write_bytes(b"token-2")
        await trio.sleep(21)
        # An empty (or missing) token fails the attempt without a call.
        token.write_bytes(b"")
        await trio.sleep(21)
        token.unlink()
        await trio.sleep(21)
        token.write_bytes(b"token-3")
        await trio.sleep(20)
        nursery.cancel_scope.cancel()
    assert fake.tokens == [b"token-1", b"token-2", b"token-3"]
    # Failed reads at 42 (empty), 52 and 62 (missing); token-3 read at 72.
    assert fake.calls == pytest.approx([0, 21, 72])
    assert metrics.refreshes(RefreshResult.ERROR) == 3


def test_metrics_render() -> None:
    registry = Registry(retain_idle=1.0)
    metrics = IdentityMetrics(registry)
    text = registry.render()
    assert "control_identity_cert_expiration_timestamp_seconds 0\n" in text
    assert "control_identity_cert_refresh_timestamp_seconds 0\n" in text
    assert 'control_identity_cert_refreshes_total{result="ok"} 0\n' in text
    assert 'control_identity_cert_refreshes_total{result="error"} 0\n' in text
    metrics.certified(now=1700000000.5, expiry=1700086400.0)
    metrics.failed()
    metrics.failed()
    text = registry.render()
    assert "# TYPE control_identity_cert_expiration_timestamp_seconds gauge\n" in text
    assert "# TYPE control_identity_cert_refreshes_total counter\n" in text
    assert "control_identity_cert_expiration_timestamp_seconds 1700086400\n" in text
    assert "control_identity_cert_refresh_timestamp_seconds 1700000000.5\n" in text
    assert 'control_identity_cert_refreshes_total{result="ok"} 1\n' in text
    assert 'control_identity_cert_refreshes_total{result="error"} 2\n' in text
    with pytest.raises(ValueError):
        IdentityMetrics(registry)


# ------------------------------------------------------------------- end to end


async def eventually(check: Callable[[], bool], tries: int = 250, step: float = 0.02) -> None:
    """Poll ``check`` every ``step`` seconds until true, at most ``tries`` times."""
    for _ in range(tries):
        if check():
            return
        await trio.sleep(step)
    raise AssertionError("condition not met in time")


def certify_client(bridge: Bridge, addr: SocketAddr, anchors: str, name: str) -> ControlClient:
    return ControlClient(
        bridge,
        addr,
        resolver=DnsResolver(DnsSettings()),
        backoff=ExponentialBackoff(0.05, 0.1, 0.0),
        ssl_context=certify_client_context(anchors),
        server_name=name,
    )


async def test_certify_over_tls_with_the_fake_control_plane(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_bytes(b"sa-token")
    key, csr = make_csr(ALICE)
    readiness = Readiness()
    metrics = IdentityMetrics(Registry())
    async with open_control_plane(tls_names=[SVC_NAME], identity_lifetime=3) as cp:
        anchors = await cp.identity.trust_anchors_pem()
        store = IdentityStore(ALICE, anchors, key)
        settings = CertifySettings(str(token), csr, min_refresh=0.5, max_refresh=60)
        async with open_bridge() as bridge, trio.open_nursery() as nursery:
            client = certify_client(bridge, cp.addr, anchors, SVC_NAME)
            certifier = control_certifier(client, timeout=5)
            start = trio.current_time()
            nursery.start_soon(
                lambda: run_certify(
                    certifier, store, settings, readiness=readiness, metrics=metrics
                )
            )
            with trio.fail_after(5):
                await readiness.wait()
            ready_at = trio.current_time()
            assert store.credentials is not None
            first = store.credentials
            assert first.expiry == pytest.approx(time.time() + 3, abs=1)
            assert await cp.identity.certify_count() == 1
            # A 3 s leaf is refreshed ~2.1 s later (its notAfter is whole seconds,
            # so 2 < remaining <= 3 at install: 1.4 < 70% <= 2.1).
            await eventually(lambda: store.credentials is not first)
            refreshed = trio.current_time() - ready_at
            assert 1.3 < refreshed < 2.6, refreshed
            assert await cp.identity.certify_count() == 2
            assert metrics.refreshes(RefreshResult.OK) == 2
            assert ready_at - start < 5
            nursery.cancel_scope.cancel()
            client.close()


async def test_identity_service_verified_by_name(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_bytes(b"sa-token")
    key, csr = make_csr(ALICE)
    readiness = Readiness()
    metrics = IdentityMetrics(Registry())
    async with open_control_plane(tls_names=["impostor.example"]) as cp:
        anchors = await cp.identity.trust_anchors_pem()
        store = IdentityStore(ALICE, anchors, key)
        settings = CertifySettings(str(token), csr, min_refresh=0.3, call_timeout=2)
        async with open_bridge() as bridge, trio.open_nursery() as nursery:
            client = certify_client(bridge, cp.addr, anchors, SVC_NAME)
            nursery.start_soon(
                lambda: run_certify(
                    control_certifier(client), store, settings, readiness=readiness, metrics=metrics
                )
            )
            await eventually(lambda: metrics.refreshes(RefreshResult.ERROR) >= 2)
            nursery.cancel_scope.cancel()
            client.close()
    assert not readiness.is_ready() and store.credentials is None
