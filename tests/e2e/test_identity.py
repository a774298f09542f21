"""Identity and automatic mTLS between two real proxies, in two pods.

Pod A (192.0.2.1) and pod B (192.0.2.2) both run linkerd-init's rules and the real
binary as the proxy uid, each with its own identity directory (prepared by
``linkerd-proxy identity`` run as that uid, as the injector does) and its own fake
control plane as a process on 127.0.0.1:8086 (admin on :8087, driven with curl
inside the pod). The two control planes issue from one test CA (``--ca-dir``), with
30 s certificates. Pod B runs the applications: hypercorn (HTTP/1.1 and h2c) on
8080, a TCP echo server on 9000 and a counting HTTP backend on 8081.

Services are IPs in 198.51.100.0/24, which pod A routes towards pod B. Pod A's
control plane resolves each one to a pod B endpoint with B's identity: one without
an opaque-transport port (mTLS straight to the application port, which B's rules
redirect to its inbound proxy), the others with inbound port 4143 (the transport
header, with an H2 hint for HTTP and an opaque hint for TCP).

A packet capture on pod A's veth checks that no application payload crosses in
plaintext while a UDP datagram with the same marker (not redirected) is seen.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pytest
import trio

from linkerd_proxy.testing.capture import read_frames
from linkerd_proxy.testing.control.admin import CommandError, decode, encode
from linkerd_proxy.testing.control.facade import ControlFacade
from linkerd_proxy.testing.control.values import Endpoint
from linkerd_proxy.testing.netns import PROXY_UID, NetNs, linkerd_init, pod_pair, require_netns
from linkerd_proxy.testing.process import ProxyProcess, proxy_command

pytestmark = [pytest.mark.system]

CP_GRPC = "127.0.0.1:8086"
CP_ADMIN = "127.0.0.1:8087"
SERVICE_NET = "198.51.100.0/24"
LIFETIME = 30
CP_NAME = "linkerd-identity.linkerd.serviceaccount.identity.linkerd.cluster.local"
A_ID = "a.ns.serviceaccount.identity.linkerd.cluster.local"
B_ID = "b.ns.serviceaccount.identity.linkerd.cluster.local"
MARKER = b"plaintext-marker-5d2e9c41"
#: service IP -> (fqn, endpoint port, opaque-transport port, protocol hint)
SERVICES: dict[str, tuple[str, int, int | None, Any]] = {
    "198.51.100.20": ("mtls.ns.svc.cluster.local", 8080, None, None),
    "198.51.100.21": ("hdr-h2.ns.svc.cluster.local", 8080, 4143, "h2"),
    "198.51.100.22": ("hdr-tcp.ns.svc.cluster.local", 9000, 4143, "opaque"),
    "198.51.100.23": ("refresh.ns.svc.cluster.local", 8081, 4143, None),
}


def _module(name: str, *args: str) -> list[str]:
    return [sys.executable, "-m", f"linkerd_proxy.testing.{name}", *args]


def _first_line(proc: subprocess.Popen[bytes], what: str, timeout: float = 20.0) -> bytes:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            raise RuntimeError(f"{what} printed nothing in {timeout}s")
    return proc.stdout.readline()


class NsControl(ControlFacade):
    """A fake control plane process in a pod, driven with curl inside the pod."""

    def __init__(self, ns: NetNs) -> None:
        super().__init__(self._remote)
        self.ns = ns

    async def _remote(self, service: str, method: str, args: dict[str, Any]) -> Any:
        body = json.dumps({"service": service, "method": method, "args": encode(args)})
        argv = ["curl", "-sS", "-m", "10", "-H", "content-type: application/json",
                "-H", "Expect:", "--data-binary", "@-", "-w", "\n%{http_code}",
                f"http://{CP_ADMIN}/call"]  # fmt: skip
        with trio.fail_after(15):
            proc = await trio.run_process(
                self.ns.command(argv), stdin=body.encode(), capture_stdout=True, check=False
            )
        payload, _, code = proc.stdout.decode().rpartition("\n")
        reply = json.loads(payload or "{}")
        if code != "200":
            raise CommandError(reply.get("error", f"admin answered {code}"))
        return decode(reply["result"])


@attrs.define
class Mesh:
    a: NetNs
    b: NetNs
    proxy_a: ProxyProcess
    proxy_b: ProxyProcess
    cp_a: NsControl
    cp_b: NsControl
    workdir: str

    def logs(self) -> str:
        return (
            f"--- proxy A ---\n{self.proxy_a.logs()[-4000:]}\n"
            f"--- proxy B ---\n{self.proxy_b.logs()[-4000:]}"
        )

    def syns(self, port: int) -> int:
        """SYNs for ``port`` that arrived in pod B (before linkerd-init's redirect)."""
        out = self.b.run(["iptables", "-w", "-t", "mangle", "-L", "PREROUTING", "-v", "-n",
                          "-x"]).stdout  # fmt: skip
        for line in out.splitlines():
            if f"dpt:{port}" in line:
                return int(line.split()[0])
        raise AssertionError(f"no SYN counter for {port}:\n{out}")

    def curl(self, url: str, *extra: str, data: bytes | None = None) -> tuple[str, str]:
        """Run curl in pod A (redirected to proxy A): (status, body)."""
        argv = ["curl", "-sS", "-m", "10", "-w", "\n%{http_code}", *extra, url]
        if data is not None:
            argv[1:1] = ["--data-binary", data.decode()]
        proc = self.a.run(argv, timeout=15, check=False)
        body, _, code = proc.stdout.rpartition("\n")
        return code, body

    def run_py(self, ns: NetNs, code: str, *, uid: int | None = None, timeout: float = 20) -> Any:
        """Run a Python snippet in ``ns`` that prints one JSON line; that value."""
        proc = ns.popen([sys.executable, "-c", code], uid=uid)
        try:
            out, err = proc.communicate(timeout=timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
        assert proc.returncode == 0, err.decode()
        return json.loads(out.decode().strip().splitlines()[-1])


def _identity_dir(workdir: str, ns: NetNs, name: str, anchors: str) -> dict[str, str]:
    """Prepare an identity dir with ``linkerd-proxy identity`` as the proxy uid; its env."""
    ident = os.path.join(workdir, f"id-{name.split('.')[0]}")
    os.mkdir(ident)
    os.chown(ident, PROXY_UID, PROXY_UID)
    token = os.path.join(workdir, f"{name.split('.')[0]}.token")
    with open(token, "w") as f:
        f.write("a-service-account-token")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LINKERD2_PROXY_IDENTITY_DIR": ident,
        "LINKERD2_PROXY_IDENTITY_LOCAL_NAME": name,
        "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS": anchors,
    }
    proc = ns.popen([*proxy_command(), "identity"], uid=PROXY_UID, env=env)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    assert sorted(os.listdir(ident)) == ["csr.der", "key.p8"]
    env.pop("PATH")
    env.update(
        {
            "LINKERD2_PROXY_IDENTITY_TOKEN_FILE": token,
            "LINKERD2_PROXY_IDENTITY_SVC_ADDR": CP_GRPC,
            "LINKERD2_PROXY_IDENTITY_SVC_NAME": CP_NAME,
            "LINKERD2_PROXY_DESTINATION_SVC_ADDR": CP_GRPC,
            "LINKERD2_PROXY_DESTINATION_SVC_NAME": CP_NAME,
            "LINKERD2_PROXY_POLICY_SVC_ADDR": CP_GRPC,
            "LINKERD2_PROXY_POLICY_SVC_NAME": CP_NAME,
            "LINKERD2_PROXY_POLICY_WORKLOAD": "test:test",
            "LINKERD2_PROXY_INBOUND_IPS": str(ns.ip),
            "LINKERD2_PROXY_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION": "9000",
            # Retries of a failed refresh may come closer than the default 10 s, so
            # that a 30 s certificate can recover from an outage before it expires.
            "LINKERD2_PROXY_IDENTITY_MIN_REFRESH": "1s",
            "LINKERD2_PROXY_INBOUND_DETECT_TIMEOUT": "2s",
            "LINKERD2_PROXY_SHUTDOWN_GRACE_PERIOD": "1s",
        }
    )
    return env


@pytest.fixture(scope="module")
def mesh() -> Iterator[Mesh]:
    require_netns(("ip", "iptables", "setpriv", "curl"))
    procs: list[subprocess.Popen[bytes]] = []
    with (
        tempfile.TemporaryDirectory(prefix="ident-") as workdir,
        pod_pair() as (a, b),
        contextlib.ExitStack() as stack,
    ):
        os.chmod(workdir, 0o755)
        linkerd_init(a)
        linkerd_init(b)
        a.run(["ip", "route", "add", SERVICE_NET, "via", str(b.ip)])
        # SYNs arriving in pod B from the veth, by destination port before the redirect:
        # 4143 is the transport-header path, 8080 and 9000 plain mTLS.
        for port in (4143, 8080, 9000):
            b.run(["iptables", "-w", "-t", "mangle", "-A", "PREROUTING", "!", "-i", "lo",
                   "-p", "tcp", "--syn", "--dport", str(port)])  # fmt: skip
        try:
            ca_dir = os.path.join(workdir, "ca")
            for ns in (a, b):  # A's makes the CA, B's loads it
                with open(os.path.join(workdir, f"cp-{ns.name}.err"), "wb") as err:
                    cp = ns.popen(_module("control_plane", "--listen", CP_GRPC, "--admin",
                                          CP_ADMIN, "--ca-dir", ca_dir, "--identity-lifetime",
                                          str(LIFETIME)), stderr=err.fileno())  # fmt: skip
                procs.append(cp)
                assert b"grpc" in _first_line(cp, "the control plane")
            with open(os.path.join(ca_dir, "root.pem")) as f:
                anchors = f.read()
            backends_log = os.path.join(workdir, "backends.log")
            apps = {  # argv -> whether it prints a line once listening
                ("apps", "http-server", "--port", "8080"): True,
                ("load", "backends", "--port", "8081", "--log", backends_log): True,
                ("peers", "echo-server", "--port", "9000"): False,
            }
            for (mod, *args), announces in apps.items():
                app = b.popen(_module(mod, *args), stderr=subprocess.DEVNULL)
                procs.append(app)
                if announces:
                    _first_line(app, f"{mod} {args[0]}")
            env_b = _identity_dir(workdir, b, B_ID, anchors)
            env_a = _identity_dir(workdir, a, A_ID, anchors)
            env_a["LINKERD2_PROXY_DESTINATION_PROFILE_NETWORKS"] = SERVICE_NET
            proxy_b = stack.enter_context(ProxyProcess.start(b, env_b))
            proxy_a = stack.enter_context(ProxyProcess.start(a, env_a))
            proxy_b.wait_ready()
            proxy_a.wait_ready()
            mesh = Mesh(a, b, proxy_a, proxy_b, NsControl(a), NsControl(b), workdir)
            trio.run(_serve_all, mesh)
            yield mesh
        finally:
            stack.close()
            for p in procs:
                p.kill()
                p.wait(10)


async def _serve_all(mesh: Mesh) -> None:
    for ip, (fqn, port, opaque_port, hint) in SERVICES.items():
        ep = Endpoint(f"{mesh.b.ip}:{port}", tls_identity=B_ID, opaque_port=opaque_port,
                      protocol_hint=hint)  # fmt: skip
        svc_port = 9000 if port == 9000 else 80
        await mesh.cp_a.dst.set_endpoints(f"{fqn}:{svc_port}", [ep])
        await mesh.cp_a.dst.profile(f"{ip}:{svc_port}", fqn=fqn)


def _veth(ns: NetNs) -> str:
    out = ns.run(["ip", "-o", "link", "show"]).stdout
    for line in out.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if name != "lo":
            return name
    raise AssertionError(f"no veth in {ns.name}:\n{out}")


_TCP_CLIENT = """
import json, socket
s = socket.create_connection(("198.51.100.22", 9000), timeout=10)
msg = {marker!r} + b"\\n"
s.sendall(msg)
got = b""
while len(got) < len(msg):
    chunk = s.recv(65536)
    if not chunk:
        break
    got += chunk
print(json.dumps({{"echo": got.decode()}}))
"""

_UDP_CONTROL = """
import json, socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.sendto(b"CTRL:" + {marker!r}, ("{ip}", 9999))
print(json.dumps({{"sent": True}}))
"""


def test_app_traffic_is_mtls_on_the_wire(mesh: Mesh) -> None:
    """HTTP/1, HTTP/2 and opaque TCP from pod A's app to pod B's, with and without
    the transport header: all succeed, B's app sees A's identity, B's inbound
    metrics say tls="true" with A's client_id, and the capture on the veth holds
    B's name (TLS ClientHellos) but the payload marker only in the plaintext UDP
    control datagram."""
    cap_file = os.path.join(mesh.workdir, "veth.cap")
    cap = mesh.a.popen(_module("capture", "--iface", _veth(mesh.a), "--out", cap_file,
                               "--duration", "60"), stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        assert b"capturing" in _first_line(cap, "the capture")
        before = mesh.proxy_b.scrape()
        syns_before = {p: mesh.syns(p) for p in (4143, 8080, 9000)}
        mesh.run_py(mesh.a, _UDP_CONTROL.format(marker=MARKER, ip=mesh.b.ip), uid=PROXY_UID)
        for ip in ("198.51.100.20", "198.51.100.21"):
            for extra in ((), ("--http2-prior-knowledge",)):
                code, body = mesh.curl(f"http://{ip}/echo", *extra, data=MARKER)
                assert (code, body) == ("200", MARKER.decode()), (ip, extra, code, mesh.logs())
                code, body = mesh.curl(f"http://{ip}/headers", *extra,
                                       "-H", "l5d-client-id: spoofed")  # fmt: skip
                assert code == "200", (ip, extra, code, body)
                ids = [v for k, v in json.loads(body)["headers"] if k.lower() == "l5d-client-id"]
                assert ids == [A_ID], (ip, extra, body)
        echoed = mesh.run_py(mesh.a, _TCP_CLIENT.format(marker=MARKER), timeout=20)
        assert echoed == {"echo": MARKER.decode() + "\n"}, (echoed, mesh.logs())
    finally:
        cap.terminate()
        cap.wait(10)
    after = mesh.proxy_b.scrape()
    syns = {p: mesh.syns(p) - syns_before[p] for p in (4143, 8080, 9000)}
    # .20 goes straight to 8080 (H1 and H2: 2 connections at least); .21 (H1
    # upgraded to H2, and H2) and the TCP service use the header on 4143.
    assert syns[8080] >= 2 and syns[4143] >= 2 and syns[9000] == 0, (syns, mesh.logs())

    def delta(name: str, **labels: str) -> float:
        return after.value(name, **labels) - before.value(name, **labels)

    assert delta("request_total", direction="inbound", tls="true", client_id=A_ID) >= 8
    assert delta("tcp_open_total", direction="inbound", peer="src", tls="true",
                 client_id=A_ID) >= 3  # fmt: skip

    # A TLS EOF is not an OS error (ssl.SSLEOFError's errno 8 once showed as ENOEXEC).
    assert delta("tcp_close_total", errno="ENOEXEC") == 0

    frames = read_frames(cap_file)
    wire = b"\x00".join(frames)
    assert wire.count(b"CTRL:" + MARKER) >= 1, "the capture missed the plaintext control"
    assert wire.count(MARKER) == wire.count(b"CTRL:" + MARKER), "plaintext payload on the wire"
    assert B_ID.encode() in wire, "no TLS ClientHello naming B captured"


_STALLED_HELLO = """
import json, socket, ssl, time
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
obj = ctx.wrap_bio(ssl.MemoryBIO(), out := ssl.MemoryBIO(), server_hostname={name!r})
try:
    obj.do_handshake()
except ssl.SSLWantReadError:
    pass
hello = out.read()
s = socket.create_connection(("{ip}", 8080), timeout=15)
s.sendall(hello[: len(hello) // 2])
start = time.monotonic()
try:
    eof = s.recv(1) == b""
except ConnectionResetError:
    eof = True
print(json.dumps({{"closed_after": time.monotonic() - start, "eof": eof,
                  "sent": len(hello) // 2}}))
"""


def test_stalled_client_hello_is_closed_within_the_detect_timeout(mesh: Mesh) -> None:
    """Half a ClientHello to pod B's inbound (INBOUND_DETECT_TIMEOUT=2s), then
    nothing: B closes the connection about 2 s later and counts a TLS detection
    timeout. (Sent as the proxy uid so that pod A's rules let it through as is.)"""
    labels = {"error": "tls detection timeout", "target_port": "8080"}
    before = mesh.proxy_b.scrape().value("inbound_tcp_errors_total", **labels)
    got = mesh.run_py(mesh.a, _STALLED_HELLO.format(name=B_ID, ip=mesh.b.ip), uid=PROXY_UID)
    assert got["eof"] and got["sent"] > 50, got
    assert 1.5 <= got["closed_after"] <= 4.0, got
    after = mesh.proxy_b.scrape().value("inbound_tcp_errors_total", **labels)
    assert after == before + 1, (before, after)


EXPIRY = "control_identity_cert_expiration_timestamp_seconds"
REFRESHED = "control_identity_cert_refresh_timestamp_seconds"
REFRESHES = "control_identity_cert_refreshes_total"


async def _poll(check: Callable[[], bool], limit: float, what: str) -> None:
    """Call ``check()`` every 0.2 s until true, for at most ``limit`` seconds."""
    with trio.move_on_after(max(limit, 0.1)):
        while not check():  # noqa: ASYNC110 (another process)
            await trio.sleep(0.2)
        return
    raise AssertionError(f"no {what} within {limit:.1f}s")


async def test_certificate_refreshes_before_expiry_through_an_identity_outage(
    mesh: Mesh,
) -> None:
    """30 s certificates under steady load (2 connections at 20 requests a second
    each, through the transport header to pod B).

    Pod B's control plane goes down before B's refresh is due (70 % into the
    lifetime): that refresh fails, and B keeps its certificate (same expiry) and
    keeps serving mTLS with it. The control plane comes back 5 s before the
    expiry; B's retry (at 70 % of the time then left, the minimum refresh being 1 s
    here) gets a new certificate before the old one expires. Not one request fails
    over the whole window, which runs past the old expiry. Pod A's control plane
    stays up and A refreshes on schedule.
    """
    b = mesh.proxy_b
    s = b.scrape()
    expiry, ok0 = s.value(EXPIRY), s.value(REFRESHES, result="ok")
    if time.time() > expiry - 0.3 * LIFETIME - 2:  # the refresh is (nearly) due: let it be
        await _poll(lambda: b.scrape().value(REFRESHES, result="ok") > ok0, 15, "refresh")
        s = b.scrape()
        expiry, ok0 = s.value(EXPIRY), s.value(REFRESHES, result="ok")
    err0 = s.value(REFRESHES, result="error")
    assert expiry - time.time() <= LIFETIME + 1, expiry
    out = os.path.join(mesh.workdir, "refresh-load.json")
    duration = expiry + 3 - time.time()
    load = mesh.a.popen(_module("load", "load", "--addr", "198.51.100.23:80", "--conns", "2",
                                "--duration", f"{duration:.1f}", "--rate", "20", "--out", out),
                        stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        await mesh.cp_b.stop()
        await _poll(lambda: b.scrape().value(REFRESHES, result="error") > err0,
                    expiry - 0.3 * LIFETIME + 3 - time.time(), "a failed refresh")  # fmt: skip
        during = b.scrape()
        assert during.value(EXPIRY) == expiry, "the old certificate was replaced while down"
        assert during.value(REFRESHES, result="ok") == ok0
        await trio.sleep(max(0.0, expiry - 5 - time.time()))
        await mesh.cp_b.start()
        await _poll(lambda: b.scrape().value(REFRESHES, result="ok") > ok0,
                    expiry - 0.2 - time.time(), "the refresh after the outage")  # fmt: skip
        after = b.scrape()
        assert after.value(EXPIRY) > expiry + LIFETIME - 10, (after.value(EXPIRY), expiry)
        assert after.value(REFRESHED) < expiry
        with trio.fail_after(duration + 20):
            while load.poll() is None:  # noqa: ASYNC110 (another process)
                await trio.sleep(0.1)
    finally:
        if load.poll() is None:
            load.kill()
            load.wait(5)
        with trio.CancelScope(shield=True), contextlib.suppress(Exception):
            await mesh.cp_b.start()
    result = json.loads(await trio.Path(out).read_text())
    failures = [r for r in result["requests"] if r[2] != "8081"]
    assert result["failed"] == 0 and failures == [], (failures[:5], mesh.logs())
    starts = [r[0] for r in result["requests"]]
    assert result["ok"] >= 20 * (max(starts) - min(starts)), result["ok"]
    assert max(starts) > expiry + 1, "the load did not outlive the old certificate"
    a = mesh.proxy_a.scrape()
    assert a.value(REFRESHES, result="ok") >= 2 and a.value(EXPIRY) > time.time() + 5
