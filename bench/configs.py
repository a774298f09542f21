"""Configuration files for the backend and the reference proxies (nginx, haproxy).

Pure templates, rendered by ``bench/systems.py`` into a temporary directory at run
time. Every instance is one process (``master_process off``, ``nbthread 1``), the
same as the proxy under test, with its logs, pid and temp files in that directory,
keep-alive on both sides and limits high enough for the memory test's 1,000
connections. The ports are fixed here; the runner only picks the addresses.
"""

from __future__ import annotations

import attrs

BACKEND_H1_PORT = 80
BACKEND_H2_PORT = 8080
SINK_PORT = 5001
#: Pod B's nginx that terminates mTLS for the gRPC case (on pod B's IP).
GRPC_TLS_PORT = 8443
#: Pod A's nginx that takes h2c for the gRPC case and speaks gRPC over mTLS to pod B.
GRPC_FRONT_PORT = 8131

#: The gRPC method the backend answers (POST only; nginx serves a static frame).
GRPC_PATH = "/bench.Echo/Unary"
#: One gRPC message frame (uncompressed, 4 bytes: protobuf field 1 = "ok"); the
#: request h2load sends and the response the backend returns.
GRPC_FRAME = b"\x00\x00\x00\x00\x04\x0a\x02ok"

STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"


@attrs.frozen
class FrontPorts:
    """Where one reference proxy listens in pod A, per kind of traffic."""

    h1: int
    h2: int | None = None
    bulk: int | None = None


NGINX_HTTP = FrontPorts(h1=8101, h2=8111)
HAPROXY_HTTP = FrontPorts(h1=8102, h2=8112)
NGINX_STREAM = FrontPorts(h1=8103, h2=8113, bulk=8123)
HAPROXY_TCP = FrontPorts(h1=8104, h2=8114, bulk=8124)
#: The Python floor (``bench/floor.py``): a minimal trio relay, a minimal HTTP/1 proxy.
FLOOR_RELAY = FrontPorts(h1=8105, h2=8115)
FLOOR_HTTP1 = FrontPorts(h1=8106)

_NGINX_COMMON = """\
daemon off;
master_process off;
worker_processes 1;
pid {dir}/{name}.pid;
error_log {dir}/{name}-error.log warn;
worker_rlimit_nofile 16384;
events {{ worker_connections 8192; }}
"""

_NGINX_HTTP_COMMON = """\
    access_log off;
    client_body_temp_path {dir}/{name}-body;
    proxy_temp_path {dir}/{name}-proxy;
    fastcgi_temp_path {dir}/{name}-fastcgi;
    uwsgi_temp_path {dir}/{name}-uwsgi;
    scgi_temp_path {dir}/{name}-scgi;
    tcp_nodelay on;
    keepalive_timeout 600s;
    keepalive_requests 100000000;
"""


def nginx_backend(dir: str, www: str) -> str:
    """The backend in pod B: ``/ok`` (2 bytes) and ``/64k`` over HTTP/1.1 and h2c.

    Also a gRPC unary method at :data:`GRPC_PATH`: the static file of that name in
    ``www`` (a :data:`GRPC_FRAME`) as ``application/grpc`` with a ``grpc-status: 0``
    trailer. Static files refuse POST with 405; ``error_page 405 =200`` serves the
    file instead (an internal redirect, as GET). ``mirror`` makes nginx read the
    whole request body before it answers, as a gRPC server does. Without it the
    nginx pair failed ~1.5% of the calls with 502 ("upstream sent frame for unknown
    stream" in pod A's log, on a reused connection): an answer that comes before
    the request's end leaves a late frame of the finished stream.
    """
    name = "backend"
    return (
        _NGINX_COMMON.format(dir=dir, name=name)
        + "http {\n"
        + _NGINX_HTTP_COMMON.format(dir=dir, name=name)
        + f"""\
    sendfile on;
    default_type application/octet-stream;
    server {{
        listen {BACKEND_H1_PORT} backlog=4096;
        listen {BACKEND_H2_PORT} http2 backlog=4096;
        root {www};
        location = /ok {{ default_type text/plain; return 200 "ok"; }}
        location / {{ }}
        location = {GRPC_PATH} {{
            mirror /_read_body;
            error_page 405 =200 /_grpc_reply;
        }}
        location = /_read_body {{ internal; return 204; }}
        location = /_grpc_reply {{
            internal;
            types {{ }}
            default_type application/grpc;
            alias {www}{GRPC_PATH};
            add_trailer grpc-status 0;
        }}
    }}
}}
"""
    )


def nginx_http(dir: str, backend_ip: str) -> str:
    """nginx as a reverse proxy in pod A: HTTP/1.1 and h2c in, HTTP/1.1 out, pooled."""
    name = "nginx-http"
    p = NGINX_HTTP
    return (
        _NGINX_COMMON.format(dir=dir, name=name)
        + "http {\n"
        + _NGINX_HTTP_COMMON.format(dir=dir, name=name)
        + f"""\
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_buffer_size 16k;
    proxy_buffers 8 16k;
    upstream backend {{
        server {backend_ip}:{BACKEND_H1_PORT};
        keepalive 512;
        keepalive_requests 100000000;
        keepalive_timeout 600s;
    }}
    server {{
        listen 127.0.0.1:{p.h1} backlog=4096;
        listen 127.0.0.1:{p.h2} http2 backlog=4096;
        location / {{ proxy_pass http://backend; }}
    }}
}}
"""
    )


def nginx_stream(dir: str, backend_ip: str) -> str:
    """nginx's stream module in pod A: opaque TCP to the backend and the sink."""
    name = "nginx-stream"
    p = NGINX_STREAM
    pairs = [(p.h1, BACKEND_H1_PORT), (p.h2, BACKEND_H2_PORT), (p.bulk, SINK_PORT)]
    servers = "".join(
        f"    server {{ listen 127.0.0.1:{front} backlog=4096; "
        f"proxy_pass {backend_ip}:{back}; proxy_timeout 600s; }}\n"
        for front, back in pairs
    )
    return (
        f"load_module {STREAM_MODULE};\n"
        + _NGINX_COMMON.format(dir=dir, name=name)
        + "stream {\n"
        + servers
        + "}\n"
    )


_HAPROXY_COMMON = """\
global
    nbthread 1
    maxconn 8192

defaults
    mode {mode}
    timeout connect 5s
    timeout client 600s
    timeout server 600s
    timeout http-keep-alive 600s
    timeout http-request 10s
"""


def haproxy_http(backend_ip: str) -> str:
    """haproxy mode http in pod A: HTTP/1.1 in and out; h2c in and h2c out."""
    p = HAPROXY_HTTP
    return _HAPROXY_COMMON.format(mode="http") + (
        f"""\
    http-reuse always

frontend h1
    bind 127.0.0.1:{p.h1}
    default_backend be_h1

frontend h2
    bind 127.0.0.1:{p.h2} proto h2
    default_backend be_h2

backend be_h1
    server s1 {backend_ip}:{BACKEND_H1_PORT}

backend be_h2
    server s1 {backend_ip}:{BACKEND_H2_PORT} proto h2
"""
    )


def haproxy_tcp(backend_ip: str) -> str:
    """haproxy mode tcp in pod A: opaque TCP to the backend and the sink."""
    p = HAPROXY_TCP
    pairs = [("h1", p.h1, BACKEND_H1_PORT), ("h2", p.h2, BACKEND_H2_PORT)]
    pairs.append(("bulk", p.bulk or 0, SINK_PORT))
    listens = "".join(
        f"\nlisten {name}\n    bind 127.0.0.1:{front}\n    server s1 {backend_ip}:{back}\n"
        for name, front, back in pairs
    )
    return _HAPROXY_COMMON.format(mode="tcp") + listens


@attrs.frozen
class TlsFiles:
    """PEM files for one side of nginx's mTLS: a chain (leaf, issuer), its key, the root."""

    chain: str
    key: str
    roots: str


def nginx_grpc_front(dir: str, backend_ip: str, tls: TlsFiles, server_name: str) -> str:
    """nginx in pod A for the gRPC case: h2c in, gRPC over mTLS to pod B's nginx.

    It presents a client certificate from the test CA and verifies pod B's
    certificate for ``server_name`` (the identity pod B's proxy has).
    """
    name = "nginx-grpc-a"
    return (
        _NGINX_COMMON.format(dir=dir, name=name)
        + "http {\n"
        + _NGINX_HTTP_COMMON.format(dir=dir, name=name)
        + f"""\
    upstream grpc_b {{
        server {backend_ip}:{GRPC_TLS_PORT};
        keepalive 512;
        keepalive_requests 100000000;
        keepalive_timeout 600s;
    }}
    server {{
        listen 127.0.0.1:{GRPC_FRONT_PORT} http2 backlog=4096;
        location / {{
            grpc_pass grpcs://grpc_b;
            grpc_ssl_certificate {tls.chain};
            grpc_ssl_certificate_key {tls.key};
            grpc_ssl_trusted_certificate {tls.roots};
            grpc_ssl_verify on;
            grpc_ssl_verify_depth 3;
            grpc_ssl_name {server_name};
            grpc_ssl_server_name on;
            grpc_ssl_session_reuse on;
            grpc_ssl_protocols TLSv1.3;
        }}
    }}
}}
"""
    )


def nginx_grpc_back(dir: str, pod_ip: str, tls: TlsFiles) -> str:
    """nginx in pod B for the gRPC case: gRPC over mTLS in (client certificates
    required, from the test CA), h2c to the backend's h2c port."""
    name = "nginx-grpc-b"
    return (
        _NGINX_COMMON.format(dir=dir, name=name)
        + "http {\n"
        + _NGINX_HTTP_COMMON.format(dir=dir, name=name)
        + f"""\
    upstream backend_h2 {{
        server 127.0.0.1:{BACKEND_H2_PORT};
        keepalive 512;
        keepalive_requests 100000000;
        keepalive_timeout 600s;
    }}
    server {{
        listen {pod_ip}:{GRPC_TLS_PORT} ssl http2 backlog=4096;
        ssl_certificate {tls.chain};
        ssl_certificate_key {tls.key};
        ssl_client_certificate {tls.roots};
        ssl_verify_client on;
        ssl_verify_depth 3;
        ssl_protocols TLSv1.3;
        location / {{ grpc_pass grpc://backend_h2; }}
    }}
}}
"""
    )
