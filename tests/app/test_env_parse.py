"""Value syntax of LINKERD2_PROXY_* variables, checked against the reference's rules."""

from __future__ import annotations

import ipaddress
import sys

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from linkerd_proxy.addrs import NameAddr, SocketAddr
from linkerd_proxy.app import env_parse as p

UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("0ms", 0.0),
        ("100ms", 0.1),
        ("1500ms", 1.5),
        ("10s", 10.0),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("365d", 365 * 86400.0),
        (" 1ms\t", 0.001),  # the reference trims surrounding whitespace
    ],
)
async def test_duration_valid(text: str, seconds: float) -> None:
    assert p.parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text",
    [
        "1.5s",
        ".5s",
        "10",
        "1",
        "5 s",
        "-1s",
        "+1s",
        "",
        " ",
        "1y",
        "12moons",
        "s",
        "1S",
        "1MS",
        "\uff11s",  # a fullwidth digit
        "1s1",
        "123456789012345678901234567890ms",
    ],
)
async def test_duration_invalid(text: str) -> None:
    with pytest.raises(ValueError, match=r"duration"):
        p.parse_duration(text)


async def test_optional_duration_empty_is_no_limit() -> None:
    assert p.parse_optional_duration("") is None
    assert p.parse_optional_duration("3s") == 3.0
    with pytest.raises(ValueError):
        p.parse_optional_duration("3")


@given(st.integers(0, 10**9), st.sampled_from(sorted(UNITS)))
async def test_duration_round_trip(n: int, unit: str) -> None:
    seconds = p.parse_duration(f"{n}{unit}")
    assert seconds == (n / 1000 if unit == "ms" else n * UNITS[unit])
    assert p.parse_duration(p.format_duration(seconds)) == seconds


@given(st.integers(0, 10**12))
async def test_format_duration_round_trip(millis: int) -> None:
    text = p.format_duration(millis / 1000)
    assert p.parse_duration(text) == millis / 1000
    assert " " not in text and "." not in text


async def test_format_duration_picks_largest_unit() -> None:
    assert p.format_duration(0) == "0"
    assert p.format_duration(0.1) == "100ms"
    assert p.format_duration(90) == "90s"
    assert p.format_duration(300) == "5m"
    assert p.format_duration(86400) == "1d"
    with pytest.raises(ValueError):
        p.format_duration(0.0001)


async def test_bool() -> None:
    assert p.parse_bool("true") is True
    assert p.parse_bool("false") is False
    for bad in ("True", "FALSE", "1", "0", "yes", "", " true"):
        with pytest.raises(ValueError, match="true or false"):
            p.parse_bool(bad)


async def test_uint() -> None:
    assert p.parse_uint("10000") == 10000
    assert p.parse_uint("+5") == 5  # Rust's integer parser accepts a leading +
    for bad in ("-1", "", "1.0", " 1", "1e3", "0x10"):
        with pytest.raises(ValueError):
            p.parse_uint(bad)
    with pytest.raises(ValueError, match="from 1 to 10"):
        p.parse_uint("11", min_value=1, max_value=10)


async def test_socket_addr() -> None:
    assert p.parse_socket_addr("127.0.0.1:4140") == SocketAddr.parse("127.0.0.1:4140")
    assert str(p.parse_socket_addr("[::1]:4140")) == "[::1]:4140"
    assert str(p.parse_socket_addr("[::]:4143")) == "[::]:4143"
    for bad in (
        "localhost:4140",
        "::1:4140",
        "127.0.0.1",
        "127.0.0.1:65536",
        "",
        ":80",
        "[fe80::1%eth0]:80",
        "127.0.0.1:http",
        "1.2.3.4:80 ",
    ):
        with pytest.raises(ValueError, match="expected an address like"):
            p.parse_socket_addr(bad)


async def test_socket_addrs() -> None:
    assert len(p.parse_socket_addrs("127.0.0.1:4140")) == 1
    two = p.parse_socket_addrs("127.0.0.1:4140,[::1]:4140")
    assert [str(a) for a in two] == ["127.0.0.1:4140", "[::1]:4140"]
    with pytest.raises(ValueError, match="only two"):
        p.parse_socket_addrs("127.0.0.1:1,127.0.0.1:2,127.0.0.1:3")
    for bad in ("", "127.0.0.1:1, [::1]:1", "127.0.0.1:1,"):
        with pytest.raises(ValueError):
            p.parse_socket_addrs(bad)


async def test_ip_set() -> None:
    ips = p.parse_ip_set("10.42.0.17,fd00::11")
    assert ips == {ipaddress.ip_address("10.42.0.17"), ipaddress.ip_address("fd00::11")}
    # Like the reference: no spaces, no prefixes, and an empty value is not an empty set.
    for bad in ("", "blaah", "10.4.0.555", "10.0.1.1/24", "10.0.0.1, 10.0.0.2", "10.0.0.1,"):
        with pytest.raises(ValueError, match="IP address"):
            p.parse_ip_set(bad)


@pytest.mark.parametrize(
    ("text", "ports"),
    [
        ("1-65535", set(range(1, 65536))),
        ("1-2,42-44", {1, 2, 42, 43, 44}),
        ("40,30,20,1", {1, 20, 30, 40}),
        ("1,,,,2", {1, 2}),
        ("1, 2,\t3- 5", {1, 2, 3, 4, 5}),
        ("1, , 2,", {1, 2}),
        ("", set()),
        ("25,587,3306,4444,5432,6379,9300,11211", {25, 587, 3306, 4444, 5432, 6379, 9300, 11211}),
    ],
)
async def test_port_set_valid(text: str, ports: set[int]) -> None:
    assert p.parse_port_set(text) == ports


@pytest.mark.parametrize(
    "text",
    [
        "asdf",
        "80, 443, http",
        "80,http-443",
        "80-79",
        "1,2,5-2",
        "-1",
        "1,2-,50",
        "69420",
        "1-69420",
        "1-2-3",
        "8080-",
    ],
)
async def test_port_set_invalid(text: str) -> None:
    with pytest.raises(ValueError, match="port range"):
        p.parse_port_set(text)


@given(st.frozensets(st.integers(0, 65535), max_size=50))
async def test_port_set_round_trip(ports: frozenset[int]) -> None:
    assert p.parse_port_set(p.format_port_set(ports)) == ports


@given(st.integers(0, 65535), st.integers(0, 2000))
async def test_port_range_round_trip(low: int, width: int) -> None:
    high = min(low + width, 65535)
    assert p.format_port_set(range(low, high + 1)) == (str(low) if low == high else f"{low}-{high}")
    assert p.parse_port_set(f"{low}-{high}") == frozenset(range(low, high + 1))


async def test_networks() -> None:
    nets = p.parse_networks("10.0.0.0/8,100.64.0.0/10, fd00::/8 ,")
    assert nets == {
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("100.64.0.0/10"),
        ipaddress.ip_network("fd00::/8"),
    }
    assert p.parse_networks("") == frozenset()
    # Host bits are allowed (masked off), as ipnet accepts them.
    assert p.parse_networks("192.168.12.34/16") == {ipaddress.ip_network("192.168.0.0/16")}
    for bad in (
        "10.0.0.0",
        "fd00::1",
        "10.0.0.0/33",
        "fd00::/129",
        "10.0.0.0/255.0.0.0",
        "10.0.0.0/",
        "10.0.0/8",
        "cluster",
        "10.0.0.0/8;fd00::/8",
    ):
        with pytest.raises(ValueError, match="network"):
            p.parse_networks(bad)


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("", False),
        (".", False),
        ("..", False),
        ("*", False),
        ("a", True),
        ("a.", True),
        ("d.c.b.a", True),
        ("d.c.b.a.", True),
        (" d.c.b.a.", False),
        ("d.c.b.a-", False),
        ("*.a.", False),
        (".a.", False),
        ("a1", True),
        ("_m.foo.bar", True),
        ("m.foo.bar_", True),
        ("example.com:80", False),
        ("1", False),
        ("1.a", True),
        ("a.1", False),
        ("a.1.", False),
        ("1.2.3.4", False),
        ("::1", False),
        ("xn--poema-9qae5a.com.br", True),
        ("-a.b", False),
        ("a" * 64 + ".b", False),
        ("a" * 63 + ".b", True),
        ("é.com", False),
    ],
)
async def test_dns_name(name: str, ok: bool) -> None:
    if ok:
        assert p.parse_dns_name(name) == name.lower()
    else:
        with pytest.raises(ValueError, match="DNS name"):
            p.parse_dns_name(name)


async def test_dns_name_lowercased() -> None:
    assert p.parse_dns_name("Linkerd-Dst.Linkerd.SVC.") == "linkerd-dst.linkerd.svc."


async def test_dns_suffixes() -> None:
    assert p.parse_dns_suffixes("") == frozenset()
    assert p.parse_dns_suffixes(",,,") == frozenset()
    assert p.parse_dns_suffixes(".") == {"."}
    assert p.parse_dns_suffixes("a.b.c") == {"a.b.c"}
    assert p.parse_dns_suffixes("a.b.c.") == {"a.b.c."}
    assert p.parse_dns_suffixes(" a.b.c. , d.e.f. ") == {"a.b.c.", "d.e.f."}
    assert p.parse_dns_suffixes("mUlti.CasE.nAmE") == {"multi.case.name"}
    with pytest.raises(ValueError, match="suffix"):
        p.parse_dns_suffixes("a .b.c")


async def test_identity() -> None:
    name = "web.emojivoto.serviceaccount.identity.linkerd.cluster.local"
    assert p.parse_identity(name.upper()) == name
    spiffe = "spiffe://cluster.local/ns/emojivoto/sa/web"
    assert p.parse_identity(spiffe) == spiffe
    for bad in ("", "web.ns.", "1.2.3.4", "not a name", "-x.y"):
        with pytest.raises(ValueError, match="identity"):
            p.parse_identity(bad)


async def test_control_target() -> None:
    assert p.parse_control_target("127.0.0.1:8086") == SocketAddr.parse("127.0.0.1:8086")
    assert p.parse_control_target("[::1]:8086") == SocketAddr.parse("[::1]:8086")
    assert p.parse_control_target("Linkerd-Dst-Headless.linkerd.svc.cluster.local.:8086") == (
        NameAddr("linkerd-dst-headless.linkerd.svc.cluster.local.", 8086)
    )
    assert p.parse_control_target("localhost:8086") == NameAddr("localhost", 8086)
    for bad, why in (
        ("linkerd-dst", "port"),
        ("dst:http", "port"),
        ("dst:70000", "port"),
        (":8086", "host"),
        ("-bad-:80", "host"),
        ("a b:80", "host"),
        ("", "port"),
    ):
        with pytest.raises(ValueError, match=why):
            p.parse_control_target(bad)


async def test_localhost_name_is_only_absolute() -> None:
    assert p.is_localhost_name("localhost.")
    assert p.is_localhost_name("LocalHost.")
    assert not p.is_localhost_name("localhost")
    assert not p.is_localhost_name("mlocalhost.")


async def test_trust_anchors() -> None:
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    assert p.parse_trust_anchors(pem) == pem
    for bad in ("", "MIIB", "-----BEGIN PRIVATE KEY-----"):
        with pytest.raises(ValueError, match="trust anchors"):
            p.parse_trust_anchors(bad)


async def test_trace_attributes() -> None:
    text = (
        'cluster="test-cluster1"\nzone=us-est-coast\nworkload=\nkind=""\n'
        'key1="="\nkey2==v\nkey3\n=k4\n'
    )
    assert p.parse_trace_attributes(text) == {
        "cluster": "test-cluster1",
        "zone": "us-est-coast",
        "workload": "",
        "kind": "",
        "key1": "=",
        "key2": "=v",
        "": "k4",
    }


async def test_kinds() -> None:
    assert p.RATIO.parse("1") == 1.0
    assert p.RATIO.parse("0.5") == 0.5
    for bad in ("0", "1.5", "-0.5", "nan", "inf", "", " 0.5", "1_0"):
        with pytest.raises(ValueError):
            p.RATIO.parse(bad)
    assert p.JITTER.parse("0") == 0.0
    assert p.JITTER.parse("100") == 100.0
    for bad in ("100.5", "-0.1", "nan", "inf"):
        with pytest.raises(ValueError):
            p.JITTER.parse(bad)
    assert p.LOG_FORMAT.parse("JSON") == "json"
    assert p.LOG_FORMAT.parse("plain") == "plain"
    with pytest.raises(ValueError, match="plain, json"):
        p.LOG_FORMAT.parse("text")
    assert p.ACCESS_LOG.parse("") is None
    assert p.ACCESS_LOG.parse("Apache") == "apache"
    with pytest.raises(ValueError):
        p.ACCESS_LOG.parse("combined")
    assert p.AUTHORITY.parse("") is False
    assert p.AUTHORITY.parse("UNSAFE") is True
    with pytest.raises(ValueError, match="unsafe"):
        p.AUTHORITY.parse("true")
    assert p.FRAME.parse("16384") == 16384
    for bad in ("16383", "16777216"):
        with pytest.raises(ValueError):
            p.FRAME.parse(bad)
    assert p.CORES.parse("2") == 2
    with pytest.raises(ValueError):
        p.CORES.parse("0")
    for policy in p.POLICIES:
        assert p.POLICY.parse(policy) == policy
    with pytest.raises(ValueError, match="all-unauthenticated"):
        p.POLICY.parse("unauthenticated")


async def test_pure_module_does_not_import_trio() -> None:
    code = "import sys, linkerd_proxy.app.env_parse; print('trio' in sys.modules)"
    out = await trio.run_process([sys.executable, "-c", code], capture_stdout=True)
    assert out.stdout.strip() == b"False"


async def test_policy_names_are_exact() -> None:
    for bad in ("Deny", " deny", "deny "):
        with pytest.raises(ValueError):
            p.POLICY.parse(bad)
    assert p.LOG_FORMAT.parse(" Plain ") == "plain"  # the log format is trimmed and folded
