"""CPU time and memory of the processes under test, read from ``/proc``.

Used by the runner around every round: the CPU a system spent is the change in
utime + stime of its process and all its descendants, and its memory is the sum of
their ``VmRSS`` (now) or ``VmHWM`` (peak). Parsing is in ``bench/parse.py``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from bench.parse import proc_cpu_ticks, proc_ppid, proc_status_kib

_TICKS = os.sysconf("SC_CLK_TCK")


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:  # the process exited meanwhile
        return None


def with_descendants(roots: Iterable[int]) -> list[int]:
    """``roots`` and every live process below them."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _read(f"/proc/{entry}/stat")
        if stat:
            children.setdefault(proc_ppid(stat), []).append(int(entry))
    found: list[int] = []
    todo = list(roots)
    while todo:
        pid = todo.pop()
        if pid in found:
            continue
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def cpu_seconds(roots: Iterable[int]) -> float:
    """User + system CPU seconds used so far by the processes and their descendants."""
    ticks = 0
    for pid in with_descendants(roots):
        stat = _read(f"/proc/{pid}/stat")
        if stat:
            ticks += proc_cpu_ticks(stat)
    return ticks / _TICKS


def memory_mib(roots: Iterable[int], field: str = "VmRSS") -> float:
    """The sum of a ``/proc/<pid>/status`` field (``VmRSS``, ``VmHWM``) in MiB."""
    kib = 0
    for pid in with_descendants(roots):
        status = _read(f"/proc/{pid}/status")
        if status:
            kib += proc_status_kib(status, field)
    return kib / 1024
