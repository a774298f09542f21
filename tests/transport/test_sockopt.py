"""Socket options as the kernel reports them back."""

from __future__ import annotations

import logging
import socket

import pytest

from linkerd_proxy.transport.sockopt import configure_tcp


def _get(sock: socket.socket, level: int, opt: int) -> int:
    return sock.getsockopt(level, opt)


def test_configured_values_reach_the_kernel() -> None:
    with socket.socket() as s:
        configure_tcp(s, keepalive=10.0, user_timeout=30.0)
        assert _get(s, socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        assert _get(s, socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert _get(s, socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 10
        assert _get(s, socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 30_000


def test_unset_values_keep_kernel_defaults_but_keepalive_is_on() -> None:
    with socket.socket() as plain, socket.socket() as s:
        default_idle = _get(plain, socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)
        configure_tcp(s, keepalive=None, user_timeout=None)
        assert _get(s, socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert _get(s, socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == default_idle
        assert _get(s, socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 0


def test_sub_unit_values_round_up_not_to_zero() -> None:
    with socket.socket() as s:
        configure_tcp(s, keepalive=0.2, user_timeout=0.0004)
        assert _get(s, socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 1
        assert _get(s, socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 1


def test_failures_are_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    s = socket.socket()
    s.close()
    with caplog.at_level(logging.WARNING, logger="linkerd_proxy.transport.sockopt"):
        configure_tcp(s, keepalive=5.0, user_timeout=5.0)
    messages = [r.getMessage() for r in caplog.records]
    assert any("nodelay" in m for m in messages)
    assert any("keepalive" in m for m in messages)
    assert any("user timeout" in m for m in messages)
