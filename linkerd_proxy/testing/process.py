"""The real ``linkerd-proxy`` binary as a process inside a pod namespace.

Use with :mod:`linkerd_proxy.testing.netns`::

    with pod_pair() as (client, server):
        linkerd_init(server)
        with ProxyProcess.start(server, {"LINKERD2_PROXY_INBOUND_IPS": str(server.ip)}) as p:
            p.wait_ready()
            print(p.scrape().value("tcp_open_total"))

The process runs as :data:`~linkerd_proxy.testing.netns.PROXY_UID` so that the
linkerd-init rules exempt its own connections, its output goes to a log file (read
it with :meth:`ProxyProcess.logs`), and leaving the context kills it if it is still
running.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from types import TracebackType

from linkerd_proxy.testing.netns import PROXY_UID, NetNs
from linkerd_proxy.testing.scrape import Scrape


def proxy_command() -> list[str]:
    """The argv of the installed binary (the console script if on PATH)."""
    exe = shutil.which("linkerd-proxy")
    if exe:
        return [exe]
    return [sys.executable, "-m", "linkerd_proxy_bin"]


class ProxyProcess:
    """A running proxy in a namespace. Create with :meth:`start`."""

    def __init__(self, ns: NetNs, proc: subprocess.Popen[bytes], log_path: str, admin: str):
        self.ns = ns
        self.proc = proc
        self.log_path = log_path
        self.admin = admin

    @classmethod
    def start(
        cls,
        ns: NetNs,
        env: Mapping[str, str] | None = None,
        *,
        uid: int | None = PROXY_UID,
        admin: str = "127.0.0.1:4191",
    ) -> ProxyProcess:
        """Start the binary in ``ns`` with ``env`` added to a minimal environment."""
        full_env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LINKERD2_PROXY_LOG": "warn,linkerd=info",
        }
        full_env.update(env or {})
        fd, log_path = tempfile.mkstemp(prefix=f"{ns.name}-proxy-", suffix=".log")
        try:
            proc = ns.popen(proxy_command(), uid=uid, env=full_env, stdout=fd, stderr=fd)
        finally:
            os.close(fd)
        return cls(ns, proc, log_path, admin)

    def __enter__(self) -> ProxyProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Kill the process (if running) and remove its log file: after this,
        :meth:`logs` is gone. Leaving the ``with`` block does this."""
        self.kill()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.log_path)

    def logs(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def get(self, path: str, *, timeout: float = 5.0) -> tuple[int, str]:
        """GET ``path`` from the admin server; returns (status, body)."""
        proc = self.ns.run(
            [
                "curl",
                "-s",
                "-m",
                str(timeout),
                "-w",
                "\n%{http_code}",
                f"http://{self.admin}{path}",
            ],
            timeout=timeout + 5,
            check=False,
        )
        body, _, code = proc.stdout.rpartition("\n")
        return int(code or 0), body

    def wait_ready(self, timeout: float = 15.0) -> None:
        """Poll ``/ready`` until it answers 200.

        Raises:
            RuntimeError: if the process exits or is not ready in time (with its logs).
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"proxy exited with {self.proc.returncode} before ready:\n{self.logs()}"
                )
            status, _ = self.get("/ready", timeout=1.0)
            if status == 200:
                return
            time.sleep(0.1)
        raise RuntimeError(f"proxy not ready after {timeout}s:\n{self.logs()}")

    def scrape(self) -> Scrape:
        status, body = self.get("/metrics")
        if status != 200:
            raise RuntimeError(f"/metrics answered {status}")
        return Scrape.parse(body)

    def terminate(self, timeout: float = 30.0) -> int:
        """Send SIGTERM and wait for the exit code (killing it after ``timeout``)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    # --- resource use, read from /proc (the Popen pid is the proxy: ``ip netns
    # exec`` and ``setpriv`` exec it, they do not fork) -------------------------------

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _status_kib(self, field: str) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise RuntimeError(f"no {field} in /proc/{self.pid}/status")

    def rss(self) -> int:
        """The resident set size now, in bytes (``VmRSS``)."""
        return self._status_kib("VmRSS") * 1024

    def peak_rss(self) -> int:
        """The peak resident set size, in bytes (``VmHWM``): since the process
        started, or since the last :meth:`reset_peak_rss`."""
        return self._status_kib("VmHWM") * 1024

    def reset_peak_rss(self) -> None:
        """Reset the peak (``VmHWM``) to the current RSS (needs root: writes ``5``
        to ``/proc/<pid>/clear_refs``), so that :meth:`peak_rss` then measures the
        peak of what follows."""
        with open(f"/proc/{self.pid}/clear_refs", "w") as f:
            f.write("5")

    def fd_count(self) -> int:
        """How many file descriptors the process has open."""
        return len(os.listdir(f"/proc/{self.pid}/fd"))
