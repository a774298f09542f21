"""The benchmark's world: two pods, the backend, the reference proxies and ours.

Pod A (192.0.2.1) holds the load generators, nginx and haproxy (listening on
127.0.0.1, forwarding to pod B) and our proxy's outbound side; pod B (192.0.2.2)
holds the backend nginx (``/ok``, ``/64k``; HTTP/1.1 on 80, h2c on 8080), the bulk
sink (5001) and, for meshed traffic, a second proxy's inbound side. Every system
crosses the same veth.

linkerd-init's iptables rules are switched per round (:meth:`World.set_mode`):
none for direct and the reference proxies, pod A's for ``proxy``, both pods' for
``proxy-mesh``; for ``proxy-mtls`` both pods' rules point at a second pair of
proxies, with identities and a fake control plane per pod (``bench/mesh.py``),
and the gRPC case's nginx pair (``nginx-grpc``) speaks mTLS between the pods.
:func:`open_world` owns every process and both namespaces and removes them on the
way out, whatever happened.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Literal

from bench import configs, mesh
from linkerd_proxy.testing.netns import NetNs, linkerd_init, pod_pair
from linkerd_proxy.testing.process import ProxyProcess

Kind = Literal["h1", "h2", "bulk", "grpc"]
Mode = Literal["plain", "outbound", "mesh", "mtls"]
#: Which rules are installed in a pod: none, the standalone proxies', the mTLS ones'.
Rules = Literal["none", "std", "mtls"]

TOOLS = str(Path(__file__).with_name("tools.py"))

_FRONTS = {
    "nginx": configs.NGINX_HTTP,
    "haproxy": configs.HAPROXY_HTTP,
    "nginx-stream": configs.NGINX_STREAM,
    "haproxy-tcp": configs.HAPROXY_TCP,
    "floor-relay": configs.FLOOR_RELAY,
    "floor-http1": configs.FLOOR_HTTP1,
}
FLOOR = str(Path(__file__).with_name("floor.py"))
_BACK_PORTS: dict[Kind, int] = {
    "h1": configs.BACKEND_H1_PORT,
    "h2": configs.BACKEND_H2_PORT,
    "bulk": configs.SINK_PORT,
    "grpc": configs.BACKEND_H2_PORT,
}
#: Where pod A's clients send each kind of traffic for ``proxy-mtls``.
_MTLS_TARGETS: dict[Kind, str] = {"bulk": mesh.BULK_SERVICE, "grpc": mesh.GRPC_SERVICE}


class SystemUnavailable(RuntimeError):
    """A system could not be started; its cases are recorded as not runnable."""


def tool_command(*args: str) -> list[str]:
    """The argv of a ``bench/tools.py`` helper."""
    return [sys.executable, TOOLS, *args]


def mode_of(system: str) -> Mode:
    """Which iptables rules ``system`` needs (see :meth:`World.set_mode`)."""
    if system == "proxy":
        return "outbound"
    if system == "proxy-mesh":
        return "mesh"
    if system == "proxy-mtls":
        return "mtls"
    return "plain"


def _rules(mode: Mode) -> dict[str, Rules]:
    if mode == "mtls":
        return {"a": "mtls", "b": "mtls"}
    return {"a": "std" if mode != "plain" else "none", "b": "std" if mode == "mesh" else "none"}


class World:
    """The running systems. Build with :func:`open_world`."""

    def __init__(self, a: NetNs, b: NetNs, workdir: str) -> None:
        self.a, self.b, self.workdir = a, b, workdir
        self.procs: dict[str, list[subprocess.Popen[bytes]]] = {}
        self.proxies: list[ProxyProcess] = []
        self.proxy_error: str | None = None
        #: The mTLS pair (proxy A, proxy B) and why it is missing, if it is.
        self.mtls_proxies: list[ProxyProcess] = []
        self.mtls_error: str | None = None
        #: Reference systems that did not start (their rounds are recorded failed).
        self.start_errors: dict[str, str] = {}
        self._rules: dict[str, Rules] = {"a": "none", "b": "none"}

    # ------------------------------------------------------------- queries

    @property
    def backend_ip(self) -> str:
        return str(self.b.ip)

    def target(self, system: str, kind: Kind) -> str:
        """``host:port`` the load generator in pod A uses to reach ``system``."""
        if system == "proxy-mtls":
            return _MTLS_TARGETS[kind]
        if system == "nginx-grpc":
            if kind != "grpc":
                raise KeyError(f"{system} does not carry {kind}")
            return f"127.0.0.1:{configs.GRPC_FRONT_PORT}"
        front = _FRONTS.get(system)
        if front is None:  # direct and our proxies: the backend itself (redirected)
            return f"{self.backend_ip}:{_BACK_PORTS[kind]}"
        port = {"h1": front.h1, "h2": front.h2, "bulk": front.bulk}.get(kind)
        if port is None:
            raise KeyError(f"{system} does not carry {kind}")
        return f"127.0.0.1:{port}"

    def pids(self, system: str) -> list[int]:
        """The processes whose CPU and memory are charged to ``system``."""
        if system in ("proxy", "proxy-mesh"):
            n = 1 if system == "proxy" else 2
            return [p.proc.pid for p in self.proxies[:n]]
        if system == "proxy-mtls":
            return [p.proc.pid for p in self.mtls_proxies]
        return [p.pid for p in self.procs.get(system, [])]

    def available(self, system: str) -> str | None:
        """``None`` if the system is running, else why not."""
        if system in ("proxy", "proxy-mesh"):
            n = 1 if system == "proxy" else 2
            if len(self.proxies) < n:
                return self.proxy_error or "proxy not started"
            for proxy in self.proxies[:n]:
                if proxy.proc.poll() is not None:
                    return f"proxy exited with {proxy.proc.returncode}: {proxy.logs()[-1500:]}"
            return None
        if system == "proxy-mtls":
            if len(self.mtls_proxies) < 2:
                return self.mtls_error or "mTLS proxies not started"
            for proxy in self.mtls_proxies:
                if proxy.proc.poll() is not None:
                    return f"proxy exited with {proxy.proc.returncode}: {proxy.logs()[-1500:]}"
            return None
        if system in self.start_errors:
            return self.start_errors[system]
        for proc in self.procs.get(system, []):
            if proc.poll() is not None:
                return f"{system} exited with {proc.returncode}"
        return None

    # ------------------------------------------------------------- iptables

    def set_mode(self, mode: Mode) -> None:
        """Install or remove linkerd-init's rules so that ``mode`` is in force."""
        want = _rules(mode)
        changed = False
        for key, ns in (("a", self.a), ("b", self.b)):
            if want[key] == self._rules[key]:
                continue
            if self._rules[key] != "none":
                ns.run(["iptables", "-w", "-t", "nat", "-F"])
                ns.run(["iptables", "-w", "-t", "nat", "-X"])
            if want[key] == "std":
                linkerd_init(ns)
            elif want[key] == "mtls":
                mesh.install_rules(ns)
            self._rules[key] = want[key]
            changed = True
        if changed:
            # NAT rules apply to new connections only: a keep-alive (or HTTP/2)
            # connection pooled in the previous mode would bypass the new rules
            # (e.g. proxy A straight to the backend in an "x2" round). Between
            # rounds only idle pooled connections go from pod A to pod B (the
            # reference proxies' too, which reconnect): reset them all.
            self.a.run(["ss", "-K", "dst", str(self.b.ip)], check=False)

    # ------------------------------------------------------------- starting

    def _spawn(self, system: str, ns: NetNs, args: list[str], log: str) -> None:
        fd = os.open(os.path.join(self.workdir, log), os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            proc = ns.popen(args, stdout=fd, stderr=fd)
        finally:
            os.close(fd)
        self.procs.setdefault(system, []).append(proc)

    def _write(self, name: str, text: str) -> str:
        path = os.path.join(self.workdir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def wait_listening(self, ns: NetNs, addr: str, timeout: float = 15.0) -> None:
        proc = ns.run(tool_command("wait", "--addr", addr, "--timeout", str(timeout)),
                      timeout=timeout + 10, check=False)  # fmt: skip
        if proc.returncode != 0:
            raise SystemUnavailable(f"nothing listening on {addr} in {ns.name}: {proc.stderr}")

    def _wait_for(self, system: str, ns: NetNs, addr: str) -> None:
        try:
            self.wait_listening(ns, addr)
        except SystemUnavailable as exc:
            raise SystemUnavailable(f"{exc}\n{system} log:\n{self.log(system)}") from None

    def start_backends(self) -> None:
        """The backend nginx and the bulk sink in pod B."""
        www = os.path.join(self.workdir, "www")
        os.makedirs(www, exist_ok=True)
        with open(os.path.join(www, "64k"), "wb") as f:
            f.write(os.urandom(64 * 1024))
        grpc_file = os.path.join(www, configs.GRPC_PATH.lstrip("/"))
        os.makedirs(os.path.dirname(grpc_file), exist_ok=True)
        for path in (grpc_file, self.grpc_request):
            Path(path).write_bytes(configs.GRPC_FRAME)
        conf = self._write("backend.conf", configs.nginx_backend(self.workdir, www))
        self._spawn("backend", self.b, ["nginx", "-e", "stderr", "-c", conf], "backend.log")
        self._spawn("sink", self.b, tool_command("sink", "--port", str(configs.SINK_PORT)),
                    "sink.log")  # fmt: skip
        for port in (configs.BACKEND_H1_PORT, configs.BACKEND_H2_PORT):
            self._wait_for("backend", self.b, f"{self.backend_ip}:{port}")
        self._wait_for("sink", self.b, f"{self.backend_ip}:{configs.SINK_PORT}")

    def start_references(self) -> None:
        """nginx (http, stream) and haproxy (http, tcp) in pod A."""
        ip = self.backend_ip
        for system, text in (
            ("nginx", configs.nginx_http(self.workdir, ip)),
            ("nginx-stream", configs.nginx_stream(self.workdir, ip)),
        ):
            conf = self._write(f"{system}.conf", text)
            self._spawn(system, self.a, ["nginx", "-e", "stderr", "-c", conf], f"{system}.log")
        for system, text in (
            ("haproxy", configs.haproxy_http(ip)),
            ("haproxy-tcp", configs.haproxy_tcp(ip)),
        ):
            conf = self._write(f"{system}.cfg", text)
            self._spawn(system, self.a, ["haproxy", "-db", "-f", conf], f"{system}.log")
        ip = self.backend_ip
        for system, mode, front in (
            ("floor-relay", "relay", configs.FLOOR_RELAY),
            ("floor-http1", "http1", configs.FLOOR_HTTP1),
        ):
            routes: list[str] = []
            for port, back in (
                (front.h1, configs.BACKEND_H1_PORT),
                (front.h2, configs.BACKEND_H2_PORT),
            ):
                if port is not None:
                    routes += ["--route", f"127.0.0.1:{port}={ip}:{back}"]
            self._spawn(system, self.a, [sys.executable, FLOOR, mode, *routes], f"{system}.log")
        for system, front in _FRONTS.items():
            for port in (front.h1, front.h2, front.bulk):
                if port is None:
                    continue
                self._wait_for(system, self.a, f"127.0.0.1:{port}")

    def start_proxies(self, extra_env: Mapping[str, str] | None = None) -> None:
        """Our proxy in pod A (outbound) and in pod B (inbound), if it runs at all.

        A failure is remembered in :attr:`proxy_error`, not raised: the reference
        systems are still measured.
        """
        env = {"LINKERD2_PROXY_LOG": "warn", **(extra_env or {})}
        try:
            for ns in (self.a, self.b):
                proxy = ProxyProcess.start(ns, {**env, "LINKERD2_PROXY_INBOUND_IPS": str(ns.ip)})
                self.proxies.append(proxy)
                proxy.wait_ready(timeout=20.0)
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            self.proxy_error = f"proxy not runnable: {str(exc)[-1500:]}"
            for proxy in self.proxies:
                proxy.close()
            self.proxies.clear()

    @property
    def grpc_request(self) -> str:
        """The file h2load and curl POST in the gRPC case (one gRPC frame)."""
        return os.path.join(self.workdir, "grpc-request.bin")

    def start_mtls(self, *, with_proxy: bool) -> None:
        """The test CA, the nginx pair of the gRPC case, and the ``proxy-mtls`` mesh.

        Failures are remembered (:attr:`start_errors`, :attr:`mtls_error`), not
        raised: the other systems are still measured.
        """
        ca_dir = os.path.join(self.workdir, "ca")
        anchors = mesh.make_ca(ca_dir)
        try:
            self._start_nginx_grpc(ca_dir)
        except (SystemUnavailable, OSError, RuntimeError) as exc:
            self.start_errors["nginx-grpc"] = f"nginx-grpc not runnable: {str(exc)[-1500:]}"
        if not with_proxy:
            self.mtls_error = "proxy cases skipped (--no-proxy)"
            return
        try:
            self.a.run(["ip", "route", "add", mesh.SERVICE_NET, "via", self.backend_ip])
            for ns, log in ((self.a, "cp-a.log"), (self.b, "cp-b.log")):
                proc = mesh.start_control_plane(ns, ca_dir, os.path.join(self.workdir, log))
                self.procs.setdefault("control-plane", []).append(proc)
                mesh.wait_control_plane(ns, proc)
            mesh.configure_discovery(self.a, self.backend_ip)
            for ns, name in ((self.b, mesh.B_ID), (self.a, mesh.A_ID)):
                env = mesh.identity_env(ns, self.workdir, name, anchors)
                admin = f"127.0.0.1:{mesh.PORTS.admin}"
                self.mtls_proxies.append(ProxyProcess.start(ns, env, admin=admin))
            self.mtls_proxies.reverse()  # (A, B)
            for proxy in self.mtls_proxies:
                proxy.wait_ready(timeout=30.0)
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            logs = "".join(p.logs()[-1000:] for p in self.mtls_proxies)
            self.mtls_error = f"mTLS proxies not runnable: {str(exc)[-1500:]} {logs}"
            for proxy in self.mtls_proxies:
                proxy.close()
            self.mtls_proxies.clear()

    def _start_nginx_grpc(self, ca_dir: str) -> None:
        back = mesh.nginx_tls_files(ca_dir, self.workdir, mesh.B_ID)
        front = mesh.nginx_tls_files(ca_dir, self.workdir, mesh.A_ID)
        for ns, name, text in (
            (self.b, "nginx-grpc-b", configs.nginx_grpc_back(self.workdir, self.backend_ip, back)),
            (self.a, "nginx-grpc-a",
             configs.nginx_grpc_front(self.workdir, self.backend_ip, front, mesh.B_ID)),
        ):  # fmt: skip
            conf = self._write(f"{name}.conf", text)
            self._spawn("nginx-grpc", ns, ["nginx", "-e", "stderr", "-c", conf], f"{name}.log")
        self._wait_for("nginx-grpc-b", self.b, f"{self.backend_ip}:{configs.GRPC_TLS_PORT}")
        self._wait_for("nginx-grpc-a", self.a, f"127.0.0.1:{configs.GRPC_FRONT_PORT}")

    def log(self, system: str) -> str:
        path = os.path.join(self.workdir, f"{system}.log")
        try:
            return Path(path).read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    # ------------------------------------------------------------- stopping

    def close(self) -> None:
        """Stop everything: politely, then by force; then anything left in the pods."""
        for proxy in [*self.proxies, *self.mtls_proxies]:
            with contextlib.suppress(Exception):
                proxy.close()
            with contextlib.suppress(OSError):
                os.unlink(proxy.log_path)
        procs = [p for group in self.procs.values() for p in group]
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 5
        for proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(5)
        for ns in (self.a, self.b):
            _kill_namespace_pids(ns)


def _kill_namespace_pids(ns: NetNs) -> None:
    """Kill what is still running inside one of our namespaces (all started by us)."""
    out = subprocess.run(["ip", "netns", "pids", ns.name], capture_output=True, text=True,
                         timeout=10)  # fmt: skip
    for pid in out.stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


@contextlib.contextmanager
def open_world(
    *, with_proxy: bool = True, proxy_env: Mapping[str, str] | None = None
) -> Iterator[World]:
    """Create the pods, start every system, yield the :class:`World`, tear it all down.

    ``proxy_env`` is added to the standalone proxies' environment (profiling).

    Raises:
        SystemUnavailable: if the backend or a reference proxy does not start.
        NetNsUnavailable: if namespaces cannot be created here.
    """
    with (
        tempfile.TemporaryDirectory(prefix="lp-bench-") as workdir,
        pod_pair(prefix=f"lpb{os.getpid() % 10000}") as (a, b),
    ):
        os.chmod(workdir, 0o755)
        world = World(a, b, workdir)
        try:
            world.start_backends()
            world.start_references()
            world.start_mtls(with_proxy=with_proxy)
            if with_proxy:
                world.start_proxies(proxy_env)
            else:
                world.proxy_error = "proxy cases skipped (--no-proxy)"
            yield world
        finally:
            world.close()
