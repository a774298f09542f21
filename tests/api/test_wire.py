"""Wire compatibility of ``linkerd_proxy.api`` with the real linkerd2-proxy-api.

The reference is the upstream .proto files (linkerd2-proxy-api, plus
linkerd2-proxy's transport header) compiled by protoc into a FileDescriptorSet:
``upstream_api.txtpb`` beside this file, in text format and without source info
(so it carries the wire contract and no upstream prose). Refresh it with::

    python tests/api/test_wire.py --refresh

which reads the git repositories named by ``LINKERD2_PROXY_API_REPO`` and
``LINKERD2_PROXY_REPO``. When those are present, a test also checks the fixture
is what the upstream sources compile to today.

The proof has three parts: our ``proto/`` compiles to the same contract as
upstream (every package, message, field name/number/type/label, oneof, map,
enum value, reserved entry and RPC); the generated betterproto2 classes carry
the same numbers and types; and every upstream message type, populated in every
field by the official protobuf runtime, survives a trip through betterproto2
with nothing left over as unknown fields.

Skips when grpcio-tools (protoc and the protobuf runtime) is not installed.
"""

from __future__ import annotations

import datetime
import io
import os
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("grpc_tools", reason="grpcio-tools is not installed (pip install grpcio-tools)")

import betterproto2
from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    json_format,
    message_factory,
    text_format,
)
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from grpc_tools import protoc

import linkerd_proxy.api as api
from linkerd_proxy.api.message_pool import default_message_pool

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
FIXTURE = HERE / "upstream_api.txtpb"
PROTO_DIR = ROOT / "proto"
WELL_KNOWN = Path(protoc.__file__).parent / "_proto"

API_REPO = os.environ.get(
    "LINKERD2_PROXY_API_REPO", "/work/.mirror/linkerd+linkerd2-proxy-api/repo"
)
PROXY_REPO = os.environ.get("LINKERD2_PROXY_REPO", "/work/.mirror/linkerd+linkerd2-proxy/repo")
HEADER_PATH = "linkerd/transport-header/proto/header.proto"

GENERATED = [
    "destination",
    "grpc_route",
    "http_route",
    "http_types",
    "identity",
    "inbound",
    "meta",
    "net",
    "opaque_route",
    "outbound",
    "tap",
    "tls_route",
    "transport_header",
]


# --- compiling -----------------------------------------------------------------


def compile_set(include_dirs: list[Path], files: list[str]) -> descriptor_pb2.FileDescriptorSet:
    """Compile ``files`` with protoc into a FileDescriptorSet (imports included)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        args = ["protoc", *(f"-I{d}" for d in include_dirs)]
        args += [f"--descriptor_set_out={out}", "--include_imports", *files]
        assert protoc.main(args) == 0, f"protoc failed on {files}"
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def ours() -> descriptor_pb2.FileDescriptorSet:
    files = sorted(p.relative_to(PROTO_DIR).as_posix() for p in PROTO_DIR.rglob("*.proto"))
    return compile_set([PROTO_DIR, WELL_KNOWN], files)


def upstream() -> descriptor_pb2.FileDescriptorSet:
    fds = descriptor_pb2.FileDescriptorSet()
    text_format.Parse(FIXTURE.read_text(), fds)
    return fds


def _git_dir(path: str) -> bool:
    return Path(path).is_dir() and (Path(path, "HEAD").is_file() or Path(path, ".git").exists())


def upstream_from_sources() -> descriptor_pb2.FileDescriptorSet:
    """Compile the upstream repositories' HEAD .proto files."""
    with tempfile.TemporaryDirectory() as tmp:
        api_dir, header_dir = Path(tmp, "api"), Path(tmp, "header")
        header_dir.mkdir()
        tar = subprocess.run(
            ["git", "-C", API_REPO, "archive", "--format=tar", "HEAD", "proto"],
            check=True,
            capture_output=True,
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
            archive.extractall(api_dir, filter="data")
        header = subprocess.run(
            ["git", "-C", PROXY_REPO, "show", f"HEAD:{HEADER_PATH}"],
            check=True,
            capture_output=True,
        ).stdout
        (header_dir / "header.proto").write_bytes(header)
        proto = api_dir / "proto"
        files = sorted(
            p.relative_to(proto).as_posix()
            for p in proto.rglob("*.proto")
            if "google" not in p.relative_to(proto).parts
        )
        return compile_set([proto, header_dir], [*files, "header.proto"])


# --- the contract --------------------------------------------------------------


def _messages(prefix: str, msgs: Any) -> Iterator[tuple[str, descriptor_pb2.DescriptorProto]]:
    for m in msgs:
        name = f"{prefix}.{m.name}"
        yield name, m
        yield from _messages(name, m.nested_type)


def contract(fds: descriptor_pb2.FileDescriptorSet) -> dict[str, object]:
    """Everything about a set that shows on the wire (or in generated names).

    File names, imports, options other than ``deprecated``/``map_entry``, and
    declaration order are left out: they are layout, not contract.
    """
    out: dict[str, object] = {}
    for f in fds.file:
        if f.package == "google.protobuf":
            continue
        out[f"package {f.package}"] = f.syntax
        enums = [(f"{f.package}.{e.name}", e) for e in f.enum_type]
        for name, m in _messages(f.package, f.message_type):
            enums += [(f"{name}.{e.name}", e) for e in m.enum_type]
            fields = []
            for fd in m.field:
                oneof = m.oneof_decl[fd.oneof_index].name if fd.HasField("oneof_index") else ""
                fields.append(
                    (
                        fd.number,
                        fd.name,
                        fd.json_name,
                        fd.type,
                        fd.label,
                        fd.type_name,
                        oneof,
                        fd.proto3_optional,
                        fd.options.deprecated,
                    )
                )
            out[f"message {name}"] = {
                "fields": sorted(fields),
                "reserved": sorted((r.start, r.end) for r in m.reserved_range),
                "reserved_names": sorted(m.reserved_name),
                "map_entry": m.options.map_entry,
            }
        for name, e in enums:
            out[f"enum {name}"] = sorted((v.number, v.name) for v in e.value)
        for s in f.service:
            out[f"service {f.package}.{s.name}"] = sorted(
                (
                    mt.name,
                    mt.input_type,
                    mt.output_type,
                    mt.client_streaming,
                    mt.server_streaming,
                )
                for mt in s.method
            )
    return out


def assert_same_contract(got: dict[str, object], want: dict[str, object]) -> None:
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    differ = sorted(k for k in set(got) & set(want) if got[k] != want[k])
    details = [f"{k}:\n  ours:     {got[k]}\n  upstream: {want[k]}" for k in differ[:5]]
    assert not (missing or extra or differ), (
        f"missing {missing}\nextra {extra}\ndiffer:\n" + "\n".join(details)
    )


def upstream_pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    for f in upstream().file:  # protoc emits dependencies first
        pool.Add(f)
    return pool


def upstream_class(pool: descriptor_pool.DescriptorPool, full_name: str) -> type[Message]:
    cls: type[Message] = message_factory.GetMessageClass(pool.FindMessageTypeByName(full_name))
    return cls


def betterproto_classes() -> dict[str, type[betterproto2.Message]]:
    for name in GENERATED:
        getattr(api, name)  # importing registers the module's messages
    prefix = "type.googleapis.com/"
    return {url.removeprefix(prefix): cls for url, cls in default_message_pool.url_to_type.items()}


# --- 1. our .proto files ---------------------------------------------------------


def test_fixture_is_upstream_compiled() -> None:
    if not (_git_dir(API_REPO) and _git_dir(PROXY_REPO)):
        pytest.skip("upstream repositories not available (set LINKERD2_PROXY_API_REPO/_REPO)")
    assert_same_contract(contract(upstream()), contract(upstream_from_sources()))


def test_fixture_covers_every_api() -> None:
    names = {f.name for f in upstream().file}
    packages = {f.package for f in upstream().file}
    assert {"destination.proto", "identity.proto", "tap.proto", "inbound.proto"} <= names
    assert {"outbound.proto", "header.proto", "meta.proto", "net.proto"} <= names
    assert "transport.l5d.io" in packages
    assert len(contract(upstream())) > 150


def test_proto_files_match_upstream_contract() -> None:
    assert_same_contract(contract(ours()), contract(upstream()))


def test_contract_check_notices_a_renumbered_field() -> None:
    mine = ours()
    for f in mine.file:
        for m in f.message_type:
            if f.package == "io.linkerd.proxy.destination" and m.name == "WeightedAddr":
                m.field[1].number = 2  # weight is 3 upstream
    with pytest.raises(AssertionError, match="WeightedAddr"):
        assert_same_contract(contract(mine), contract(upstream()))


# --- 2. the generated classes ------------------------------------------------------

_BP_TYPES = {
    FieldDescriptor.TYPE_DOUBLE: betterproto2.TYPE_DOUBLE,
    FieldDescriptor.TYPE_FLOAT: betterproto2.TYPE_FLOAT,
    FieldDescriptor.TYPE_INT64: betterproto2.TYPE_INT64,
    FieldDescriptor.TYPE_UINT64: betterproto2.TYPE_UINT64,
    FieldDescriptor.TYPE_INT32: betterproto2.TYPE_INT32,
    FieldDescriptor.TYPE_FIXED64: betterproto2.TYPE_FIXED64,
    FieldDescriptor.TYPE_FIXED32: betterproto2.TYPE_FIXED32,
    FieldDescriptor.TYPE_BOOL: betterproto2.TYPE_BOOL,
    FieldDescriptor.TYPE_STRING: betterproto2.TYPE_STRING,
    FieldDescriptor.TYPE_MESSAGE: betterproto2.TYPE_MESSAGE,
    FieldDescriptor.TYPE_BYTES: betterproto2.TYPE_BYTES,
    FieldDescriptor.TYPE_UINT32: betterproto2.TYPE_UINT32,
    FieldDescriptor.TYPE_ENUM: betterproto2.TYPE_ENUM,
    FieldDescriptor.TYPE_SFIXED32: betterproto2.TYPE_SFIXED32,
    FieldDescriptor.TYPE_SFIXED64: betterproto2.TYPE_SFIXED64,
    FieldDescriptor.TYPE_SINT32: betterproto2.TYPE_SINT32,
    FieldDescriptor.TYPE_SINT64: betterproto2.TYPE_SINT64,
}


def _repeated(fd: FieldDescriptor) -> bool:
    # protobuf 6 added is_repeated; 7 removed label.
    if hasattr(fd, "is_repeated"):
        return bool(fd.is_repeated)
    return bool(fd.label == FieldDescriptor.LABEL_REPEATED)


def _is_map(fd: FieldDescriptor) -> bool:
    return fd.message_type is not None and fd.message_type.GetOptions().map_entry


def _check_class(cls: type[betterproto2.Message], desc: Descriptor, names: dict[type, str]) -> None:
    metas = cls._betterproto.meta_by_field_name
    by_number = {m.number: (py, m) for py, m in metas.items()}
    assert sorted(by_number) == sorted(f.number for f in desc.fields), desc.full_name
    for fd in desc.fields:
        py, meta = by_number[fd.number]
        where = f"{desc.full_name}.{fd.name} ({cls.__name__}.{py})"
        oneof = fd.containing_oneof.name if fd.containing_oneof is not None else None
        assert meta.group == oneof, where
        if _is_map(fd):
            assert meta.proto_type == betterproto2.TYPE_MAP, where
            assert meta.map_meta is not None, where
            key, value = fd.message_type.fields_by_number[1], fd.message_type.fields_by_number[2]
            assert meta.map_meta[0].proto_type == _BP_TYPES[key.type], where
            assert meta.map_meta[1].proto_type == _BP_TYPES[value.type], where
            continue
        assert meta.proto_type == _BP_TYPES[fd.type], where
        assert bool(meta.repeated) == _repeated(fd), where
        if fd.type == FieldDescriptor.TYPE_MESSAGE:
            target = meta.unwrap() if meta.unwrap else cls._betterproto.cls_by_field[py]
            assert names[target] == fd.message_type.full_name, where
        elif fd.type == FieldDescriptor.TYPE_ENUM:
            enum_cls = cls._betterproto.cls_by_field[py]
            assert {(m.value, m.proto_name or m.name) for m in enum_cls} == {
                (v.number, v.name) for v in fd.enum_type.values
            }, where


def test_generated_classes_match_upstream() -> None:
    pool = upstream_pool()
    classes = betterproto_classes()
    upstream_messages = {
        name
        for f in upstream().file
        for name, m in _messages(f.package, f.message_type)
        if not m.options.map_entry
    }
    # Upstream vendors Duration and Timestamp; the set must agree otherwise exactly.
    assert set(classes) == upstream_messages
    names = {cls: name for name, cls in classes.items()}
    for name, cls in classes.items():
        _check_class(cls, pool.FindMessageTypeByName(name), names)


# --- 3. bytes on the wire ------------------------------------------------------------


def _scalar(fd: FieldDescriptor, i: int) -> Any:
    t = fd.type
    if t == FieldDescriptor.TYPE_STRING:
        return f"{fd.name}-{i}"
    if t == FieldDescriptor.TYPE_BYTES:
        return bytes([0, 255, i]) + fd.name.encode()
    if t == FieldDescriptor.TYPE_BOOL:
        return True
    if t in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        return 0.25 + i  # exact in binary floating point
    if t == FieldDescriptor.TYPE_ENUM:
        return fd.enum_type.values[-1].number + 0 * i
    if t == FieldDescriptor.TYPE_FIXED32:
        return 0x7F000001 + i
    if t == FieldDescriptor.TYPE_FIXED64:
        return 0xFD00_0000_0000_0000 + i  # above 2**63: unsigned on both sides
    if t in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_INT64):
        return -(fd.number * 1000 + i)
    return fd.number * 1000 + i  # uint32, uint64


def populate(msg: Message, variant: int, depth: int = 0) -> None:
    """Set every field of ``msg`` (one member per oneof, picked by ``variant``)."""
    desc = msg.DESCRIPTOR
    if desc.full_name in ("google.protobuf.Duration", "google.protobuf.Timestamp"):
        # Microsecond precision: betterproto2 maps these to timedelta/datetime.
        msg.seconds = 1_700_000_000 + variant  # type: ignore[attr-defined]
        msg.nanos = 123_456_000  # type: ignore[attr-defined]
        return
    chosen = {o.name: o.fields[variant % len(o.fields)].name for o in desc.oneofs}
    for fd in desc.fields:
        if fd.containing_oneof is not None and chosen[fd.containing_oneof.name] != fd.name:
            continue
        if fd.type == FieldDescriptor.TYPE_MESSAGE and depth >= 4 and fd.containing_oneof is None:
            continue  # bounds recursive types (RequestMatch.not, Match.all ...)
        value = getattr(msg, fd.name)
        if _is_map(fd):
            for i in range(2):
                value[f"k{i}"] = f"v{i}"
        elif _repeated(fd):
            for i in range(2):
                if fd.type == FieldDescriptor.TYPE_MESSAGE:
                    populate(value.add(), variant + i, depth + 1)
                else:
                    value.append(_scalar(fd, i))
        elif fd.type == FieldDescriptor.TYPE_MESSAGE:
            if depth < 4:
                populate(value, variant, depth + 1)
            value.SetInParent()  # presence even for empty messages
        else:
            setattr(msg, fd.name, _scalar(fd, 0))


def _assert_no_unknown_fields(msg: betterproto2.Message, path: str) -> None:
    assert msg._unknown_fields == b"", f"unknown fields at {path}"
    for name in msg._betterproto.meta_by_field_name:
        value = getattr(msg, name)
        items = value.values() if isinstance(value, dict) else value
        for item in items if isinstance(value, (list, dict)) else [value]:
            if isinstance(item, betterproto2.Message):
                _assert_no_unknown_fields(item, f"{path}.{name}")


def round_trip(bp_cls: type[betterproto2.Message], up_cls: type[Message], variant: int) -> None:
    """Upstream bytes -> betterproto2 -> bytes -> upstream must lose and add nothing."""
    original = up_cls()
    populate(original, variant)
    decoded = bp_cls.parse(original.SerializeToString())
    _assert_no_unknown_fields(decoded, up_cls.DESCRIPTOR.full_name)
    back = up_cls.FromString(bytes(decoded))
    assert back == original, f"{up_cls.DESCRIPTOR.full_name} variant {variant}"


def test_every_message_round_trips_through_betterproto() -> None:
    pool = upstream_pool()
    checked = 0
    for name, bp_cls in sorted(betterproto_classes().items()):
        up_cls = upstream_class(pool, name)
        variants = max([len(o.fields) for o in up_cls.DESCRIPTOR.oneofs] or [1])
        for variant in range(variants):
            round_trip(bp_cls, up_cls, variant)
            checked += 1
    assert checked > 200


@dataclass(eq=False, repr=False)
class _Renumbered(betterproto2.Message):
    """AuthorityOverride as a broken generator might emit it (field 2, not 1)."""

    authority_override: str = betterproto2.field(2, betterproto2.TYPE_STRING)


def test_checks_notice_a_renumbered_generated_field() -> None:
    pool = upstream_pool()
    name = "io.linkerd.proxy.destination.AuthorityOverride"
    round_trip(api.destination.AuthorityOverride, upstream_class(pool, name), 0)
    with pytest.raises(AssertionError, match="AuthorityOverride"):
        round_trip(_Renumbered, upstream_class(pool, name), 0)
    names = {_Renumbered: name}
    with pytest.raises(AssertionError, match="AuthorityOverride"):
        _check_class(_Renumbered, pool.FindMessageTypeByName(name), names)


def _upstream_json(pool: descriptor_pool.DescriptorPool, name: str, data: bytes) -> Any:
    return json_format.MessageToDict(upstream_class(pool, name).FromString(data))


def test_transport_header_bytes() -> None:
    th = api.transport_header
    header = th.Header(
        port=4143,
        name="web.ns.svc.cluster.local:80",
        session_protocol=th.SessionProtocol(http2=th.SessionProtocolHttp2()),
    )
    data = bytes(header)
    # port=4143 (varint), name (len-delimited), session_protocol{http2{}}.
    assert data[:3] == b"\x08\xaf\x20"
    assert data.endswith(b"\x1a\x02\x12\x00")
    got = _upstream_json(upstream_pool(), "transport.l5d.io.Header", data)
    assert got == {
        "port": 4143,
        "name": "web.ns.svc.cluster.local:80",
        "sessionProtocol": {"http2": {}},
    }
    # No protocol: opaque. Only the port goes on the wire.
    assert bytes(th.Header(port=8080)) == b"\x08\x90\x3f"


def test_destination_update_semantics() -> None:
    d, net = api.destination, api.net
    update = d.Update(
        add=d.WeightedAddrSet(
            addrs=[
                d.WeightedAddr(
                    addr=net.TcpAddress(ip=net.IpAddress(ipv4=0x0A000001), port=8080),
                    weight=10000,
                    metric_labels={"pod": "web-0"},
                    tls_identity=d.TlsIdentity(
                        dns_like_identity=d.TlsIdentityDnsLikeIdentity(
                            name="web.ns.serviceaccount.identity.linkerd.cluster.local"
                        )
                    ),
                    protocol_hint=d.ProtocolHint(
                        h2=d.ProtocolHintH2(),
                        opaque_transport=d.ProtocolHintOpaqueTransport(inbound_port=4143),
                    ),
                    http2=d.Http2ClientParams(
                        keep_alive=d.Http2ClientParamsKeepAlive(
                            interval=datetime.timedelta(seconds=10),
                            timeout=datetime.timedelta(milliseconds=1500),
                        )
                    ),
                )
            ],
            metric_labels={"service": "web"},
        )
    )
    got = _upstream_json(upstream_pool(), "io.linkerd.proxy.destination.Update", bytes(update))
    assert got == {
        "add": {
            "addrs": [
                {
                    "addr": {"ip": {"ipv4": 0x0A000001}, "port": 8080},
                    "weight": 10000,
                    "metricLabels": {"pod": "web-0"},
                    "tlsIdentity": {
                        "dnsLikeIdentity": {
                            "name": "web.ns.serviceaccount.identity.linkerd.cluster.local"
                        }
                    },
                    "protocolHint": {"h2": {}, "opaqueTransport": {"inboundPort": 4143}},
                    "http2": {"keepAlive": {"interval": "10s", "timeout": "1.500s"}},
                }
            ],
            "metricLabels": {"service": "web"},
        }
    }


def test_identity_and_policy_semantics() -> None:
    pool = upstream_pool()
    ident = api.identity
    valid_until = datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    resp = ident.CertifyResponse(
        leaf_certificate=b"leaf", intermediate_certificates=[b"i1"], valid_until=valid_until
    )
    got = _upstream_json(pool, "io.linkerd.proxy.identity.CertifyResponse", bytes(resp))
    assert got == {
        "leafCertificate": "bGVhZg==",
        "intermediateCertificates": ["aTE="],
        "validUntil": "2030-01-02T03:04:05Z",
    }
    assert ident.CertifyResponse.parse(bytes(resp)).valid_until == valid_until

    inbound = api.inbound
    authn = inbound.Authn(
        mesh_tls=inbound.AuthnPermitMeshTls(
            identities=inbound.AuthnPermitMeshTlsPermitClientIdentities(
                suffixes=[inbound.IdentitySuffix(parts=["cluster", "local"])]
            )
        )
    )
    got = _upstream_json(pool, "io.linkerd.proxy.inbound.Authn", bytes(authn))
    assert got == {"meshTLS": {"identities": {"suffixes": [{"parts": ["cluster", "local"]}]}}}

    limit = inbound.HttpLocalRateLimitLimit(requests_per_second=100)
    got = _upstream_json(pool, "io.linkerd.proxy.inbound.HttpLocalRateLimit.Limit", bytes(limit))
    assert got == {"requestsPerSecond": 100}


if __name__ == "__main__":
    if sys.argv[1:] != ["--refresh"]:
        sys.exit("usage: python tests/api/test_wire.py --refresh")
    fresh = upstream_from_sources()
    FIXTURE.write_text(
        "# The upstream linkerd2-proxy-api .proto files and linkerd2-proxy's\n"
        "# transport header, compiled by protoc (no source info).\n"
        "# Regenerate: python tests/api/test_wire.py --refresh\n"
        + text_format.MessageToString(fresh)
    )
    print(f"wrote {FIXTURE} ({len(fresh.file)} files)")
