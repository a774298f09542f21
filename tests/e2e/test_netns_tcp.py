"""The foundation's acceptance test: the real binary behind linkerd-init's iptables rules.

Two pods (network namespaces joined by a veth pair, 192.0.2.1 and 192.0.2.2), each
with the nat rules linkerd-init installs and a real ``linkerd-proxy`` process running
as uid 2102. A client application in pod A talks to a server application in pod B;
its bytes go app -> proxy A outbound (4140) -> proxy B inbound (4143) -> app.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from linkerd_proxy.testing.netns import NetNs, linkerd_init, pod_pair, require_netns
from linkerd_proxy.testing.process import ProxyProcess

pytestmark = [pytest.mark.system]

MIB = 1024 * 1024
ECHO_PORT = 8080
BANNER_PORT = 8081
BANNER = "220 banner.example ESMTP ready\r\n"


def _peers(*args: str) -> list[str]:
    return [sys.executable, "-m", "linkerd_proxy.testing.peers", *args]


class Mesh:
    def __init__(self, a: NetNs, b: NetNs, pa: ProxyProcess, pb: ProxyProcess) -> None:
        self.a, self.b, self.pa, self.pb = a, b, pa, pb

    def exchange(self, port: int, nbytes: int, *extra: str) -> dict[str, object]:
        proc = self.a.run(
            _peers("exchange", "--addr", f"{self.b.ip}:{port}", "--bytes", str(nbytes), *extra),
            timeout=60,
            check=False,
        )
        assert proc.stdout, (
            f"no output; stderr={proc.stderr}\nA:{self.pa.logs()}\nB:{self.pb.logs()}"
        )
        result: dict[str, object] = json.loads(proc.stdout.splitlines()[-1])
        return result


@pytest.fixture
def mesh() -> Iterator[Mesh]:
    require_netns(("ip", "iptables", "setpriv", "curl"))
    servers: list[subprocess.Popen[bytes]] = []
    with pod_pair() as (a, b):
        linkerd_init(a)
        linkerd_init(b)
        env = {"LINKERD2_PROXY_SHUTDOWN_GRACE_PERIOD": "20s"}
        with (
            ProxyProcess.start(a, {**env, "LINKERD2_PROXY_INBOUND_IPS": str(a.ip)}) as pa,
            ProxyProcess.start(b, {**env, "LINKERD2_PROXY_INBOUND_IPS": str(b.ip)}) as pb,
        ):
            try:
                servers.append(b.popen(_peers("echo-server", "--port", str(ECHO_PORT))))
                servers.append(
                    b.popen(_peers("echo-server", "--port", str(BANNER_PORT), "--banner", BANNER))
                )
                pa.wait_ready()
                pb.wait_ready()
                for s in servers:  # each server prints one line once it listens
                    assert s.stdout is not None
                    assert b"listening" in s.stdout.readline()
                yield Mesh(a, b, pa, pb)
            finally:
                for s in servers:
                    s.kill()
                    s.wait(10)


def test_bytes_through_both_proxies_unchanged(mesh: Mesh) -> None:
    result = mesh.exchange(ECHO_PORT, MIB)
    assert result["ok"], result
    assert result["received"] == MIB

    target = {"target_addr": f"{mesh.b.ip}:{ECHO_PORT}"}
    out = mesh.pa.scrape()
    assert out.duplicates() == []
    assert out.value("tcp_open_total", direction="outbound", peer="src", **target) == 1
    assert out.value("tcp_read_bytes_total", direction="outbound", peer="src", **target) == MIB
    assert out.value("tcp_write_bytes_total", direction="outbound", peer="src", **target) == MIB
    assert out.value("tcp_open_total", direction="outbound", peer="dst", **target) == 1
    assert out.value("tcp_write_bytes_total", direction="outbound", peer="dst", **target) == MIB
    assert out.value("tcp_close_total", direction="outbound", peer="src", errno="", **target) == 1

    inb = mesh.pb.scrape()
    assert inb.duplicates() == []
    assert inb.value("tcp_open_total", direction="inbound", peer="src", **target) == 1
    assert inb.value("tcp_read_bytes_total", direction="inbound", peer="src", **target) == MIB
    assert inb.value("tcp_write_bytes_total", direction="inbound", peer="src", **target) == MIB
    assert inb.value("tcp_open_connections", direction="inbound", peer="src", **target) == 0


def test_server_speaks_first(mesh: Mesh) -> None:
    proc = mesh.a.run(
        _peers("banner", "--addr", f"{mesh.b.ip}:{BANNER_PORT}", "--expect", BANNER),
        timeout=30,
        check=False,
    )
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["ok"], (result, mesh.pa.logs(), mesh.pb.logs())
    assert result["seconds"] < 1.0


def test_sigterm_lets_the_stream_finish(mesh: Mesh) -> None:
    # 1 MiB in 16 chunks, 0.15 s apart: about 2.4 s of transfer.
    client = mesh.a.popen(
        _peers(
            "exchange",
            "--addr",
            f"{mesh.b.ip}:{ECHO_PORT}",
            "--bytes",
            str(MIB),
            "--chunk-delay",
            "0.15",
        )
    )
    try:
        time.sleep(0.8)
        assert client.poll() is None, "the transfer ended before the signal"
        code = mesh.pa.terminate(timeout=30)
        out, err = client.communicate(timeout=30)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait(10)
    result = json.loads(out.decode().splitlines()[-1])
    assert result["ok"], (result, err, mesh.pa.logs())
    assert code == 0, mesh.pa.logs()
    assert "received SIGTERM, starting shutdown" in mesh.pa.logs()
