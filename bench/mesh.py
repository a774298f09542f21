"""The benchmark's mTLS mesh: identities, fake control planes and the mTLS proxies.

Part of the benchmark's world (``bench/systems.py`` calls it): for the
``proxy-mtls`` system each pod gets a fake control plane *process*
(``linkerd_proxy.testing.control_plane``) on 127.0.0.1:8086, both issuing from one
test CA (``--ca-dir``) with 1 h certificates, and a second pair of proxies with
identities (prepared by ``linkerd-proxy identity`` as the proxy uid, as the
injector does), on their own ports so that the standalone proxies keep theirs.

Pod A's Destination resolves two service IPs (198.51.100.0/24, routed to pod B)
to pod B endpoints carrying B's identity: the bulk sink through the
opaque-transport port (the transport header, an opaque hint), and the backend's
h2c port with an H2 hint (mTLS straight to the port; pod B's rules redirect it to
its inbound proxy). So A -> B is mTLS; ``bench/verify.py`` checks it from pod B's
metrics after every round. Also the certificates of the nginx pair that does the
same job for the gRPC case.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import attrs
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bench import configs
from linkerd_proxy.testing.control.admin import encode
from linkerd_proxy.testing.control.identity import TestCa
from linkerd_proxy.testing.control.values import Endpoint
from linkerd_proxy.testing.netns import PROXY_UID, NetNs, linkerd_init
from linkerd_proxy.testing.process import proxy_command

CP_GRPC = "127.0.0.1:8086"
CP_ADMIN = "127.0.0.1:8087"
CP_NAME = "linkerd-identity.linkerd.serviceaccount.identity.linkerd.cluster.local"
#: Certificate lifetime: longer than any run, so that no refresh happens in one.
LIFETIME_S = 3600
A_ID = "a.bench.serviceaccount.identity.linkerd.cluster.local"
B_ID = "b.bench.serviceaccount.identity.linkerd.cluster.local"
SERVICE_NET = "198.51.100.0/24"
#: The service pod A's load generators use for each kind of mTLS traffic.
BULK_SERVICE = f"198.51.100.30:{configs.SINK_PORT}"
GRPC_SERVICE = "198.51.100.31:80"


@attrs.frozen
class Ports:
    """The listeners of the mTLS proxies (the standalone ones use the defaults)."""

    outbound: int = 4240
    inbound: int = 4243
    admin: int = 4291
    control: int = 4290


PORTS = Ports()


def install_rules(ns: NetNs) -> None:
    """linkerd-init's rules, redirecting to the mTLS proxies' ports."""
    linkerd_init(
        ns,
        inbound_port=PORTS.inbound,
        outbound_port=PORTS.outbound,
        inbound_ports_to_ignore=(4190, 4191, PORTS.control, PORTS.admin),
    )


def make_ca(ca_dir: str) -> str:
    """Make the test CA in ``ca_dir`` (both control planes load it); its trust anchors."""
    return TestCa.shared(ca_dir).trust_anchors_pem


def start_control_plane(ns: NetNs, ca_dir: str, log: str) -> subprocess.Popen[bytes]:
    """Start a fake control plane process in ``ns``; the caller reaps it.

    It issues from the CA in ``ca_dir`` (:func:`make_ca`).
    """
    argv = [sys.executable, "-m", "linkerd_proxy.testing.control_plane", "--listen", CP_GRPC,
            "--admin", CP_ADMIN, "--ca-dir", ca_dir, "--identity-lifetime",
            str(LIFETIME_S)]  # fmt: skip
    fd = os.open(log, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        return ns.popen(argv, stdout=fd, stderr=fd)
    finally:
        os.close(fd)


def identity_env(ns: NetNs, workdir: str, name: str, anchors: str) -> dict[str, str]:
    """Prepare an identity directory as the proxy uid; the mTLS proxy's environment.

    Raises:
        RuntimeError: ``linkerd-proxy identity`` failed.
    """
    short = name.split(".")[0]
    ident = os.path.join(workdir, f"id-{short}")
    os.mkdir(ident)
    os.chown(ident, PROXY_UID, PROXY_UID)
    token = os.path.join(workdir, f"{short}.token")
    Path(token).write_text("a-service-account-token")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LINKERD2_PROXY_IDENTITY_DIR": ident,
        "LINKERD2_PROXY_IDENTITY_LOCAL_NAME": name,
        "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS": anchors,
    }
    proc = ns.popen([*proxy_command(), "identity"], uid=PROXY_UID, env=env)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
        raise RuntimeError("linkerd-proxy identity did not finish in 30 s") from None
    if proc.returncode != 0:
        raise RuntimeError(f"linkerd-proxy identity failed: {err.decode(errors='replace')}")
    env.pop("PATH")
    return {
        **env,
        "LINKERD2_PROXY_LOG": "warn",
        "LINKERD2_PROXY_IDENTITY_TOKEN_FILE": token,
        "LINKERD2_PROXY_IDENTITY_SVC_ADDR": CP_GRPC,
        "LINKERD2_PROXY_IDENTITY_SVC_NAME": CP_NAME,
        "LINKERD2_PROXY_DESTINATION_SVC_ADDR": CP_GRPC,
        "LINKERD2_PROXY_DESTINATION_SVC_NAME": CP_NAME,
        "LINKERD2_PROXY_POLICY_SVC_ADDR": CP_GRPC,
        "LINKERD2_PROXY_POLICY_SVC_NAME": CP_NAME,
        "LINKERD2_PROXY_POLICY_WORKLOAD": "bench:bench",
        "LINKERD2_PROXY_INBOUND_IPS": str(ns.ip),
        "LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR": f"127.0.0.1:{PORTS.outbound}",
        "LINKERD2_PROXY_INBOUND_LISTEN_ADDR": f"0.0.0.0:{PORTS.inbound}",
        "LINKERD2_PROXY_ADMIN_LISTEN_ADDR": f"127.0.0.1:{PORTS.admin}",
        "LINKERD2_PROXY_CONTROL_LISTEN_ADDR": f"0.0.0.0:{PORTS.control}",
        "LINKERD2_PROXY_DESTINATION_PROFILE_NETWORKS": SERVICE_NET,
        "LINKERD2_PROXY_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION": str(configs.SINK_PORT),
    }


def _call(ns: NetNs, service: str, method: str, args: dict[str, Any]) -> Any:
    """One command to the control plane in ``ns`` (its admin API, with curl in the pod)."""
    body = json.dumps({"service": service, "method": method, "args": encode(args)})
    argv = ["curl", "-sS", "-m", "10", "-H", "content-type: application/json", "-H",
            "Expect:", "--data-binary", body, "-w", "\n%{http_code}",
            f"http://{CP_ADMIN}/call"]  # fmt: skip
    proc = ns.run(argv, timeout=15, check=False)
    payload, _, code = proc.stdout.rpartition("\n")
    if code != "200":
        raise RuntimeError(f"control plane {service}.{method}: {code} {payload}{proc.stderr}")
    return json.loads(payload)["result"]


def wait_control_plane(ns: NetNs, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """Poll the control plane's admin API until it answers (bounded).

    Raises:
        RuntimeError: it exited or did not answer in time.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"control plane exited with {proc.returncode}")
        got = ns.run(["curl", "-s", "-m", "1", "-o", "/dev/null", "-w", "%{http_code}",
                      f"http://{CP_ADMIN}/ready"], timeout=5, check=False)  # fmt: skip
        if got.stdout.strip() == "200":
            return
        time.sleep(0.1)
    raise RuntimeError(f"control plane not ready after {timeout}s")


def configure_discovery(a: NetNs, b_ip: str) -> None:
    """Pod A's Destination: the two services resolve to pod B endpoints with B's identity.

    The bulk service goes through the opaque-transport port (the mTLS proxies'
    inbound port; its profile says opaque, so proxy A does no detection); the gRPC
    service straight to the backend's h2c port, with an H2 hint.
    """
    bulk = Endpoint(f"{b_ip}:{configs.SINK_PORT}", tls_identity=B_ID, opaque_port=PORTS.inbound,
                    protocol_hint="opaque")  # fmt: skip
    grpc = Endpoint(f"{b_ip}:{configs.BACKEND_H2_PORT}", tls_identity=B_ID, protocol_hint="h2")
    for service, fqn, ep, opaque in (
        (BULK_SERVICE, "bulk.bench.svc.cluster.local", bulk, True),
        (GRPC_SERVICE, "grpc.bench.svc.cluster.local", grpc, False),
    ):
        port = service.rpartition(":")[2]
        _call(a, "dst", "set_endpoints", {"name": f"{fqn}:{port}", "endpoints": [ep]})
        _call(a, "dst", "profile", {"target": service, "opaque_protocol": opaque, "fqn": fqn})


def nginx_tls_files(ca_dir: str, workdir: str, name: str) -> configs.TlsFiles:
    """A leaf for ``name`` from the test CA (1 h), its key and the root, as PEM files."""
    ca = TestCa.load(ca_dir)
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = ca.issue([name], key.public_key(), datetime.timedelta(seconds=LIFETIME_S))
    short = name.split(".")[0]
    pem = serialization.Encoding.PEM
    files = configs.TlsFiles(
        chain=os.path.join(workdir, f"nginx-{short}.crt"),
        key=os.path.join(workdir, f"nginx-{short}.key"),
        roots=os.path.join(workdir, "roots.pem"),
    )
    Path(files.chain).write_bytes(leaf.public_bytes(pem) + ca.issuer.public_bytes(pem))
    key_pem = key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    Path(files.key).write_bytes(key_pem)
    Path(files.roots).write_text(ca.trust_anchors_pem)
    return files
