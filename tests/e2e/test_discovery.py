"""Discovery through the real binary, with the fake control plane over the real gRPC API.

Pod A (192.0.2.1) runs the proxy behind linkerd-init's rules and the fake control
plane as a process on 127.0.0.1:8086 (its admin API on 127.0.0.1:8087, driven from
this test by ``curl`` run inside pod A: the test itself is in the root namespace).
Pod B (192.0.2.2) runs plain backends (:mod:`linkerd_proxy.testing.load`) without
a proxy, so every connection they accept is one proxy A dialled, and each logs its
accepts and requests with wall-clock times.

Services are IPs in 198.51.100.0/24 (``DESTINATION_PROFILE_NETWORKS``; pod A routes
them towards pod B, but nothing listens there: only discovery can make them work).
Each test uses its own service IP, fully qualified name and backend ports, so the
tests do not see each other's endpoints.

The outage test keeps the issue's 30 s outage: at the control backoff's 10 s
ceiling it is the only length that shows the backoff reaching its cap, and the
whole module stays around 70 s.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import attrs
import pytest
import trio

from linkerd_proxy.testing.control.admin import CommandError, decode, encode
from linkerd_proxy.testing.control.facade import ControlFacade
from linkerd_proxy.testing.control.values import Endpoint
from linkerd_proxy.testing.netns import NetNs, linkerd_init, pod_pair, require_netns
from linkerd_proxy.testing.process import ProxyProcess

pytestmark = [pytest.mark.system]

CP_GRPC = "127.0.0.1:8086"
CP_ADMIN = "127.0.0.1:8087"
SERVICE_NET = "198.51.100.0/24"
FAILFAST = 1.0
SLOW_DELAY = 0.02
#: backends in pod B: (port, extra delay per response)
BACKEND_PORTS = {
    9001: 0.0, 9002: 0.0, 9003: SLOW_DELAY,  # balancing
    9011: 0.0, 9012: 0.0, 9013: 0.0,  # removal mid-load
    9021: 0.0, 9022: 0.0, 9023: 0.0,  # control-plane outage
    9032: 0.0,  # next to a dead endpoint (9031: nothing listens)
}  # fmt: skip
DEAD_PORT = 9031


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
    """The fake control plane process in pod A, driven with curl inside the pod."""

    def __init__(self, ns: NetNs, admin: str) -> None:
        super().__init__(self._remote)
        self.ns = ns
        self.admin = admin

    async def _remote(self, service: str, method: str, args: dict[str, Any]) -> Any:
        body = json.dumps({"service": service, "method": method, "args": encode(args)})
        argv = ["curl", "-sS", "-m", "10", "-H", "content-type: application/json",
                "-H", "Expect:", "--data-binary", "@-", "-w", "\n%{http_code}",
                f"http://{self.admin}/call"]  # fmt: skip
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
class Disco:
    """The pods, the proxy, the control plane and the backends' log."""

    a: NetNs
    b: NetNs
    proxy: ProxyProcess
    cp: NsControl
    workdir: str

    def logs(self) -> str:
        return f"--- proxy A ---\n{self.proxy.logs()[-6000:]}"

    def backend_events(self, ev: str, ports: set[int], after: float = 0.0) -> list[float]:
        """Times of the backends' ``ev`` ("accept" or "req") on ``ports`` after ``after``."""
        times = []
        with open(os.path.join(self.workdir, "backends.log")) as f:
            for line in f:
                e = json.loads(line)
                if e["ev"] == ev and e["port"] in ports and e["t"] > after:
                    times.append(float(e["t"]))
        return times

    def syn_count(self, ns: NetNs, chain: str, port: int) -> int:
        """Packets counted by the ``--syn --dport port`` rule of the filter table's ``chain``."""
        out = ns.run(["iptables", "-w", "-L", chain, "-v", "-n", "-x"]).stdout
        for line in out.splitlines():
            if f"dpt:{port}" in line and "flags:0x17/0x02" in line:
                return int(line.split()[0])
        raise AssertionError(f"no SYN counter for {port} in {chain}:\n{out}")

    async def serve(self, service_ip: str, fqn: str, ports: list[int]) -> str:
        """Give ``service_ip:80`` a profile naming ``fqn`` with endpoints in pod B."""
        name = f"{fqn}:80"
        await self.cp.dst.set_endpoints(name, [Endpoint(f"{self.b.ip}:{p}") for p in ports])
        await self.cp.dst.profile(f"{service_ip}:80", fqn=fqn)
        return name

    def start_load(
        self, addr: str, *, conns: int, duration: float, rate: float = 0.0
    ) -> tuple[subprocess.Popen[bytes], str]:
        out = os.path.join(self.workdir, f"load-{time.monotonic_ns()}.json")
        argv = _module("load", "load", "--addr", addr, "--conns", str(conns),
                       "--duration", str(duration), "--rate", str(rate), "--out", out)  # fmt: skip
        return self.a.popen(argv, stderr=subprocess.DEVNULL), out

    async def finish_load(
        self, started: tuple[subprocess.Popen[bytes], str], limit: float
    ) -> dict[str, Any]:
        """Wait (at most ``limit`` seconds) for a load to end; its result."""
        proc, out = started
        try:
            with trio.fail_after(limit):
                while proc.poll() is None:  # noqa: ASYNC110 (another process)
                    await trio.sleep(0.05)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
        result: dict[str, Any] = json.loads(await trio.Path(out).read_text())
        return result

    async def run_load(
        self, addr: str, *, conns: int, duration: float, rate: float = 0.0
    ) -> dict[str, Any]:
        started = self.start_load(addr, conns=conns, duration=duration, rate=rate)
        return await self.finish_load(started, duration + 30)


def _served(
    result: dict[str, Any], start: float = 0.0, end: float = float("inf")
) -> dict[str, int]:
    """How many requests started in ``[start, end)`` each outcome had."""
    counts: dict[str, int] = {}
    for t0, _, outcome in result["requests"]:
        if start <= t0 < end:
            counts[outcome] = counts.get(outcome, 0) + 1
    return counts


@pytest.fixture(scope="module")
def disco() -> Iterator[Disco]:
    require_netns(("ip", "iptables", "setpriv", "curl"))
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="disco-") as workdir, pod_pair() as (a, b):
        linkerd_init(a)
        a.run(["ip", "route", "add", SERVICE_NET, "via", str(b.ip)])
        # Connection attempts, counted where they arrive: the control plane's port
        # in pod A (loopback) and the dead endpoint's port in pod B.
        a.run(["iptables", "-w", "-A", "OUTPUT", "-o", "lo", "-p", "tcp", "--syn",
               "--dport", CP_GRPC.rsplit(":", 1)[1]])  # fmt: skip
        b.run(["iptables", "-w", "-A", "INPUT", "-p", "tcp", "--syn", "--dport", str(DEAD_PORT)])
        try:
            with open(os.path.join(workdir, "cp.err"), "wb") as err:
                cp = a.popen(_module("control_plane", "--listen", CP_GRPC, "--admin", CP_ADMIN),
                             stderr=err.fileno())  # fmt: skip
            procs.append(cp)
            assert b"grpc" in _first_line(cp, "the control plane")
            backend_args = ["backends", "--log", os.path.join(workdir, "backends.log")]
            for port, delay in BACKEND_PORTS.items():
                backend_args += ["--port", str(port)]
                if delay:
                    backend_args += ["--delay", f"{port}={delay}"]
            backends = b.popen(_module("load", *backend_args), stderr=subprocess.DEVNULL)
            procs.append(backends)
            assert b"listening" in _first_line(backends, "the backends")
            env = {
                "LINKERD2_PROXY_INBOUND_IPS": str(a.ip),
                "LINKERD2_PROXY_DESTINATION_SVC_ADDR": CP_GRPC,
                "LINKERD2_PROXY_POLICY_SVC_ADDR": CP_GRPC,
                "LINKERD2_PROXY_POLICY_WORKLOAD": "test:test",
                "LINKERD2_PROXY_DESTINATION_PROFILE_NETWORKS": SERVICE_NET,
                "LINKERD2_PROXY_OUTBOUND_HTTP_FAILFAST_TIMEOUT": f"{FAILFAST:g}s",
                "LINKERD2_PROXY_SHUTDOWN_GRACE_PERIOD": "1s",
            }
            with ProxyProcess.start(a, env) as proxy:
                proxy.wait_ready()
                yield Disco(a, b, proxy, NsControl(a, CP_ADMIN), workdir)
        finally:
            for p in procs:
                p.kill()
                p.wait(10)


async def test_slow_endpoint_gets_clearly_fewer_requests(disco: Disco) -> None:
    """P2C over PeakEWMA: 8 closed-loop connections for 4 s over 9001, 9002 and 9003,
    which answers 20 ms later than the others.

    The fast backends answer in about a millisecond or two through the proxy, so
    the slow one's latency estimate is about ten times theirs: it loses every
    pairing except when a fast one has many requests pending. We expect it to get
    well under 10 % of the requests, and assert under half of either fast one's
    share. A balancer blind to latency (random, round robin, P2C on pending only
    with a closed loop) gives it about a third, as much as each fast one.
    """
    await disco.serve("198.51.100.10", "ewma.ns.svc.cluster.local", [9001, 9002, 9003])
    result = await disco.run_load("198.51.100.10:80", conns=8, duration=4)
    served = _served(result)
    print("ewma shares", served)
    assert result["failed"] == 0, (served, disco.logs())
    fast1, fast2, slow = served.get("9001", 0), served.get("9002", 0), served.get("9003", 0)
    total = fast1 + fast2 + slow
    assert total == result["ok"] and total >= 200, served
    assert slow < 0.5 * min(fast1, fast2), served
    assert slow / total < 0.2, served


async def test_removed_endpoints_are_not_dialled_and_nothing_fails(disco: Disco) -> None:
    """Remove 9011 and 9012 of {9011, 9012, 9013} 1.5 s into 4 s of load.

    At their listeners: no connection accepted and no request received later than
    100 ms after the update (the slack covers a request or dial the proxy started
    just before it applied the update). At the client: every request answered,
    except possibly one started before the update (in flight on a removed
    endpoint); traffic went on through 9013 alone.
    """
    removed = {9011, 9012}
    disco_start = time.time()
    name = await disco.serve("198.51.100.11", "remove.ns.svc.cluster.local", [9011, 9012, 9013])
    load = disco.start_load("198.51.100.11:80", conns=6, duration=4)
    await trio.sleep(1.5)
    t_update = time.time()
    await disco.cp.dst.remove(name, [f"{disco.b.ip}:{p}" for p in sorted(removed)])
    t_applied = time.time()
    result = await disco.finish_load(load, 40)

    before = _served(result, end=t_update)
    assert before.get("9011", 0) > 0 and before.get("9012", 0) > 0, before
    assert disco.backend_events("accept", removed, after=disco_start), "never dialled"
    late_accepts = disco.backend_events("accept", removed, after=t_applied + 0.1)
    late_requests = disco.backend_events("req", removed, after=t_applied + 0.1)
    assert late_accepts == [] and late_requests == [], (late_accepts, late_requests)

    failures = [r for r in result["requests"] if not r[2].isdigit()]
    assert all(r[0] < t_update for r in failures), (failures, disco.logs())
    after = _served(result, start=t_applied + 0.1)
    assert set(after) == {"9013"} and after["9013"] >= 100, after


async def test_dead_endpoint_is_not_dialled_in_a_loop_without_traffic(disco: Disco) -> None:
    """9031, where nothing listens, is first the only endpoint: a request waits
    the fail-fast timeout for it (504, having dialled it at least once). Then 9032
    joins and takes the traffic. Once traffic stops, nothing dials 9031 (SYNs
    counted by iptables in pod B) for 3 s, well inside the 5 s idle timeout that
    would drop the balancer. A reconnect loop, even with the pool's 0.1-0.5 s
    backoff, would dial it several times in that window.
    """
    name = await disco.serve("198.51.100.12", "dead.ns.svc.cluster.local", [DEAD_PORT])
    code, _, _ = _curl(disco, "http://198.51.100.12/")
    assert code == "504", (code, disco.logs())
    assert disco.syn_count(disco.b, "INPUT", DEAD_PORT) >= 1, "the dead endpoint was never tried"
    await disco.cp.dst.add(name, [Endpoint(f"{disco.b.ip}:9032")])
    result = await disco.run_load("198.51.100.12:80", conns=2, duration=1.5, rate=20)
    assert result["ok"] >= 20 and set(_served(result)) == {"9032"}, _served(result)
    dialled = disco.syn_count(disco.b, "INPUT", DEAD_PORT)
    await trio.sleep(3)
    assert disco.syn_count(disco.b, "INPUT", DEAD_PORT) == dialled, disco.logs()


async def test_destination_outage_keeps_cached_endpoints_and_reconnects(disco: Disco) -> None:
    """The control plane goes away for 30 s under light load (2 connections at 20
    requests a second each), and the service's endpoints change meanwhile, from
    {9021, 9022} to {9022, 9023}.

    During the outage every request succeeds on the cached set. The proxy keeps
    trying to reconnect with backoff (0.1 s doubling to 10 s: some attempts, but
    a bounded number, counted by iptables on the control plane's port); once the
    control plane is back the Get stream is re-established within the 10 s cap
    (plus jitter), and from then on the proxy uses exactly the server's new set.
    """
    cp = disco.cp
    name = await disco.serve("198.51.100.13", "outage.ns.svc.cluster.local", [9021, 9022])
    load = disco.start_load("198.51.100.13:80", conns=2, duration=33, rate=20)
    await trio.sleep(1.0)
    gets = await cp.dst.get_count(name)
    assert gets >= 1
    syn_before = disco.syn_count(disco.a, "OUTPUT", 8086)
    t_stop = time.time()
    await cp.stop()
    await cp.dst.set_endpoints(name, [Endpoint(f"{disco.b.ip}:{p}") for p in (9022, 9023)])
    await trio.sleep(30 - (time.time() - t_stop))
    t_start = time.time()
    await cp.start()
    attempts = disco.syn_count(disco.a, "OUTPUT", 8086) - syn_before

    with trio.fail_after(15):
        while await cp.dst.get_count(name) == gets:  # noqa: ASYNC110 (another process)
            await trio.sleep(0.1)
    t_back = time.time()
    print("outage: dials", attempts, "back after", round(t_back - t_start, 2))
    first = await disco.finish_load(load, 40)
    outage = _served(first, start=t_stop, end=t_start)
    assert first["failed"] == 0, ([r for r in first["requests"] if not r[2].isdigit()][:5],
                                  disco.logs())  # fmt: skip
    assert set(outage) == {"9021", "9022"} and sum(outage.values()) >= 600, outage
    # Three watches (profile, policy, Get) each retry at ~0.1, 0.3, 0.7, 1.5, 3.1,
    # 6.3, 12.7, 22.7 s: about 25 dials in all; without backoff, thousands.
    assert 3 <= attempts <= 60, attempts
    assert t_back - t_start <= 12, t_back - t_start

    await trio.sleep(0.5)
    t_settled = time.time()
    # Closed-loop load on 16 connections: a new endpoint starts at PeakEWMA's
    # default 30 ms estimate, so a light load would leave it alone (as in the
    # reference) and the check could not see it.
    second = await disco.run_load("198.51.100.13:80", conns=16, duration=2)
    assert second["failed"] == 0 and set(_served(second)) == {"9022", "9023"}, _served(second)
    assert disco.backend_events("req", {9021}, after=t_settled) == []
    assert sorted(await cp.dst.endpoints(name)) == [f"{disco.b.ip}:{p}" for p in (9022, 9023)]


def _curl(disco: Disco, url: str) -> tuple[str, float, str]:
    """GET ``url`` from pod A (redirected to the proxy): (status, seconds, body)."""
    proc = disco.a.run(
        ["curl", "-sS", "-m", "10", "-w", "\n%{http_code} %{time_total}", url],
        timeout=15,
        check=False,
    )
    body, _, tail = proc.stdout.rpartition("\n")
    code, _, seconds = tail.partition(" ")
    return code, float(seconds or 0), body


async def test_no_endpoints_gives_504_after_failfast(disco: Disco) -> None:
    """``NoEndpoints{exists: true}``: the request waits the fail-fast timeout (1 s
    here) in the balancer's queue and gets 504; nothing falls back to the original
    destination (nothing listens there: a fallback would be a 502)."""
    name = "empty.ns.svc.cluster.local:80"
    await disco.cp.dst.no_endpoints(name, exists=True)
    await disco.cp.dst.profile("198.51.100.14:80", fqn="empty.ns.svc.cluster.local")
    code, seconds, _ = _curl(disco, "http://198.51.100.14/")
    assert code == "504", (code, disco.logs())
    assert FAILFAST * 0.9 <= seconds <= FAILFAST + 3, seconds


async def test_outside_profile_networks_goes_to_original_destination(disco: Disco) -> None:
    """192.0.2.2 is outside ``DESTINATION_PROFILE_NETWORKS``: no profile lookup, and
    the request goes (through the proxy) straight to the address it was sent to."""
    target = f"{disco.b.ip}:9001"
    labels = {"direction": "outbound", "target_addr": target}
    before = disco.proxy.scrape().value("request_total", **labels)
    code, _, body = _curl(disco, f"http://{target}/")
    assert (code, body) == ("200", "9001"), (code, body, disco.logs())
    assert await disco.cp.dst.profile_count(target) == 0
    assert disco.proxy.scrape().value("request_total", **labels) == before + 1
