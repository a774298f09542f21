"""The ``linkerd-proxy`` binary's exit codes and messages, run as a real process."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

CMD = [sys.executable, "-m", "linkerd_proxy_bin"]


def _run(env: dict[str, str], timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(CMD, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize(
    ("var", "value", "why"),
    [
        ("LINKERD2_PROXY_INBOUND_CONNECT_TIMEOUT", "1.5s", "duration"),
        ("LINKERD2_PROXY_OUTBOUND_CONNECT_TIMEOUT", "10", "duration"),
        ("LINKERD2_PROXY_ADMIN_LISTEN_ADDR", "127.0.0.1", "address"),
        ("LINKERD2_PROXY_INBOUND_LISTEN_ADDR", "localhost:4143", "address"),
        ("LINKERD2_PROXY_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION", "25,90-80", "port"),
        ("LINKERD2_PROXY_INBOUND_PORTS", "70000", "port"),
        ("LINKERD2_PROXY_DESTINATION_PROFILE_NETWORKS", "10.0.0.0/33", "network"),
        ("LINKERD2_PROXY_POLICY_CLUSTER_NETWORKS", "10.0.0.0/8,nonsense", "network"),
        ("LINKERD2_PROXY_SHUTDOWN_ENDPOINT_ENABLED", "yes", "bool"),
    ],
)
def test_bad_values_exit_64_naming_the_variable(var: str, value: str, why: str) -> None:
    proc = _run({var: value})
    assert proc.returncode == 64, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith(f"Invalid configuration: {var}={value}: "), line
    assert why in line.lower() or "expected" in line.lower(), line


def test_control_address_needs_a_name_unless_loopback() -> None:
    addr = "linkerd-dst-headless.linkerd.svc.cluster.local.:8086"
    proc = _run({"LINKERD2_PROXY_DESTINATION_SVC_ADDR": addr})
    assert proc.returncode == 64, proc.stderr
    assert "LINKERD2_PROXY_DESTINATION_SVC_NAME" in proc.stderr


def test_unsupported_control_plane_is_refused_clearly() -> None:
    # A non-loopback control plane needs mTLS, hence identity (not in this build).
    proc = _run(
        {
            "LINKERD2_PROXY_DESTINATION_SVC_ADDR": "192.0.2.1:8086",
            "LINKERD2_PROXY_DESTINATION_SVC_NAME": "linkerd-destination.linkerd.serviceaccount"
            ".identity.linkerd.cluster.local",
            "LINKERD2_PROXY_ADMIN_LISTEN_ADDR": "127.0.0.1:0",
        }
    )
    assert proc.returncode == 1
    assert "LINKERD2_PROXY_DESTINATION_SVC_ADDR" in proc.stderr + proc.stdout


def test_port_in_use_is_an_init_failure() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        addr = f"127.0.0.1:{taken.getsockname()[1]}"
        proc = _run(
            {
                "LINKERD2_PROXY_ADMIN_LISTEN_ADDR": addr,
                "LINKERD2_PROXY_LOG": "warn,linkerd=info",
            }
        )
    assert proc.returncode == 1
    assert "failed to initialize the proxy" in proc.stdout + proc.stderr


def test_help() -> None:
    proc = subprocess.run([*CMD, "--help"], capture_output=True, text=True, timeout=20)
    assert proc.returncode == 0
    assert "LINKERD2_PROXY_" in proc.stdout
