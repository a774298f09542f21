"""The foundation's acceptance test: the real binary behind linkerd-init's iptables rules.

Two pods (network namespaces joined by a veth pair, 192.0.2.1 and 192.0.2.2), each
with the nat rules linkerd-init installs and a real ``linkerd-proxy`` process running
as uid 2102. A client application in pod A talks to a server application in pod B;
its bytes go app -> proxy A outbound (4140) -> proxy B inbound (4143) -> app.
"""

from __future__ import annotations

import json
import time

import pytest

from linkerd_proxy.testing.mesh import BANNER, BANNER_PORT, ECHO_PORT, Mesh, peers

pytestmark = [pytest.mark.system]

MIB = 1024 * 1024


def test_bytes_through_both_proxies_unchanged(mesh: Mesh) -> None:
    result = mesh.run_json(
        peers("exchange", "--addr", f"{mesh.b.ip}:{ECHO_PORT}", "--bytes", str(MIB))
    )
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
    result = mesh.run_json(
        peers("banner", "--addr", f"{mesh.b.ip}:{BANNER_PORT}", "--expect", BANNER)
    )
    assert result["ok"], (result, mesh.logs())
    assert isinstance(result["seconds"], float)
    assert result["seconds"] < 1.0


def test_sigterm_lets_the_stream_finish(mesh: Mesh) -> None:
    # 1 MiB in 16 chunks, 0.15 s apart: about 2.4 s of transfer.
    client = mesh.a.popen(
        peers(
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
