"""The benchmark's table: renders a benchmark document as ``latest.md``.

The last step of the benchmark pipeline: :func:`render_markdown` turns the document
alone (see ``bench/summary.py`` for its shape) into the tables of BENCH.md, the
ratios of our proxy against direct, nginx and haproxy, and the targets, so a table
can be re-rendered from a saved ``latest.json``. Pure code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bench.catalog import CASES, MTLS_SYSTEMS, PROXY_SYSTEMS, SYSTEMS, Case, case_by_id
from bench.summary import OK, Doc, Record, fmt_num, ratio, value
from bench.targets import evaluate_targets


def fmt_ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def fmt_ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def _cell(doc: Doc, case_id: str, system: str, key: str, fmt: Any = fmt_num) -> str:
    """A table cell: the median, or the short status saying why there is none."""
    entry = doc.get("cases", {}).get(case_id, {}).get(system)
    if entry is None:
        return ""
    v = value(doc, case_id, system, key)
    if v is None:
        status = str(entry.get("status", ""))
        return status if not status.startswith(OK) else "-"
    return str(fmt(v))


def _mem_cell(doc: Doc, system: str, key: str) -> str:
    entry = doc.get("memory", {}).get(system)
    if entry is None:
        return "-"
    if entry.get("status") != OK:
        return str(entry.get("status"))
    v = entry.get(key)
    return "-" if v is None else f"{v:.1f} MiB"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _latency_cell(doc: Doc, system: str) -> str:
    p50 = _cell(doc, "h1_small_c1", system, "p50_ms", fmt_ms)
    p99 = _cell(doc, "h1_small_c1", system, "p99_ms", fmt_ms)
    return p50 if p50 == p99 else f"{p50} / {p99}"


def _h1_table(doc: Doc) -> list[str]:
    conns = doc.get("meta", {}).get("idle_conns", 1000)
    header = [
        "system", "HTTP/1 c16 req/s", "HTTP/1 c1 p50 / p99 ms", "HTTP/1 64KiB c16 req/s",
        "64KiB MB/s", "TCP bulk MB/s", "CPU s / 10k req (c16)", "idle RSS",
        f"RSS +{conns:,} conns", "peak RSS",
    ]  # fmt: skip
    rows = []
    for system, label in _plain_systems():
        peak = doc.get("peak_rss_mib", {}).get(system)
        rows.append([
            label,
            _cell(doc, "h1_small_c16", system, "rps"),
            _latency_cell(doc, system),
            _cell(doc, "h1_64k_c16", system, "rps"),
            _cell(doc, "h1_64k_c16", system, "mb_s"),
            _cell(doc, "tcp_bulk", system, "mb_s") or "-",
            _cell(doc, "h1_small_c16", system, "cpu_per_10k"),
            _mem_cell(doc, system, "idle_rss_mib"),
            _mem_cell(doc, system, "conns_rss_mib"),
            "-" if peak is None else f"{peak:.1f} MiB",
        ])  # fmt: skip
    return _table(header, rows)


def _h2_table(doc: Doc) -> list[str]:
    header = ["system", "/ok m1 req/s", "/ok m10 req/s", "64 KiB m10 req/s", "CPU s / 10k (m10)"]
    rows = [
        [
            label,
            _cell(doc, "h2_small_m1", system, "rps"),
            _cell(doc, "h2_small_m10", system, "rps"),
            _cell(doc, "h2_64k_m10", system, "rps"),
            _cell(doc, "h2_small_m10", system, "cpu_per_10k"),
        ]
        for system, label in _plain_systems()
    ]
    return _table(header, rows)


def _plain_systems() -> list[tuple[str, str]]:
    """The systems of the HTTP/1, HTTP/2 and plaintext TCP tables."""
    return [(s, label) for s, label in SYSTEMS.items() if s not in MTLS_SYSTEMS]


def _mtls_table(doc: Doc) -> list[str]:
    header = [
        "system", "TCP bulk over mTLS MB/s", "CPU s / GiB (bulk)", "gRPC unary req/s",
        "CPU s / 10k (gRPC)", "idle RSS (per proxy)", "peak RSS",
    ]  # fmt: skip
    rows = []
    for system in ("direct", *MTLS_SYSTEMS):
        peak = doc.get("peak_rss_mib", {}).get(system)
        rows.append([
            SYSTEMS[system],
            _cell(doc, "tcp_bulk_mtls", system, "mb_s") or "-",
            _cell(doc, "tcp_bulk_mtls", system, "cpu_per_gib") or "-",
            _cell(doc, "grpc_unary_mtls", system, "rps") or "-",
            _cell(doc, "grpc_unary_mtls", system, "cpu_per_10k") or "-",
            _mem_cell(doc, system, "idle_rss_mib"),
            "-" if peak is None or system == "direct" else f"{peak:.1f} MiB",
        ])  # fmt: skip
    return _table(header, rows)


_REFERENCES = {"nginx": ("nginx", "nginx-stream"), "haproxy": ("haproxy", "haproxy-tcp")}


def reference_system(case: Case, name: str) -> str | None:
    """The system that stands for ``name`` (nginx, haproxy) in ``case``, if any.

    HTTP cases compare with the HTTP modes, the plaintext bulk copy with the stream
    modes, the gRPC case with the nginx pair doing the same mTLS job; nothing does
    the mTLS bulk copy's job (it is compared with direct only).
    """
    if case.grpc:
        return "nginx-grpc" if name == "nginx" else None
    if case.id == "tcp_bulk_mtls":
        return None
    http_sys, tcp_sys = _REFERENCES[name]
    return tcp_sys if case.tool == "bulk" else http_sys


def ratio_rows(doc: Doc) -> list[Record]:
    """Each proxy system's figure in each case against direct, nginx and haproxy.

    The references come from :func:`reference_system`. Latency ratios are of p50
    and p99 (lower is better); the others of req/s or MB/s (higher is better).
    """
    rows: list[Record] = []
    for case in CASES:
        keys = ["p50_ms", "p99_ms"] if case.connections == 1 and case.tool == "wrk" else []
        keys = keys or (["mb_s"] if case.tool == "bulk" else ["rps"])
        for system in PROXY_SYSTEMS:
            if system not in case.systems:
                continue
            for key in keys:
                mine = value(doc, case.id, system, key)
                refs = {"direct": value(doc, case.id, "direct", key)}
                for name in _REFERENCES:
                    ref_sys = reference_system(case, name)
                    refs[name] = None if ref_sys is None else value(doc, case.id, ref_sys, key)
                entry = doc.get("cases", {}).get(case.id, {}).get(system, {})
                rows.append({
                    "case": case.id,
                    "system": system,
                    "key": key,
                    "value": mine,
                    "status": entry.get("status", "not run"),
                    **{f"vs_{n}": ratio(mine, r) for n, r in refs.items()},
                })  # fmt: skip
    return rows


_FIGURES = {"rps": "req/s", "mb_s": "MB/s", "p50_ms": "p50 ms", "p99_ms": "p99 ms"}


def _ratio_table(doc: Doc) -> list[str]:
    header = ["case", "system", "figure", "value", "vs direct", "vs nginx", "vs haproxy"]
    rows = []
    for r in ratio_rows(doc):
        shown = fmt_num(r["value"]) if r["value"] is not None else str(r["status"])
        rows.append([
            case_by_id(r["case"]).title,
            SYSTEMS[r["system"]],
            _FIGURES[r["key"]],
            shown,
            fmt_ratio(r["vs_direct"]),
            fmt_ratio(r["vs_nginx"]),
            fmt_ratio(r["vs_haproxy"]),
        ])  # fmt: skip
    return _table(header, rows)


def _targets_table(doc: Doc) -> list[str]:
    marks = {True: "yes", False: "NO", None: "-"}
    rows = [
        [t["name"], t["goal"], t["measured"], marks[t["met"]]]
        for t in doc.get("targets") or evaluate_targets(doc)
    ]
    return _table(["target", "goal", "measured", "met"], rows)


def _meta_lines(meta: Mapping[str, Any]) -> list[str]:
    versions = ", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items())
    return [
        f"Run {meta.get('date', '?')} ({meta.get('mode', '?')}: {meta.get('rounds', '?')} "
        f"round(s), {meta.get('duration_s', '?')} s per run, TCP bulk "
        f"{meta.get('bulk_mib', '?')} MiB, alternating systems, medians), on "
        f"{meta.get('cpus', '?')} cores, kernel {meta.get('kernel', '?')}.",
        f"Tools: {versions}." if versions else "",
        f"Proxy: {meta.get('proxy', '?')}.",
    ]


def render_markdown(doc: Doc) -> str:
    """The results page: the BENCH.md tables for this run, the ratios and the targets."""
    lines = ["# Benchmark results", ""]
    lines += [x for x in _meta_lines(doc.get("meta", {})) if x]
    lines += ["", "## HTTP/1.1 (wrk -t1) and TCP", ""]
    lines += _h1_table(doc)
    lines += [
        "",
        "## HTTP/2 (h2load -t1 -c16, h2c prior knowledge)",
        "",
        "nginx: h2c in, HTTP/1.1 to the backend; haproxy: h2c in, h2c to the backend; "
        "the stream rows pass h2c through as TCP.",
        "",
    ]
    lines += _h2_table(doc)
    lines += [
        "",
        "## mTLS between the pods (two proxies, identities from one test CA)",
        "",
        "TCP: one connection copies the bulk size through proxy A, mTLS (transport "
        "header), proxy B. gRPC: h2load -t1 -c16 -m10 POSTs a gRPC frame; nginx: h2c "
        "in, grpc_pass grpcs:// with a client certificate, nginx in pod B verifies it "
        "and passes h2c to the backend. CPU of both proxies (both nginx).",
        "",
    ]
    lines += _mtls_table(doc)
    lines += ["", "## Ratios (same run)", ""]
    lines += _ratio_table(doc)
    lines += ["", "## Targets (BENCH.md)", ""]
    lines += _targets_table(doc)
    notes = doc.get("notes") or []
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"
