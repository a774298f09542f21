"""The fake control plane (``linkerd_proxy.testing.control_plane``), driven by real clients.

Every service is called with the generated grpclib stubs over loopback, from a
trio-asyncio loop of the test's own (as a proxy's bridge would), both in-process
(``open_control_plane``) and as a process through its admin API
(``ControlPlaneClient``).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import ssl
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import attrs
import pytest
import trio
import trio_asyncio
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from grpclib.client import Channel
from grpclib.config import Configuration
from grpclib.exceptions import GRPCError

import linkerd_proxy.api as api
from linkerd_proxy.addrs import SocketAddr
from linkerd_proxy.grpc.status import Code
from linkerd_proxy.testing.control.admin import CommandError, decode, encode
from linkerd_proxy.testing.control.identity import make_csr
from linkerd_proxy.testing.control_plane import (
    ControlPlaneClient,
    Endpoint,
    FakeControlPlane,
    dst_override,
    open_control_plane,
    outbound_default,
    retry_budget,
    route,
)

WEB = "web.ns.svc.cluster.local:8080"
A = SocketAddr.parse("10.0.0.1:8080")
B = SocketAddr.parse("10.0.0.2:8080")
C = SocketAddr.parse("10.0.0.3:8080")
LOST = -1  # the connection went away without a status


@attrs.define
class Watch:
    """A server stream read by a real client; messages land in ``recv``."""

    recv: trio.MemoryReceiveChannel[Any]
    done: trio.Event = attrs.field(factory=trio.Event)
    code: int | None = None
    message: str | None = None

    async def next(self) -> Any:
        with trio.fail_after(5):
            return await self.recv.receive()

    async def end(self) -> int:
        """Wait for the end of the stream: its status code, or LOST. No message may be left."""
        with trio.fail_after(5):
            await self.done.wait()
        left = [m async for m in self.recv]
        assert left == [], f"unexpected messages: {left}"
        assert self.code is not None
        return self.code


@attrs.define
class Client:
    """The generated stubs on a grpclib channel, on the test's own asyncio loop."""

    loop: asyncio.AbstractEventLoop
    nursery: trio.Nursery
    channel: Channel

    @property
    def dst(self) -> api.destination.DestinationStub:
        return api.destination.DestinationStub(self.channel)

    @property
    def outbound(self) -> api.outbound.OutboundPoliciesStub:
        return api.outbound.OutboundPoliciesStub(self.channel)

    @property
    def inbound(self) -> api.inbound.InboundServerPoliciesStub:
        return api.inbound.InboundServerPoliciesStub(self.channel)

    async def unary(self, fn: Callable[[], Any]) -> Any:
        async def aio() -> Any:
            return await fn()

        return await trio_asyncio.aio_as_trio(aio, loop=self.loop)()

    async def certify(self, request: api.identity.CertifyRequest) -> Any:
        stub = api.identity.IdentityStub(self.channel)
        return await self.unary(lambda: stub.certify(request))

    def watch(self, open_stream: Callable[[], Any]) -> Watch:
        send, recv = trio.open_memory_channel[Any](100)
        w = Watch(recv)

        async def aio() -> None:
            async for msg in open_stream():
                send.send_nowait(msg)

        async def run() -> None:
            try:
                await trio_asyncio.aio_as_trio(aio, loop=self.loop)()
                w.code = 0
            except GRPCError as exc:
                w.code, w.message = int(exc.status.value), exc.message
            except Exception:  # connection lost: grpclib's StreamTerminatedError, OSError
                w.code = LOST
            finally:
                send.close()
                w.done.set()

        self.nursery.start_soon(run)
        return w

    def get(self, path: str) -> Watch:
        return self.watch(lambda: self.dst.get(api.destination.GetDestination(path=path)))

    def get_profile(self, path: str) -> Watch:
        request = api.destination.GetDestination(path=path)
        return self.watch(lambda: self.dst.get_profile(request))

    def outbound_watch(self, spec: api.outbound.TrafficSpec) -> Watch:
        return self.watch(lambda: self.outbound.watch(spec))


@attrs.define
class Conn:
    loop: asyncio.AbstractEventLoop
    nursery: trio.Nursery
    channels: list[Channel] = attrs.field(factory=list)

    async def client(
        self, addr: SocketAddr, ssl_context: ssl.SSLContext | None = None, name: str = ""
    ) -> Client:
        host, port = addr.to_sockaddr()

        async def make() -> Channel:
            config = Configuration(ssl_target_name_override=name) if ssl_context else None
            return Channel(host, port, ssl=ssl_context, config=config)

        channel = await trio_asyncio.aio_as_trio(make, loop=self.loop)()
        self.channels.append(channel)
        return Client(self.loop, self.nursery, channel)


@pytest.fixture
async def conn() -> AsyncIterator[Conn]:
    async with trio_asyncio.open_loop() as loop, trio.open_nursery() as nursery:
        c = Conn(loop, nursery)
        yield c
        nursery.cancel_scope.cancel()
        for channel in c.channels:
            channel.close()


@pytest.fixture
async def cp() -> AsyncIterator[FakeControlPlane]:
    async with open_control_plane() as plane:
        yield plane


def _addr(tcp: api.net.TcpAddress) -> SocketAddr:
    assert tcp.ip is not None and tcp.ip.ipv4 is not None
    return SocketAddr.parse(
        f"{'.'.join(str(tcp.ip.ipv4 >> s & 255) for s in (24, 16, 8, 0))}:{tcp.port}"
    )


def _added(update: api.destination.Update) -> list[SocketAddr]:
    assert update.add is not None, update
    return sorted((_addr(w.addr) for w in update.add.addrs if w.addr), key=str)


def _removed(update: api.destination.Update) -> list[SocketAddr]:
    assert update.remove is not None, update
    return sorted((_addr(a) for a in update.remove.addrs), key=str)


# ---------------------------------------------------------------- Destination.Get


async def test_get_sees_adds_and_removes_in_order(cp: FakeControlPlane, conn: Conn) -> None:
    await cp.dst.set_endpoints(
        WEB,
        [
            Endpoint(
                A,
                labels={"pod": "a"},
                tls_identity="web.ns.serviceaccount.identity.linkerd.cluster.local",
                protocol_hint="h2",
                opaque_port=4143,
                weight=3,
            ),
            Endpoint(B),
        ],
        set_labels={"service": "web"},
    )
    client = await conn.client(cp.addr)
    w = client.get(WEB)

    first = await w.next()
    assert _added(first) == [A, B]
    assert first.add.metric_labels == {"service": "web"}
    a = next(x for x in first.add.addrs if _addr(x.addr) == A)
    assert a.weight == 3 and a.metric_labels == {"pod": "a"}
    assert (
        a.tls_identity.dns_like_identity.name
        == "web.ns.serviceaccount.identity.linkerd.cluster.local"
    )
    assert a.protocol_hint.h2 is not None and a.protocol_hint.opaque_transport.inbound_port == 4143
    b = next(x for x in first.add.addrs if _addr(x.addr) == B)
    assert b.tls_identity is None and b.protocol_hint is None and b.weight == 10000

    await cp.dst.add(WEB, [Endpoint(C)])
    await cp.dst.remove(WEB, [A])
    await cp.dst.set_endpoints(WEB, [Endpoint(C)])
    await cp.dst.no_endpoints(WEB, exists=True)
    await cp.dst.no_endpoints(WEB, exists=False)

    assert _added(await w.next()) == [C]
    assert _removed(await w.next()) == [A]
    assert _removed(await w.next()) == [B]
    assert (await w.next()).no_endpoints.exists is True
    assert (await w.next()).no_endpoints.exists is False
    assert await cp.dst.endpoints(WEB) == []
    assert await cp.dst.get_count(WEB) == 1
    assert await cp.dst.active_gets(WEB) == 1
    assert await cp.dst.fail_streams(WEB, Code.OK) == 1
    assert await w.end() == 0


async def test_get_without_port_gets_80_and_unknowns_are_refused(
    cp: FakeControlPlane, conn: Conn
) -> None:
    await cp.dst.no_endpoints("empty.ns.svc.cluster.local")
    client = await conn.client(cp.addr)
    w = client.get("empty.ns.svc.cluster.local:80")
    assert (await w.next()).no_endpoints.exists is True

    unknown = client.get("nope.ns.svc.cluster.local:80")
    assert await unknown.end() == Code.NOT_FOUND
    external = client.get("example.com:80")
    assert await external.end() == Code.INVALID_ARGUMENT
    ip = client.get("10.1.1.1:80")
    assert await ip.end() == Code.INVALID_ARGUMENT

    await cp.dst.reject("empty.ns.svc.cluster.local", Code.FAILED_PRECONDITION, "nope")
    assert await w.end() == Code.FAILED_PRECONDITION
    again = client.get("empty.ns.svc.cluster.local:80")
    assert await again.end() == Code.FAILED_PRECONDITION
    assert again.message == "nope"
    assert await cp.dst.get_count("empty.ns.svc.cluster.local") == 2


async def test_stop_start_is_an_outage_and_reconnect_gets_the_current_set(
    cp: FakeControlPlane, conn: Conn
) -> None:
    await cp.dst.set_endpoints(WEB, [Endpoint(A), Endpoint(B)])
    client = await conn.client(cp.addr)
    w = client.get(WEB)
    assert _added(await w.next()) == [A, B]

    await cp.stop()
    assert await w.end() in (LOST, Code.UNAVAILABLE, Code.CANCELLED)
    refused = client.get(WEB)
    assert await refused.end() == LOST

    await cp.dst.set_endpoints(WEB, [Endpoint(C)])  # changed during the outage
    await cp.start()
    assert await cp.grpc_addr() == cp.addr
    again = client.get(WEB)
    assert _added(await again.next()) == [C]  # a full snapshot: a Reset for the client
    with trio.fail_after(5):
        await cp.dst.wait_for_gets(WEB, 2)
    assert await cp.dst.get_count(WEB) == 2  # the refused one never reached a handler


async def test_fail_streams_ends_them_with_the_status(cp: FakeControlPlane, conn: Conn) -> None:
    await cp.dst.set_endpoints(WEB, [Endpoint(A)])
    other = "other.ns.svc.cluster.local:80"
    await cp.dst.set_endpoints(other, [Endpoint(B)])
    client = await conn.client(cp.addr)
    w1, w2, w3 = client.get(WEB), client.get(WEB), client.get(other)
    for w in (w1, w2, w3):
        await w.next()

    assert await cp.dst.fail_streams(WEB, Code.UNAVAILABLE, "bye") == 2
    assert await w1.end() == Code.UNAVAILABLE and w1.message == "bye"
    assert await w2.end() == Code.UNAVAILABLE
    assert await cp.dst.active_gets(other) == 1
    await cp.dst.add(other, [Endpoint(C)])
    assert _added(await w3.next()) == [C]  # the other path is untouched
    assert await cp.dst.fail_streams(None, Code.INTERNAL) == 1
    assert await w3.end() == Code.INTERNAL


async def test_go_silent_keeps_streams_open_and_sends_nothing(
    cp: FakeControlPlane, conn: Conn
) -> None:
    await cp.dst.set_endpoints(WEB, [Endpoint(A)])
    client = await conn.client(cp.addr)
    w = client.get(WEB)
    assert _added(await w.next()) == [A]

    assert await cp.dst.go_silent(WEB) == 1
    await cp.dst.add(WEB, [Endpoint(B)])
    late = client.get(WEB)  # opened while silent: not even the snapshot
    with trio.fail_after(5):
        await cp.dst.wait_for_gets(WEB, 2)
    assert await cp.dst.active_gets(WEB) == 2
    # An end queued after the (dropped) Add: had the Add been sent, end() would see it.
    assert await cp.dst.fail_streams(WEB, Code.OK) == 2
    assert await w.end() == 0
    assert await late.end() == 0

    await cp.dst.resume(WEB)
    fresh = client.get(WEB)
    assert _added(await fresh.next()) == [A, B]


# ---------------------------------------------------------------- GetProfile


async def test_profiles(cp: FakeControlPlane, conn: Conn) -> None:
    client = await conn.client(cp.addr)
    await cp.dst.profile(
        WEB,
        routes=[route("/api/.*", failure_statuses=(500, 599), retryable=True, timeout=1.5)],
        retry_budget=retry_budget(ttl=10, retry_ratio=0.2, min_retries_per_second=10),
        dst_overrides=[dst_override("web-v2.ns.svc.cluster.local:8080", 100)],
    )
    w = client.get_profile(WEB)
    profile = await w.next()
    assert profile.fully_qualified_name == "web.ns.svc.cluster.local"
    (r,) = profile.routes
    assert r.condition.path.regex == "/api/.*" and r.is_retryable
    assert r.timeout == datetime.timedelta(seconds=1.5)
    assert r.response_classes[0].condition.status.min == 500 and r.response_classes[0].is_failure
    assert profile.retry_budget.ttl == datetime.timedelta(seconds=10)
    assert profile.retry_budget.min_retries_per_second == 10
    assert profile.dst_overrides[0].authority == "web-v2.ns.svc.cluster.local:8080"

    await cp.dst.profile(WEB, opaque_protocol=True)
    updated = await w.next()
    assert updated.opaque_protocol and updated.routes == []

    await cp.dst.profile_not_found(WEB)
    assert await w.end() == Code.INVALID_ARGUMENT
    assert await client.get_profile(WEB).end() == Code.INVALID_ARGUMENT
    assert await cp.dst.profile_count(WEB) == 2


async def test_unknown_profiles_are_answered_as_the_controller_does(
    cp: FakeControlPlane, conn: Conn
) -> None:
    client = await conn.client(cp.addr)
    svc = client.get_profile("db.ns.svc.cluster.local:5432")
    default = await svc.next()
    assert default.fully_qualified_name == "db.ns.svc.cluster.local" and default.routes == []

    ip = client.get_profile("10.1.2.3:8080")
    by_ip = await ip.next()
    assert by_ip.fully_qualified_name == ""
    assert _addr(by_ip.endpoint.addr) == SocketAddr.parse("10.1.2.3:8080")

    assert await client.get_profile("example.com:80").end() == Code.INVALID_ARGUMENT
    assert await cp.dst.fail_profile_streams(None, Code.UNAVAILABLE) == 2
    assert await svc.end() == Code.UNAVAILABLE
    assert await ip.end() == Code.UNAVAILABLE


# ---------------------------------------------------------------- Policy


async def test_outbound_policy(cp: FakeControlPlane, conn: Conn) -> None:
    client = await conn.client(cp.addr)
    target = SocketAddr.parse("10.96.0.10:8080")
    tcp = api.net.TcpAddress(ip=api.net.IpAddress(ipv4=int(target.ip)), port=target.port)
    spec = api.outbound.TrafficSpec(source_workload="test:test", addr=tcp)

    assert await client.outbound_watch(spec).end() == Code.NOT_FOUND

    await cp.policy.outbound_default(target, WEB)
    w = client.outbound_watch(spec)
    policy = await w.next()
    detect = policy.protocol.detect
    assert detect.timeout == datetime.timedelta(seconds=10)
    rule = detect.http1.routes[0].rules[0]
    backend = rule.backends.first_available.backends[0].backend
    assert backend.balancer.discovery.dst.path == WEB
    assert backend.queue.capacity == 100

    await cp.policy.outbound_policy(target, outbound_default("web.ns.svc.cluster.local:9090"))
    updated = await w.next()
    assert (
        updated.protocol.detect.opaque.routes[0]
        .rules[0]
        .backends.first_available.backends[0]
        .backend.balancer.discovery.dst.path
        == "web.ns.svc.cluster.local:9090"
    )
    assert await cp.policy.outbound_not_found(target) == 1
    assert await w.end() == Code.NOT_FOUND
    assert await cp.policy.outbound_count(target) == 2

    by_name = api.outbound.TrafficSpec(source_workload="test:test", authority="web.example.com:80")
    await cp.policy.outbound_default("web.example.com:80", "web.example.com:80")
    named = client.outbound_watch(by_name)
    assert (await named.next()).protocol.detect is not None
    assert await cp.policy.fail_outbound_streams(None, Code.UNAVAILABLE) == 1
    assert await named.end() == Code.UNAVAILABLE


async def test_inbound_policy(cp: FakeControlPlane, conn: Conn) -> None:
    client = await conn.client(cp.addr)
    spec = api.inbound.PortSpec(workload="test:test", port=8080)
    missing = client.watch(lambda: client.inbound.watch_port(spec))
    assert await missing.end() == Code.NOT_FOUND

    await cp.policy.inbound_policy(8080)
    w = client.watch(lambda: client.inbound.watch_port(spec))
    server = await w.next()
    assert server.protocol.detect.timeout == datetime.timedelta(seconds=10)
    assert server.authorizations[0].authentication.unauthenticated is not None
    assert server.labels["name"] == "all-unauthenticated"
    assert await cp.policy.inbound_not_found(8080) == 1
    assert await w.end() == Code.NOT_FOUND
    assert await cp.policy.inbound_count(8080) == 2


# ---------------------------------------------------------------- Identity

LOCAL_ID = "default.test.serviceaccount.identity.linkerd.cluster.local"


def _certify_request(identity: str = LOCAL_ID, token: bytes = b"token") -> tuple[Any, Any]:
    key, csr = make_csr(identity)
    req = api.identity.CertifyRequest(
        identity=identity, token=token, certificate_signing_request=csr
    )
    return key, req


async def _certify(client: Client, req: Any) -> Any:
    try:
        return await client.certify(req)
    except GRPCError as exc:
        return int(exc.status.value)


async def test_certify_issues_a_verifiable_leaf(conn: Conn) -> None:
    async with open_control_plane(identity_lifetime=30) as cp:
        client = await conn.client(cp.addr)
        key, req = _certify_request()
        before = datetime.datetime.now(datetime.UTC)
        rsp = await client.certify(req)

        leaf = x509.load_der_x509_certificate(rsp.leaf_certificate)
        (inter_der,) = rsp.intermediate_certificates
        inter = x509.load_der_x509_certificate(inter_der)
        root = x509.load_pem_x509_certificate((await cp.identity.trust_anchors_pem()).encode())
        leaf.verify_directly_issued_by(inter)
        inter.verify_directly_issued_by(root)
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == [LOCAL_ID]
        assert leaf.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ) == key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        assert rsp.valid_until == leaf.not_valid_after_utc
        lifetime = (rsp.valid_until - before).total_seconds()
        assert 29 <= lifetime <= 31
        assert leaf.not_valid_before_utc <= before
        assert await cp.identity.issued() == [LOCAL_ID]
        assert await cp.identity.certify_count() == 1


async def test_certify_refuses_bad_requests_and_fails_on_demand(
    cp: FakeControlPlane, conn: Conn
) -> None:
    client = await conn.client(cp.addr)
    _, wrong_san = _certify_request()
    wrong_san.identity = "someone.else.serviceaccount.identity.linkerd.cluster.local"
    assert await _certify(client, wrong_san) == Code.INVALID_ARGUMENT
    _, no_token = _certify_request(token=b"")
    assert await _certify(client, no_token) == Code.UNAUTHENTICATED

    await cp.identity.fail(2)
    _, req = _certify_request()
    assert await _certify(client, req) == Code.UNAVAILABLE
    assert await _certify(client, req) == Code.UNAVAILABLE
    assert not isinstance(await _certify(client, req), int)

    await cp.identity.go_down(Code.INTERNAL)
    assert await _certify(client, req) == Code.INTERNAL
    await cp.identity.come_up()
    await cp.identity.set_lifetime(5)
    rsp = await client.certify(req)
    leaf = x509.load_der_x509_certificate(rsp.leaf_certificate)
    assert (leaf.not_valid_after_utc - datetime.datetime.now(datetime.UTC)).total_seconds() <= 5
    assert await cp.identity.certify_count() == 7
    assert await cp.identity.issued() == [LOCAL_ID, LOCAL_ID]


async def test_tls_serves_the_names_signed_by_the_test_ca(conn: Conn) -> None:
    name = "identity.linkerd.serviceaccount.identity.linkerd.cluster.local"
    async with open_control_plane(tls_names=[name]) as cp:
        ctx = ssl.create_default_context(cadata=await cp.identity.trust_anchors_pem())
        ctx.set_alpn_protocols(["h2"])
        client = await conn.client(cp.addr, ctx, name)
        _, req = _certify_request()
        rsp = await client.certify(req)
        assert rsp.leaf_certificate

        wrong = ssl.create_default_context(cadata=await cp.identity.trust_anchors_pem())
        wrong.set_alpn_protocols(["h2"])
        other = await conn.client(cp.addr, wrong, "destination.example")
        with pytest.raises(ssl.SSLCertVerificationError):
            await other.certify(req)


# ---------------------------------------------------------------- process mode


def test_admin_encoding_round_trips() -> None:
    ep = Endpoint(
        "10.0.0.1:80",
        labels={"a": "b"},
        tls_identity="x",
        protocol_hint="opaque",
        opaque_port=4143,
        weight=2,
        authority_override="o:80",
    )
    policy = outbound_default(WEB)
    args = {"endpoints": [ep], "addr": A, "policy": policy, "n": None, "s": "t"}
    back = decode(json.loads(json.dumps(encode(args))))
    assert back["endpoints"] == [ep] and back["addr"] == A and back["n"] is None
    assert bytes(back["policy"]) == bytes(policy)
    with pytest.raises(CommandError):
        decode({"$msg": "os:system", "b64": ""})


async def _start_process(nursery: trio.Nursery) -> tuple[trio.Process, dict[str, str]]:
    argv = [sys.executable, "-m", "linkerd_proxy.testing.control_plane",
            "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"]  # fmt: skip
    proc = await trio.lowlevel.open_process(argv, stdout=-1)
    assert proc.stdout is not None
    line = bytearray()
    with trio.fail_after(10):
        while not line.endswith(b"\n"):
            chunk = await proc.stdout.receive_some(1)
            assert chunk, "the control plane exited before listening"
            line += chunk
    return proc, json.loads(line)


async def test_process_mode_through_the_admin_client(conn: Conn) -> None:
    async with trio.open_nursery() as nursery:
        proc, addrs = await _start_process(nursery)
        try:
            cp = ControlPlaneClient(addrs["admin"])
            with trio.fail_after(10):
                await cp.wait_ready()
            grpc_addr = await cp.grpc_addr()
            assert str(grpc_addr) == addrs["grpc"]
            env = await cp.proxy_env()
            assert env["LINKERD2_PROXY_DESTINATION_SVC_ADDR"] == addrs["grpc"]

            await cp.dst.set_endpoints(WEB, [Endpoint(A, tls_identity="a.id")], {"svc": "web"})
            client = await conn.client(grpc_addr)
            w = client.get(WEB)
            first = await w.next()
            assert _added(first) == [A] and first.add.metric_labels == {"svc": "web"}
            await cp.dst.add(WEB, [Endpoint(B)])
            await cp.dst.remove(WEB, [A])
            assert _added(await w.next()) == [B]
            assert _removed(await w.next()) == [A]

            await cp.stop()
            assert await w.end() in (LOST, Code.UNAVAILABLE, Code.CANCELLED)
            await cp.start()
            again = client.get(WEB)
            assert _added(await again.next()) == [B]
            assert await cp.dst.get_count(WEB) == 2
            assert await cp.dst.fail_streams(WEB, Code.UNAVAILABLE) == 1
            assert await again.end() == Code.UNAVAILABLE

            await cp.policy.outbound_default("10.96.0.1:80", WEB)
            await cp.dst.profile(WEB, routes=[route("/.*")], retry_budget=retry_budget())
            p = client.get_profile(WEB)
            assert (await p.next()).routes[0].condition.path.regex == "/.*"

            _, req = _certify_request()
            await cp.identity.fail(1)
            assert await _certify(client, req) == Code.UNAVAILABLE
            assert not isinstance(await _certify(client, req), int)
            assert await cp.identity.certify_count() == 2
            assert "BEGIN CERTIFICATE" in await cp.identity.trust_anchors_pem()

            with pytest.raises(CommandError, match="unknown command"):
                await cp._call("dst", "__init__", {})
            with pytest.raises(CommandError, match="unexpected keyword"):
                await cp._call("dst", "get_count", {"bogus": 1})
        finally:
            proc.terminate()
            with trio.fail_after(10):
                assert await proc.wait() in (0, -15)
