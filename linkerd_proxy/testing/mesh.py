"""Two meshed pods with real applications: namespaces, linkerd-init rules, the real binary.

Pod A (192.0.2.1) is the client pod; pod B (192.0.2.2) runs the applications:

- 7000: a TCP echo server (client speaks first);
- 3306: a server-speaks-first banner server (an opaque port, as the injector marks it);
- 8080: hypercorn (HTTP/1.1, h2c, WebSocket);
- 8090: a grpcio server.

Both proxies run as uid 2102 with the environment the injector would give them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

from linkerd_proxy.testing.netns import NetNs, linkerd_init, pod_pair, require_netns
from linkerd_proxy.testing.process import ProxyProcess

ECHO_PORT = 7000
BANNER_PORT = 3306
HTTP_PORT = 8080
GRPC_PORT = 8090
BANNER = "220 banner.example ESMTP ready\r\n"
OPAQUE_PORTS = "25,587,3306,4444,5432,6379,9300,11211"


def peers(*args: str) -> list[str]:
    return [sys.executable, "-m", "linkerd_proxy.testing.peers", *args]


def apps(*args: str) -> list[str]:
    return [sys.executable, "-m", "linkerd_proxy.testing.apps", *args]


class Mesh:
    """The two pods, their proxies, and helpers to run clients in pod A."""

    def __init__(self, a: NetNs, b: NetNs, pa: ProxyProcess, pb: ProxyProcess) -> None:
        self.a, self.b, self.pa, self.pb = a, b, pa, pb

    def logs(self) -> str:
        return f"--- proxy A ---\n{self.pa.logs()}\n--- proxy B ---\n{self.pb.logs()}"

    def run_json(self, argv: list[str], timeout: float = 60) -> dict[str, object]:
        """Run a client in pod A that prints a JSON line last; return it."""
        proc = self.a.run(argv, timeout=timeout, check=False)
        lines = proc.stdout.strip().splitlines()
        assert lines, f"no output from {argv}; stderr={proc.stderr}\n{self.logs()}"
        result: dict[str, object] = json.loads(lines[-1])
        return result

    def curl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run curl in pod A (as the application: redirected to proxy A)."""
        argv = ["curl", "-sS", "-m", str(int(timeout)), *args]
        return self.a.run(argv, timeout=timeout + 5, check=False)


def start_mesh(env: dict[str, str] | None = None) -> Iterator[Mesh]:
    """Set up the pods, proxies and applications; yield the :class:`Mesh`; tear down.

    A generator for a pytest fixture (``yield from start_mesh()``): it skips the
    test when namespaces cannot be made here (fails under CI, see ``require_netns``).
    """
    require_netns(("ip", "iptables", "setpriv", "curl"))
    servers: list[subprocess.Popen[bytes]] = []
    base = {
        "LINKERD2_PROXY_SHUTDOWN_GRACE_PERIOD": "20s",
        "LINKERD2_PROXY_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION": OPAQUE_PORTS,
        **(env or {}),
    }
    with pod_pair() as (a, b):
        linkerd_init(a)
        linkerd_init(b)
        with (
            ProxyProcess.start(a, {**base, "LINKERD2_PROXY_INBOUND_IPS": str(a.ip)}) as pa,
            ProxyProcess.start(b, {**base, "LINKERD2_PROXY_INBOUND_IPS": str(b.ip)}) as pb,
        ):
            try:
                servers.append(b.popen(peers("echo-server", "--port", str(ECHO_PORT))))
                servers.append(
                    b.popen(peers("echo-server", "--port", str(BANNER_PORT), "--banner", BANNER))
                )
                servers.append(b.popen(apps("http-server", "--port", str(HTTP_PORT))))
                servers.append(b.popen(apps("grpc-server", "--port", str(GRPC_PORT))))
                pa.wait_ready()
                pb.wait_ready()
                for s in servers:  # each server prints one line once it listens
                    assert s.stdout is not None
                    line = s.stdout.readline()
                    assert b"listening" in line, line
                yield Mesh(a, b, pa, pb)
            finally:
                for s in servers:
                    s.kill()
                    s.wait(10)
