"""The targets of BENCH.md, evaluated on one benchmark document.

Pure code read by ``bench/run.py`` (stored in ``latest.json``) and shown by
``bench/report.py``. Every target is a ratio or a figure of this run; one that
cannot be measured in a run says "-" (and why) instead of passing or failing.
"""

from __future__ import annotations

from bench.summary import (
    Doc,
    Record,
    fmt_num,
    memory_value,
    ratio,
    value,
)


def _target(
    name: str,
    goal: str,
    measured: float | None,
    limit: float,
    *,
    at_least: bool,
    unit: str,
    caveat: str = "",
) -> Record:
    met = None if measured is None else (measured >= limit if at_least else measured <= limit)
    shown = "-" if measured is None else f"{fmt_num(measured)}{unit}{caveat}"
    return {"name": name, "goal": goal, "measured": shown, "value": measured, "met": met}


def evaluate_targets(doc: Doc) -> list[Record]:
    """The targets of BENCH.md, each with its measured ratio and whether it is met.

    ``met`` is ``None`` when the figure could not be measured in this run.
    """
    p = "proxy"
    # An HTTP figure of a proxy that forwarded HTTP as opaque TCP says so.
    tcp = " (TCP path)" if doc.get("meta", {}).get("proxy_http") is False else ""
    direct_p50 = value(doc, "h1_small_c1", "direct", "p50_ms")
    added_proxy = _sub(value(doc, "h1_small_c1", p, "p50_ms"), direct_p50)
    added_nginx = _sub(value(doc, "h1_small_c1", "nginx", "p50_ms"), direct_p50)
    targets = [
        _target(
            "opaque TCP bulk, plaintext",
            ">= 1.0x nginx stream",
            _vs(doc, "tcp_bulk", "mb_s", "nginx-stream"),
            1.0,
            at_least=True,
            unit="x",
        ),
        _unless_missing(
            doc,
            "tcp_bulk_mtls",
            _target(
                "opaque TCP bulk over mTLS",
                ">= 250 MB/s",
                value(doc, "tcp_bulk_mtls", "proxy-mtls", "mb_s"),
                250.0,
                at_least=True,
                unit=" MB/s",
            ),
        ),
        _target(
            "HTTP/1 small, c16",
            ">= 0.5x nginx reverse proxy",
            _vs(doc, "h1_small_c16", "rps", "nginx"),
            0.5,
            at_least=True,
            unit="x",
            caveat=tcp,
        ),
        _target(
            "HTTP/1 c1: p50 added over direct",
            "<= 3x what nginx adds",
            ratio(added_proxy, added_nginx),
            3.0,
            at_least=False,
            unit="x",
            caveat=tcp,
        ),
        _target(
            "HTTP/1 c1: p99",
            "<= 2x nginx's p99",
            _vs(doc, "h1_small_c1", "p99_ms", "nginx"),
            2.0,
            at_least=False,
            unit="x",
            caveat=tcp,
        ),
        _target(
            "HTTP/1 64 KiB, c16",
            ">= 0.6x nginx reverse proxy",
            _vs(doc, "h1_64k_c16", "rps", "nginx"),
            0.6,
            at_least=True,
            unit="x",
            caveat=tcp,
        ),
        _target(
            "HTTP/2 h2c c16 m10",
            ">= 0.25x nginx h2c proxy",
            _vs(doc, "h2_small_m10", "rps", "nginx"),
            0.25,
            at_least=True,
            unit="x",
            caveat=tcp,
        ),
        grpc_target(doc),
        _target(
            "idle RSS, all features loaded (meshed: identity, discovery, mTLS; per proxy)",
            "<= 48 MiB",
            memory_value(doc, "proxy-mtls", "idle_rss_mib"),
            48.0,
            at_least=False,
            unit=" MiB",
        ),
        _target(
            "idle RSS, standalone (no control plane)",
            "<= 48 MiB",
            memory_value(doc, p, "idle_rss_mib"),
            48.0,
            at_least=False,
            unit=" MiB",
        ),
        _target(
            "RSS added by 1,000 idle keep-alive connections",
            "<= 32 MiB",
            memory_value(doc, p, "conns_rss_mib"),
            32.0,
            at_least=False,
            unit=" MiB",
        ),
        _target(
            "proxy CPU per 10k HTTP/1 requests (c16)",
            "<= 1.0 s",
            value(doc, "h1_small_c16", p, "cpu_per_10k"),
            1.0,
            at_least=False,
            unit=" s",
            caveat=tcp,
        ),
    ]
    return targets


def grpc_target(doc: Doc) -> Record:
    """gRPC unary through two proxies with mTLS: reported (req/s and CPU per 10k),
    next to the nginx pair doing the same; "met" once both were measured."""
    case = "grpc_unary_mtls"
    mine = value(doc, case, "proxy-mtls", "rps")
    nginx = value(doc, case, "nginx-grpc", "rps")
    parts = []
    for label, system, rps in (("proxy x2", "proxy-mtls", mine), ("nginx x2", "nginx-grpc", nginx)):
        if rps is None:
            parts.append(f"{label}: {_status(doc, case, system)}")
            continue
        cpu = value(doc, case, system, "cpu_per_10k")
        cpu_text = "" if cpu is None else f", {fmt_num(cpu)} s CPU / 10k"
        parts.append(f"{label}: {fmt_num(rps)} req/s{cpu_text}")
    shown = "; ".join(parts)
    share = ratio(mine, nginx)
    if share is not None:
        shown += f" ({share:.2f}x nginx)"
    return {
        "name": "gRPC unary through two proxies (mTLS)",
        "goal": "reported, with the same through nginx",
        "measured": shown,
        "value": share,
        "met": True if share is not None else None,
    }


def _status(doc: Doc, case_id: str, system: str) -> str:
    entry = doc.get("cases", {}).get(case_id, {}).get(system)
    return "not run" if entry is None else str(entry.get("status", "not run"))


def _unless_missing(doc: Doc, case_id: str, target: Record) -> Record:
    """``target``, saying why ``proxy-mtls`` has no figure in ``case_id`` if it has none."""
    if target["value"] is None:
        target["measured"] = f"- ({_status(doc, case_id, 'proxy-mtls')})"
    return target


def _vs(doc: Doc, case_id: str, key: str, reference: str) -> float | None:
    return ratio(value(doc, case_id, "proxy", key), value(doc, case_id, reference, key))


def _sub(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b
