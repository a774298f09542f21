"""Process and build metrics: ``process_*`` and ``proxy_build_info``.

The tail of the ``/metrics`` body (``expose.render`` prints it after the legacy
families): the process series Prometheus client libraries export, read from
``/proc`` at scrape time (``process_cpu_seconds_total``,
``process_open_fds``, ``process_max_fds``, ``process_virtual_memory_bytes``,
``process_resident_memory_bytes``, ``process_start_time_seconds``), plus
``process_threads`` (which the reference has) and
``proxy_build_info{date,git_sha,profile,vendor,version} 1`` (label order as the
reference encodes its ``BuildInfo`` struct). Rendered in the Prometheus text
format, values as Go prints floats. Own code rather than prometheus-client, whose
61 modules cost ~3 MiB resident for these eight series (docs/decisions.md).
Pure: no trio.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator
from pathlib import Path

import attrs

import linkerd_proxy

VENDOR = "linkerd-proxy-py"


@attrs.frozen
class BuildInfo:
    """What ``proxy_build_info`` reports."""

    date: str
    git_sha: str
    profile: str
    vendor: str
    version: str

    @classmethod
    def current(cls) -> BuildInfo:
        """This build: package version, best-effort git sha and date, ``release``.

        ``git_sha`` is read from the source checkout's ``.git`` when there is one
        (``"unknown"`` otherwise); ``date`` is the package's modification time
        (build or install time) in RFC 3339 UTC.
        """
        pkg = Path(linkerd_proxy.__file__).resolve().parent
        return cls(
            date=_package_date(pkg),
            git_sha=_git_sha(pkg.parent / ".git"),
            profile="release",
            vendor=VENDOR,
            version=linkerd_proxy.__version__,
        )


def _package_date(pkg: Path) -> str:
    try:
        mtime = (pkg / "__init__.py").stat().st_mtime
    except OSError:
        return "unknown"
    when = datetime.datetime.fromtimestamp(int(mtime), tz=datetime.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _git_sha(git_dir: Path) -> str:
    """Resolve ``HEAD`` without running git (loose ref, then packed-refs)."""
    try:
        head = (git_dir / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head if _is_sha(head) else "unknown"
        ref = head[5:]
        ref_file = git_dir / ref
        if ref_file.is_file():
            sha = ref_file.read_text().strip()
            return sha if _is_sha(sha) else "unknown"
        packed = git_dir / "packed-refs"
        if packed.is_file():
            for line in packed.read_text().splitlines():
                sha, _, name = line.partition(" ")
                if name == ref and _is_sha(sha):
                    return sha
    except OSError:
        pass
    return "unknown"


def _is_sha(text: str) -> bool:
    return len(text) in (40, 64) and all(c in "0123456789abcdef" for c in text)


# ------------------------------------------------------------------ rendering


def go_float(value: float) -> str:
    """A sample value as Go's ``strconv.FormatFloat(v, 'g', -1, 64)`` prints it,
    the way Prometheus client libraries write the text format (``6.0``,
    ``3.203072e+07``, ``+Inf``)."""
    value = float(value)
    if value == float("inf"):
        return "+Inf"
    if value == float("-inf"):
        return "-Inf"
    if value != value:
        return "NaN"
    text = repr(value)
    dot = text.find(".")
    # Go switches to an exponent from 1e21 on; repr from 1e16: shorten to the
    # exponent form once there are more than 6 digits before the point.
    if value > 0 and dot > 6:
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return text


def _label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _family(name: str, kind: str, help_text: str, sample: str) -> str:
    return f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n{sample}\n"


@attrs.frozen
class _Stat:
    """What one scrape reads from ``/proc/<pid>/stat``."""

    vsize: float
    rss_pages: float
    start_ticks: float
    utime_ticks: float
    stime_ticks: float


def _read_stat(path: Path) -> _Stat:
    # The command name (field 2) may hold spaces and parentheses: split after the
    # last ")"; what follows starts at field 3 (state).
    fields = path.read_bytes().rsplit(b")", 1)[-1].split()
    return _Stat(
        vsize=float(fields[20]),
        rss_pages=float(fields[21]),
        start_ticks=float(fields[19]),
        utime_ticks=float(fields[11]),
        stime_ticks=float(fields[12]),
    )


def _boot_time(proc: Path) -> float:
    """``btime`` of ``/proc/stat`` (0 if absent or unreadable)."""
    try:
        with open(proc / "stat", "rb") as f:
            for line in f:
                if line.startswith(b"btime "):
                    return float(line.split()[1])
    except OSError:
        pass
    return 0.0


def _max_fds(limits: Path) -> float | None:
    with open(limits, "rb") as f:
        for line in f:
            if line.startswith(b"Max open file"):
                return float(line.split()[3])
    return None


class ProcessMetrics:
    """``process_*`` of this process and ``proxy_build_info``, read per scrape.

    Args:
        build: what ``proxy_build_info`` says (default: :meth:`BuildInfo.current`).
        proc: where procfs is mounted.
        pid: the process to describe (``"self"``).

    Without ``/proc`` (``btime`` unreadable) only ``proxy_build_info`` is rendered;
    a file that cannot be read leaves out the series read from it.
    """

    def __init__(
        self, build: BuildInfo | None = None, *, proc: Path = Path("/proc"), pid: str = "self"
    ) -> None:
        info = build or BuildInfo.current()
        labels = ",".join(
            f'{k}="{_label_value(v)}"'
            for k, v in (
                ("date", info.date),
                ("git_sha", info.git_sha),
                ("profile", info.profile),
                ("vendor", info.vendor),
                ("version", info.version),
            )
        )
        self._build_info = _family(
            "proxy_build_info", "gauge", "Proxy build info", f"proxy_build_info{{{labels}}} 1.0"
        )
        self._proc = proc
        self._dir = proc / pid
        self._ticks = float(os.sysconf("SC_CLK_TCK"))
        self._page_size = float(os.sysconf("SC_PAGE_SIZE"))
        self._btime = _boot_time(proc)

    def render(self) -> str:
        """The families in the text format, each with its HELP and TYPE."""
        return "".join(self._families()) + self._threads() + self._build_info

    def _threads(self) -> str:
        try:
            threads = len(os.listdir(self._dir / "task"))
        except OSError:
            return ""
        return _gauge("process_threads", "Number of OS threads in the process.", threads)

    def _families(self) -> Iterator[str]:
        if not self._btime:
            return
        try:
            stat = _read_stat(self._dir / "stat")
        except OSError:
            pass
        else:
            cpu = stat.utime_ticks / self._ticks + stat.stime_ticks / self._ticks
            yield from (
                _gauge("process_virtual_memory_bytes", "Virtual memory size in bytes.", stat.vsize),
                _gauge(
                    "process_resident_memory_bytes",
                    "Resident memory size in bytes.",
                    stat.rss_pages * self._page_size,
                ),
                _gauge(
                    "process_start_time_seconds",
                    "Start time of the process since unix epoch in seconds.",
                    stat.start_ticks / self._ticks + self._btime,
                ),
                _family(
                    "process_cpu_seconds_total",
                    "counter",
                    "Total user and system CPU time spent in seconds.",
                    f"process_cpu_seconds_total {go_float(cpu)}",
                ),
            )
        try:
            max_fds = _max_fds(self._dir / "limits")
            open_fds = len(os.listdir(self._dir / "fd"))
        except OSError:
            pass
        else:
            yield _gauge("process_open_fds", "Number of open file descriptors.", open_fds)
            if max_fds is not None:
                yield _gauge("process_max_fds", "Maximum number of open file descriptors.", max_fds)


def _gauge(name: str, help_text: str, value: float) -> str:
    return _family(name, "gauge", help_text, f"{name} {go_float(value)}")
