"""Pods made of network namespaces, with the iptables rules linkerd-init installs.

This is part of the public test harness: it lets a test suite (ours or a user's) run
the real ``linkerd-proxy`` binary the way Kubernetes runs it, with the traffic of an
application redirected to the proxy by iptables ``REDIRECT`` and the original
destination read back with ``SO_ORIGINAL_DST``.

It needs root (or CAP_NET_ADMIN and CAP_SYS_ADMIN), iproute2 (``ip``) and iptables.
Everything it creates is named with a unique prefix and removed by the context
managers, also when the test fails. Addresses come from the documentation ranges
(192.0.2.0/24 by default) so that nothing here ever reaches a real network.

Example::

    with pod_pair() as (client, server):
        linkerd_init(client)
        linkerd_init(server)
        proxy = client.popen(["linkerd-proxy"], uid=PROXY_UID, env=env)
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence

import attrs

#: The uid the injector runs the proxy as; linkerd-init exempts it from redirection.
PROXY_UID = 2102
#: Variable that makes system tests fail instead of skipping when a tool is missing.
REQUIRE_ENV = "LINKERD_PROXY_REQUIRE_SYSTEM_TESTS"

_counter = itertools.count()


class NetNsUnavailable(RuntimeError):
    """This machine cannot create network namespaces (not root, or tools missing)."""


def missing_requirements(tools: Sequence[str] = ("ip", "iptables")) -> str | None:
    """Say why namespace tests cannot run here, or ``None`` if they can."""
    if os.geteuid() != 0:
        return "network namespace tests need root"
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        return f"missing tools: {', '.join(missing)}"
    return None


def system_tests_required() -> bool:
    """True when ``LINKERD_PROXY_REQUIRE_SYSTEM_TESTS=1``: missing tools are failures."""
    return os.environ.get(REQUIRE_ENV, "") not in ("", "0")


def require_netns(tools: Sequence[str] = ("ip", "iptables", "setpriv")) -> None:
    """In a pytest test: skip when namespaces cannot be made here, or fail if required.

    With ``LINKERD_PROXY_REQUIRE_SYSTEM_TESTS=1`` (CI), a missing tool is a failure,
    so a green run cannot hide a system test that never ran.
    """
    import pytest

    why = missing_requirements(tools)
    if why is None:
        return
    if system_tests_required():
        pytest.fail(f"system test required but cannot run: {why}")
    pytest.skip(why)


def require_tools(tools: Sequence[str]) -> None:
    """In a pytest test: skip when a tool is not on ``PATH``, or fail if required.

    Like :func:`require_netns` without the root check: for system tests that only
    need programs (``promtool``, ``prometheus``...). With
    ``LINKERD_PROXY_REQUIRE_SYSTEM_TESTS=1`` a missing tool is a failure.
    """
    import pytest

    missing = [t for t in tools if shutil.which(t) is None]
    if not missing:
        return
    why = f"missing tools: {', '.join(missing)}"
    if system_tests_required():
        pytest.fail(f"system test required but cannot run: {why}")
    pytest.skip(why)


def _run(args: Sequence[str]) -> None:
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")


@attrs.frozen
class NetNs:
    """A network namespace standing for one pod.

    Attributes:
        name: the ``ip netns`` name.
        ip: the pod IP on its veth (``None`` until it is wired to a peer).
    """

    name: str
    ip: ipaddress.IPv4Address | None = None

    def command(self, args: Sequence[str], *, uid: int | None = None) -> list[str]:
        """The argv that runs ``args`` inside this namespace, as ``uid`` if given.

        A command run as another uid keeps CAP_DAC_READ_SEARCH (ambient) so that it
        can still read an interpreter installed under root's home directory.
        """
        prefix = ["ip", "netns", "exec", self.name]
        if uid is not None:
            prefix += [
                "setpriv",
                f"--reuid={uid}",
                f"--regid={uid}",
                "--clear-groups",
                "--inh-caps=+dac_read_search",
                "--ambient-caps=+dac_read_search",
            ]
        return prefix + list(args)

    def run(
        self, args: Sequence[str], *, timeout: float = 30, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in the namespace and wait for it (bounded by ``timeout``)."""
        proc = subprocess.run(self.command(args), capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(
                f"in {self.name}: {' '.join(args)} failed ({proc.returncode}): "
                f"{proc.stderr.strip()}"
            )
        return proc

    def popen(
        self,
        args: Sequence[str],
        *,
        uid: int | None = None,
        env: Mapping[str, str] | None = None,
        stdout: int | None = subprocess.PIPE,
        stderr: int | None = subprocess.PIPE,
        stdin: int | None = subprocess.DEVNULL,
    ) -> subprocess.Popen[bytes]:
        """Start a process in the namespace; the caller owns (and must reap) it."""
        return subprocess.Popen(
            self.command(args, uid=uid),
            env=dict(env) if env is not None else None,
            stdout=stdout,
            stderr=stderr,
            stdin=stdin,
        )


def _create(name: str) -> NetNs:
    _run(["ip", "netns", "add", name])
    ns = NetNs(name)
    ns.run(["ip", "link", "set", "lo", "up"])
    return ns


def _delete(name: str) -> None:
    subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


@contextlib.contextmanager
def pod_pair(
    subnet: str = "192.0.2.0/24", prefix: str | None = None
) -> Iterator[tuple[NetNs, NetNs]]:
    """Two namespaces joined by a veth pair, with the first two hosts of ``subnet``.

    Yields ``(a, b)`` with ``a.ip`` and ``b.ip`` set. Both namespaces (and with
    them the veth pair) are deleted on exit, whatever happened inside.

    Raises:
        NetNsUnavailable: when the namespaces cannot be created here.
    """
    why = missing_requirements(("ip",))
    if why:
        raise NetNsUnavailable(why)
    tag = prefix or f"lp{os.getpid() % 100000}x{next(_counter)}"
    net = ipaddress.IPv4Network(subnet)
    hosts = net.hosts()
    ip_a, ip_b = next(hosts), next(hosts)
    names = (f"{tag}a", f"{tag}b")
    created: list[str] = []
    try:
        for name in names:
            _create(name)
            created.append(name)
        veth_a, veth_b = f"{tag}va"[:15], f"{tag}vb"[:15]
        _run(
            [
                "ip",
                "link",
                "add",
                veth_a,
                "netns",
                names[0],
                "type",
                "veth",
                "peer",
                "name",
                veth_b,
                "netns",
                names[1],
            ]
        )
        a = NetNs(names[0], ip_a)
        b = NetNs(names[1], ip_b)
        for ns, veth, ip in ((a, veth_a, ip_a), (b, veth_b, ip_b)):
            ns.run(["ip", "addr", "add", f"{ip}/{net.prefixlen}", "dev", veth])
            ns.run(["ip", "link", "set", veth, "up"])
        yield a, b
    finally:
        for name in created:
            _delete(name)


def linkerd_init(
    ns: NetNs,
    *,
    proxy_uid: int = PROXY_UID,
    inbound_port: int = 4143,
    outbound_port: int = 4140,
    inbound_ports_to_ignore: Sequence[int] = (4190, 4191),
    outbound_ports_to_ignore: Sequence[int] = (),
) -> None:
    """Install the nat rules linkerd-init installs (redirect-all mode).

    Inbound: everything arriving (PREROUTING) is redirected to ``inbound_port``
    except the ignored ports. Outbound: everything the pod sends (OUTPUT) is
    redirected to ``outbound_port`` except traffic of ``proxy_uid``, traffic over
    loopback and the ignored ports.
    """

    def ipt(*args: str) -> None:
        ns.run(["iptables", "-w", "-t", "nat", *args])

    ipt("-N", "PROXY_INIT_REDIRECT")
    if inbound_ports_to_ignore:
        ports = ",".join(str(p) for p in inbound_ports_to_ignore)
        ipt(
            "-A",
            "PROXY_INIT_REDIRECT",
            "-p",
            "tcp",
            "--match",
            "multiport",
            "--dports",
            ports,
            "-j",
            "RETURN",
        )
    ipt("-A", "PROXY_INIT_REDIRECT", "-p", "tcp", "-j", "REDIRECT", "--to-port", str(inbound_port))
    ipt("-A", "PREROUTING", "-j", "PROXY_INIT_REDIRECT")

    ipt("-N", "PROXY_INIT_OUTPUT")
    ipt("-A", "PROXY_INIT_OUTPUT", "-m", "owner", "--uid-owner", str(proxy_uid), "-j", "RETURN")
    ipt("-A", "PROXY_INIT_OUTPUT", "-o", "lo", "-j", "RETURN")
    if outbound_ports_to_ignore:
        ports = ",".join(str(p) for p in outbound_ports_to_ignore)
        ipt(
            "-A",
            "PROXY_INIT_OUTPUT",
            "-p",
            "tcp",
            "--match",
            "multiport",
            "--dports",
            ports,
            "-j",
            "RETURN",
        )
    ipt("-A", "PROXY_INIT_OUTPUT", "-p", "tcp", "-j", "REDIRECT", "--to-port", str(outbound_port))
    ipt("-A", "OUTPUT", "-j", "PROXY_INIT_OUTPUT")
