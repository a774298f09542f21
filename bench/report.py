"""The benchmark's numbers: per-round records, medians, ratios, targets, the table.

Pure code at the end of the benchmark pipeline: the runner (``bench/run.py``) builds
a document (the content of ``bench/results/latest.json``) from round records made
here, and :func:`render_markdown` turns that document alone into
``bench/results/latest.md``, so a table can be re-rendered from a saved JSON file.

Document shape::

    {"meta": {...},
     "cases": {case_id: {system: {"status", "detail", "rounds": [...], "median": {...}}}},
     "memory": {system: {"status", "detail", "idle_rss_mib", "conns_rss_mib", "conns"}},
     "peak_rss_mib": {system: float},
     "targets": [...]}
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from bench.catalog import CASES, SYSTEMS, Case, case_by_id
from bench.parse import LoadResult

Doc = dict[str, Any]
Record = dict[str, Any]

OK = "ok"
NOT_SUPPORTED = "not supported yet"
NOT_MEASURABLE = "not measurable yet"


def median(values: Sequence[float | None]) -> float | None:
    """The median of the values that are not ``None``; ``None`` if there are none."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def ratio(value: float | None, reference: float | None) -> float | None:
    """``value / reference``, or ``None`` when either is missing or the reference is 0."""
    if value is None or reference is None or reference == 0:
        return None
    return value / reference


def round_record(
    result: LoadResult | None,
    *,
    cpu_s: float | None = None,
    status: str = OK,
    detail: str = "",
) -> Record:
    """One round of one case against one system, as stored in the JSON document.

    Args:
        result: what the load tool reported (``None`` if it failed).
        cpu_s: CPU seconds (user + system) the system's processes used in the round.
        status: :data:`OK`, or a short failure label shown in the table.
        detail: why it failed (tool output, exit code).
    """
    if result is None:
        return {"status": status if status != OK else "failed", "detail": detail}
    return {
        "status": status,
        "detail": detail,
        "requests": result.requests,
        "seconds": result.seconds,
        "rps": result.rps,
        "mb_s": result.mb_per_s,
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
        "errors": result.errors,
        "cpu_s": cpu_s,
    }


def _cpu_figure(rec: Record, case: Case) -> float | None:
    cpu = rec.get("cpu_s")
    if cpu is None:
        return None
    if case.tool == "bulk":
        gib = rec["mb_s"] * rec["seconds"] * 1e6 / (1 << 30)
        return cpu / gib if gib > 0 else None
    return cpu * 10_000 / rec["requests"] if rec["requests"] > 0 else None


def summarize(rounds: Sequence[Record], case: Case) -> Record:
    """Medians over the successful rounds, and the status of the whole series.

    CPU is per 10k requests, or per GiB for the bulk copy (``cpu_per_gib``).
    """
    good = [r for r in rounds if r["status"] == OK]
    failed = [r for r in rounds if r["status"] != OK]
    if not good:
        first = failed[0] if failed else {"status": "not run", "detail": ""}
        return {"status": first["status"], "detail": first.get("detail", ""), "median": {}}
    status = OK if not failed else f"ok ({len(good)}/{len(rounds)} rounds)"
    cpu_key = "cpu_per_gib" if case.tool == "bulk" else "cpu_per_10k"
    med = {
        key: median([r.get(key) for r in good])
        for key in ("rps", "mb_s", "p50_ms", "p99_ms", "requests")
    }
    med[cpu_key] = median([_cpu_figure(r, case) for r in good])
    detail = failed[0].get("detail", "") if failed else ""
    return {"status": status, "detail": detail, "median": med}


def value(doc: Doc, case_id: str, system: str, key: str) -> float | None:
    """A median from the document; ``None`` if that system has no good round there."""
    entry = doc.get("cases", {}).get(case_id, {}).get(system)
    if not entry or not str(entry.get("status", "")).startswith(OK):
        return None
    got = entry.get("median", {}).get(key)
    return float(got) if got is not None else None


def _memory(doc: Doc, system: str, key: str) -> float | None:
    entry = doc.get("memory", {}).get(system)
    if not entry or entry.get("status") != OK:
        return None
    got = entry.get(key)
    return float(got) if got is not None else None


# ------------------------------------------------------------------ targets


def _target(
    name: str, goal: str, measured: float | None, limit: float, *, at_least: bool, unit: str
) -> Record:
    met = None if measured is None else (measured >= limit if at_least else measured <= limit)
    shown = "-" if measured is None else f"{fmt_num(measured)}{unit}"
    return {"name": name, "goal": goal, "measured": shown, "value": measured, "met": met}


def evaluate_targets(doc: Doc) -> list[Record]:
    """The targets of BENCH.md, each with its measured ratio and whether it is met.

    ``met`` is ``None`` when the figure could not be measured in this run.
    """
    p = "proxy"
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
        {
            "name": "opaque TCP bulk over mTLS",
            "goal": ">= 250 MB/s",
            "measured": NOT_MEASURABLE + " (needs identity/mTLS)",
            "value": None,
            "met": None,
        },
        _target(
            "HTTP/1 small, c16",
            ">= 0.5x nginx reverse proxy",
            _vs(doc, "h1_small_c16", "rps", "nginx"),
            0.5,
            at_least=True,
            unit="x",
        ),
        _target(
            "HTTP/1 c1: p50 added over direct",
            "<= 3x what nginx adds",
            ratio(added_proxy, added_nginx),
            3.0,
            at_least=False,
            unit="x",
        ),
        _target(
            "HTTP/1 c1: p99",
            "<= 2x nginx's p99",
            _vs(doc, "h1_small_c1", "p99_ms", "nginx"),
            2.0,
            at_least=False,
            unit="x",
        ),
        _target(
            "HTTP/1 64 KiB, c16",
            ">= 0.6x nginx reverse proxy",
            _vs(doc, "h1_64k_c16", "rps", "nginx"),
            0.6,
            at_least=True,
            unit="x",
        ),
        _target(
            "HTTP/2 h2c c16 m10",
            ">= 0.25x nginx h2c proxy",
            _vs(doc, "h2_small_m10", "rps", "nginx"),
            0.25,
            at_least=True,
            unit="x",
        ),
        {
            "name": "gRPC unary through two proxies (mTLS)",
            "goal": "reported, with the same through nginx",
            "measured": NOT_MEASURABLE + " (needs identity/mTLS)",
            "value": None,
            "met": None,
        },
        _target(
            "idle RSS, all features loaded",
            "<= 48 MiB",
            _memory(doc, p, "idle_rss_mib"),
            48.0,
            at_least=False,
            unit=" MiB",
        ),
        _target(
            "RSS added by 1,000 idle keep-alive connections",
            "<= 32 MiB",
            _memory(doc, p, "conns_rss_mib"),
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
        ),
    ]
    return targets


def _vs(doc: Doc, case_id: str, key: str, reference: str) -> float | None:
    return ratio(value(doc, case_id, "proxy", key), value(doc, case_id, reference, key))


def _sub(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


# ------------------------------------------------------------------ formatting


def fmt_num(x: float | None) -> str:
    """Thousands separators from 100 up, three significant digits below."""
    if x is None:
        return "-"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}"


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
    for system, label in SYSTEMS.items():
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
        for system, label in SYSTEMS.items()
    ]
    return _table(header, rows)


_REFERENCES = {"nginx": ("nginx", "nginx-stream"), "haproxy": ("haproxy", "haproxy-tcp")}


def ratio_rows(doc: Doc) -> list[Record]:
    """Each proxy system's figure in each case against direct, nginx and haproxy.

    The reference for HTTP cases is the HTTP mode (nginx reverse proxy, haproxy
    mode http); for the TCP bulk copy the stream modes. Latency ratios are of p50
    and p99 (lower is better); the others of req/s or MB/s (higher is better).
    """
    rows: list[Record] = []
    for case in CASES:
        keys = ["p50_ms", "p99_ms"] if case.connections == 1 and case.tool == "wrk" else []
        keys = keys or (["mb_s"] if case.tool == "bulk" else ["rps"])
        for system in ("proxy", "proxy-mesh"):
            if system not in case.systems:
                continue
            for key in keys:
                mine = value(doc, case.id, system, key)
                refs = {"direct": value(doc, case.id, "direct", key)}
                for name, (http_sys, tcp_sys) in _REFERENCES.items():
                    ref_sys = tcp_sys if case.tool == "bulk" else http_sys
                    refs[name] = value(doc, case.id, ref_sys, key)
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
    lines += ["", "## Ratios (same run)", ""]
    lines += _ratio_table(doc)
    lines += ["", "## Targets (BENCH.md)", ""]
    lines += _targets_table(doc)
    notes = doc.get("notes") or []
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"
