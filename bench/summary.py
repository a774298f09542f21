"""Round records and their medians: the numbers of the benchmark document.

Pure code between the runner and the report: ``bench/cases.py`` turns each run
into a record with :func:`round_record`, ``bench/run.py`` folds the rounds of a
case into medians with :func:`summarize`, and ``bench/targets.py`` and
``bench/report.py`` read figures back with :func:`value`.

Document shape (the content of ``bench/results/latest.json``)::

    {"meta": {...},
     "cases": {case_id: {system: {"status", "detail", "rounds": [...], "median": {...}}}},
     "memory": {system: {"status", "detail", "idle_rss_mib", "conns_rss_mib", "conns"}},
     "peak_rss_mib": {system: float},
     "targets": [...], "notes": [...]}
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from bench.catalog import Case
from bench.parse import LoadResult

Doc = dict[str, Any]
Record = dict[str, Any]

OK = "ok"
NOT_SUPPORTED = "not supported yet"


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


def memory_value(doc: Doc, system: str, key: str) -> float | None:
    entry = doc.get("memory", {}).get(system)
    if not entry or entry.get("status") != OK:
        return None
    got = entry.get(key)
    return float(got) if got is not None else None


def fmt_num(x: float | None) -> str:
    """Thousands separators from 100 up, three significant digits below."""
    if x is None:
        return "-"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}"
