"""Parsers for what the load tools and ``/proc`` print: the pure part of the benchmark.

The harness (``bench/run.py``) runs ``wrk``, ``h2load`` and ``bench/tools.py`` inside
the pod namespaces and hands their text output here; these functions turn it into
numbers. Nothing here does I/O, so the report can be tested without any of the tools.

Units: times in milliseconds, rates per second, sizes in bytes. ``wrk`` and
``h2load`` print sizes with binary prefixes (``KB`` = 1024 bytes), which is how they
are read here.
"""

from __future__ import annotations

import json
import re

import attrs

_SIZE_UNITS = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}
_TIME_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


class ParseError(ValueError):
    """The tool's output did not have the expected shape."""


@attrs.frozen
class LoadResult:
    """One run of a load generator.

    Attributes:
        requests: completed requests (for a bulk copy: 0).
        seconds: the measured duration.
        rps: requests per second.
        bytes_read: bytes the client received (response heads and bodies).
        p50_ms: median latency, when the tool reported it.
        p99_ms: 99th percentile latency, when the tool reported it.
        errors: failed requests: socket errors, non-2xx/3xx answers, timeouts.
    """

    requests: int
    seconds: float
    rps: float
    bytes_read: int
    p50_ms: float | None = None
    p99_ms: float | None = None
    errors: int = 0

    @property
    def mb_per_s(self) -> float:
        """Throughput in MB/s (10**6 bytes)."""
        return self.bytes_read / self.seconds / 1e6 if self.seconds > 0 else 0.0


def parse_size(text: str) -> int:
    """``"52.40MB"`` -> bytes (binary prefixes, as wrk and h2load print them)."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*([KMGT]?B)\s*", text)
    if not m:
        raise ParseError(f"not a size: {text!r}")
    return round(float(m.group(1)) * _SIZE_UNITS[m.group(2)])


def parse_duration_ms(text: str) -> float:
    """``"204.00us"`` / ``"1.20ms"`` / ``"2.00s"`` -> milliseconds."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*(us|ms|s|m|h)\s*", text)
    if not m:
        raise ParseError(f"not a duration: {text!r}")
    return float(m.group(1)) * _TIME_UNITS[m.group(2)]


def parse_wrk(output: str) -> LoadResult:
    """Read the summary ``wrk --latency`` prints.

    Raises:
        ParseError: if the request count or the rate is missing.
    """
    total = re.search(r"^\s*(\d+) requests in ([0-9.]+\w+), ([0-9.]+\w?B) read", output, re.M)
    rate = re.search(r"^Requests/sec:\s*([0-9.]+)", output, re.M)
    if not total or not rate:
        raise ParseError("wrk output has no summary")
    requests = int(total.group(1))
    seconds = parse_duration_ms(total.group(2)) / 1000.0
    errors = 0
    sock = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if sock:
        errors += sum(int(g) for g in sock.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non2xx:
        errors += int(non2xx.group(1))
    percentiles = {
        m.group(1): parse_duration_ms(m.group(2))
        for m in re.finditer(r"^\s*(50|99)(?:\.0+)?%\s+([0-9.]+\w+)\s*$", output, re.M)
    }
    return LoadResult(
        requests=requests,
        seconds=seconds,
        rps=float(rate.group(1)),
        bytes_read=parse_size(total.group(3)),
        p50_ms=percentiles.get("50"),
        p99_ms=percentiles.get("99"),
        errors=errors,
    )


def parse_h2load(output: str) -> LoadResult:
    """Read the summary ``h2load`` prints.

    Raises:
        ParseError: if the ``finished in`` or ``requests:`` line is missing.
    """
    fin = re.search(r"^finished in ([0-9.]+\w+), ([0-9.]+) req/s", output, re.M)
    req = re.search(
        r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
        r"(\d+) failed, (\d+) errored, (\d+) timeout",
        output,
        re.M,
    )
    if not fin or not req:
        raise ParseError("h2load output has no summary")
    succeeded = int(req.group(4))
    errors = int(req.group(5)) + int(req.group(6)) + int(req.group(7))
    status = re.search(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", output, re.M)
    if status:
        errors += int(status.group(3)) + int(status.group(4))
    traffic = re.search(r"^traffic: \S+ \((\d+)\) total", output, re.M)
    rps = float(fin.group(2))
    # "finished in" includes the warm-up; the rate and the counts do not.
    seconds = int(req.group(3)) / rps if rps > 0 else parse_duration_ms(fin.group(1)) / 1000.0
    return LoadResult(
        requests=succeeded,
        seconds=seconds,
        rps=rps,
        bytes_read=int(traffic.group(1)) if traffic else 0,
        errors=errors,
    )


def parse_bulk(output: str) -> LoadResult:
    """Read the JSON line ``bench/tools.py send`` prints (its last line).

    Raises:
        ParseError: if there is no such line.
    """
    lines = [line for line in output.splitlines() if line.strip()]
    try:
        doc = json.loads(lines[-1])
        nbytes, seconds = int(doc["bytes"]), float(doc["seconds"])
    except (IndexError, ValueError, KeyError, TypeError) as exc:
        raise ParseError(f"bulk sender printed no result: {output[-200:]!r}") from exc
    return LoadResult(requests=0, seconds=seconds, rps=0.0, bytes_read=nbytes)


def proc_cpu_ticks(stat: str) -> int:
    """utime + stime (clock ticks) from the text of ``/proc/<pid>/stat``.

    The command name (field 2) may hold spaces and parentheses, so fields are
    counted from the last ``)``.
    """
    rest = stat[stat.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state); utime and stime are fields 14 and 15.
    return int(rest[11]) + int(rest[12])


def proc_ppid(stat: str) -> int:
    """The parent pid (field 4) from the text of ``/proc/<pid>/stat``."""
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def proc_status_kib(status: str, field: str) -> int:
    """A ``kB`` field (``VmRSS``, ``VmHWM``) from ``/proc/<pid>/status``; 0 if absent."""
    m = re.search(rf"^{field}:\s*(\d+) kB", status, re.M)
    return int(m.group(1)) if m else 0
