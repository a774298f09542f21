"""SO_ORIGINAL_DST decoding (pure) and the lookups usable without iptables."""

from __future__ import annotations

import ctypes
import ipaddress
import socket
import struct

import pytest
import trio

from linkerd_proxy.addrs import SocketAddr
from linkerd_proxy.errors import OrigDstError
from linkerd_proxy.transport.orig_dst import (
    decode_sockaddr_in,
    decode_sockaddr_in6,
    fixed_orig_dst,
    local_addr_as_orig_dst,
    orig_dst_addr,
    peer_addr,
    unmap_v4,
)


def test_decode_sockaddr_in_layout() -> None:
    # family in host order, then port and address in network order, 8 zero bytes.
    raw = struct.pack("=H", socket.AF_INET) + bytes([0x1F, 0x90, 10, 1, 2, 3]) + bytes(8)
    assert len(raw) == 16
    assert decode_sockaddr_in(raw) == SocketAddr.parse("10.1.2.3:8080")


def test_decode_sockaddr_in6_layout() -> None:
    ip = ipaddress.IPv6Address("fd00::1:2")
    raw = (
        struct.pack("=H", socket.AF_INET6)
        + struct.pack("!H", 443)
        + struct.pack("!I", 0xABCDE)  # flowinfo: ignored
        + ip.packed
        + struct.pack("=I", 7)  # scope id: ignored
    )
    assert len(raw) == 28
    assert decode_sockaddr_in6(raw) == SocketAddr(ip, 443)


class _SockaddrIn(ctypes.Structure):
    # <netinet/in.h>: the C compiler's layout, built independently of struct.pack.
    _fields_ = [
        ("family", ctypes.c_ushort),
        ("port", ctypes.c_ubyte * 2),
        ("addr", ctypes.c_ubyte * 4),
        ("zero", ctypes.c_ubyte * 8),
    ]


class _SockaddrIn6(ctypes.Structure):
    _fields_ = [
        ("family", ctypes.c_ushort),
        ("port", ctypes.c_ubyte * 2),
        ("flowinfo", ctypes.c_uint32),
        ("addr", ctypes.c_ubyte * 16),
        ("scope_id", ctypes.c_uint32),
    ]


def test_decode_matches_c_struct_layouts() -> None:
    v4 = _SockaddrIn(socket.AF_INET, (ctypes.c_ubyte * 2)(0x12, 0x34))
    v4.addr[:] = list(ipaddress.IPv4Address("192.0.2.9").packed)
    assert ctypes.sizeof(v4) == 16
    assert decode_sockaddr_in(bytes(v4)) == SocketAddr.parse("192.0.2.9:4660")

    v6 = _SockaddrIn6(socket.AF_INET6, (ctypes.c_ubyte * 2)(0, 80), 5)
    v6.addr[:] = list(ipaddress.IPv6Address("2001:db8::7").packed)
    v6.scope_id = 3
    assert ctypes.sizeof(v6) == 28
    assert decode_sockaddr_in6(bytes(v6)) == SocketAddr.parse("[2001:db8::7]:80")


@pytest.mark.parametrize(
    "raw",
    [b"", bytes(7), struct.pack("=H", socket.AF_INET6) + bytes(14)],
)
def test_decode_sockaddr_in_rejects_garbage(raw: bytes) -> None:
    with pytest.raises(ValueError):
        decode_sockaddr_in(raw)


def test_decode_sockaddr_in6_rejects_v4() -> None:
    with pytest.raises(ValueError, match="AF_INET6"):
        decode_sockaddr_in6(struct.pack("=H", socket.AF_INET) + bytes(26))


def test_unmap_v4() -> None:
    assert unmap_v4(SocketAddr.parse("[::ffff:10.0.0.1]:80")) == SocketAddr.parse("10.0.0.1:80")
    assert unmap_v4(SocketAddr.parse("[fd00::1]:80")) == SocketAddr.parse("[fd00::1]:80")
    assert unmap_v4(SocketAddr.parse("10.0.0.1:80")) == SocketAddr.parse("10.0.0.1:80")


async def _pair() -> tuple[trio.SocketStream, trio.SocketStream, trio.SocketListener]:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    listener = listeners[0]
    port = listener.socket.getsockname()[1]
    client = await trio.open_tcp_stream("127.0.0.1", port)
    server = await listener.accept()
    return client, server, listener


async def test_lookups_on_a_real_accepted_socket() -> None:
    client, server, listener = await _pair()
    async with client, server, listener:
        here = SocketAddr.from_sockaddr(listener.socket.getsockname())
        assert local_addr_as_orig_dst(server) == here
        assert peer_addr(server) == SocketAddr.from_sockaddr(client.socket.getsockname())
        assert fixed_orig_dst(SocketAddr.parse("10.9.8.7:99"))(server) == SocketAddr.parse(
            "10.9.8.7:99"
        )
        # Not redirected: no conntrack entry (ENOENT), or no conntrack at all.
        with pytest.raises(OrigDstError, match="SO_ORIGINAL_DST failed with E"):
            orig_dst_addr(server)


async def test_local_addr_lookup_on_a_closed_socket_is_an_orig_dst_error() -> None:
    client, server, listener = await _pair()
    async with client, listener:
        await server.aclose()
        with pytest.raises(OrigDstError):
            local_addr_as_orig_dst(server)
