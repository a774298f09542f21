"""Profile the proxy under one benchmark load: the evidence behind docs/performance.md.

``python -m bench.profile --case h1 --tool pyspy`` (root, like the benchmark) builds
the benchmark's world (``bench.systems.open_world``: pods, backend, proxies), runs
one load against our proxy and records, for the proxy process:

- ``pyspy``: a ``py-spy record`` raw profile (``pip install py-spy``), summarized
  by self time per file and per line;
- ``cprofile``: ``cProfile`` call counts and times per request, by module and by
  function; the proxy is started with ``bench/profiling`` on ``PYTHONPATH``, whose
  ``sitecustomize`` switches the profiler on and off inside the proxy on
  ``SIGUSR1``/``SIGUSR2``, sent around the load (nothing of it is on the proxy's
  default path);
- ``perf-trace``: ``perf trace -s`` system call counts and times (``linux-perf``).

Cases: ``h1`` (wrk -c16 /ok), ``h1c1`` (wrk -c1), ``h164k`` (wrk -c16 /64k), ``h2``
(h2load -c16 -m10), ``h2m1``. Every run is bounded in time; the world is torn down
on the way out, whatever happened.
"""

from __future__ import annotations

import argparse
import collections
import os
import pstats
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.systems import open_world

_LOADS = {
    "h1": (["wrk", "-t1", "-c16", "-d{d}s", "http://{t}/ok"], "h1"),
    "h1c1": (["wrk", "-t1", "-c1", "-d{d}s", "--latency", "http://{t}/ok"], "h1"),
    "h164k": (["wrk", "-t1", "-c16", "-d{d}s", "http://{t}/64k"], "h1"),
    "h2": (["h2load", "-t1", "-c16", "-m10", "--duration={d}", "http://{t}/ok"], "h2"),
    "h2m1": (["h2load", "-t1", "-c16", "-m1", "--duration={d}", "http://{t}/ok"], "h2"),
}
_SITE = str(Path(__file__).with_name("profiling"))


def _summarize_pyspy(path: str, top: int) -> str:
    by_file: collections.Counter[str] = collections.Counter()
    by_line: collections.Counter[str] = collections.Counter()
    total = 0
    for line in Path(path).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        leaf = re.sub(r"\(/.*?/(site-packages|lib/python3\.\d+|main)/", "(", stack.split(";")[-1])
        by_line[leaf] += n
        match = re.search(r"\((.*?):\d+\)", leaf)
        by_file[match.group(1) if match else leaf] += n
    out = [f"{total} samples", "self time by file:"]
    out += [f"  {100 * n / total:5.1f}% {name}" for name, n in by_file.most_common(top)]
    out += ["self time by line:"]
    out += [f"  {100 * n / total:5.1f}% {name}" for name, n in by_line.most_common(top)]
    return "\n".join(out)


def _summarize_cprofile(path: str, requests: int, top: int) -> str:
    stats = pstats.Stats(path)
    by_module: collections.Counter[str] = collections.Counter()
    calls: collections.Counter[str] = collections.Counter()
    rows = []
    for (filename, lineno, name), (_cc, nc, tt, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        module = re.sub(r".*/(site-packages|lib/python3\.\d+|main)/", "", filename)
        by_module[module] += tt
        calls[module] += nc
        rows.append((tt, nc, f"{module}:{lineno} {name}"))
    n = max(1, requests)
    out = [f"{sum(calls.values()) / n:.0f} calls per request ({requests} requests)"]
    out += ["self time per request by module (cProfile-inflated):"]
    out += [
        f"  {t / n * 1e6:7.2f} us {calls[m] / n:6.1f} calls  {m}"
        for m, t in by_module.most_common(top)
    ]
    out += ["functions:"]
    rows.sort(reverse=True)
    out += [f"  {tt / n * 1e6:7.2f} us {nc / n:6.2f}/req  {name}" for tt, nc, name in rows[:top]]
    return "\n".join(out)


def _requests(output: str) -> int:
    for pattern in (r"(\d+) requests in", r"requests: (\d+) total"):
        match = re.search(pattern, output)
        if match:
            return int(match.group(1))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=sorted(_LOADS), default="h1")
    parser.add_argument("--tool", choices=["pyspy", "cprofile", "perf-trace"], default="pyspy")
    parser.add_argument("--system", choices=["proxy", "proxy-mesh"], default="proxy")
    parser.add_argument("--duration", type=int, default=6, help="seconds of load")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", default="", help="keep the raw profile here")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces, iptables)", file=sys.stderr)
        return 2
    if args.tool == "pyspy" and not shutil.which("py-spy"):
        print("py-spy not found: pip install py-spy", file=sys.stderr)
        return 2
    scratch = tempfile.mkdtemp(prefix="lp-profile-")
    os.chmod(scratch, 0o777)  # the proxy (uid 2102) writes the cProfile dump here
    raw = os.path.join(scratch, "profile.out")
    # cprofile: SIGUSR1 / SIGUSR2 around the load switch the profiler (bench/profiling).
    env = {"PYTHONPATH": _SITE, "LP_CPROFILE": raw} if args.tool == "cprofile" else None
    with open_world(proxy_env=env) as world:
        world.set_mode("outbound" if args.system == "proxy" else "mesh")
        template, kind = _LOADS[args.case]
        target = world.target(args.system, kind)  # type: ignore[arg-type]
        load = [part.format(d=args.duration, t=target) for part in template]
        pid = world.pids(args.system)[0]
        spy = None
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        secs = str(args.duration)
        if args.tool == "pyspy":
            argv = ["py-spy", "record", "-p", str(pid), "-d", secs, "-r", "250", "-f", "raw"]
            spy = subprocess.Popen([*argv, "-o", raw], **quiet)  # type: ignore[call-overload]
        elif args.tool == "perf-trace":
            argv = ["timeout", str(args.duration + 5), "perf", "trace", "-s", "-o", raw]
            argv += ["-p", str(pid), "--", "sleep", str(args.duration - 1)]
            spy = subprocess.Popen(argv, **quiet)  # type: ignore[call-overload]
        if args.tool == "cprofile":
            os.kill(pid, signal.SIGUSR1)
        time.sleep(0.3)
        result = world.a.run(load, timeout=args.duration + 30, check=False)
        if spy is not None:
            spy.wait(timeout=30)
        else:
            os.kill(pid, signal.SIGUSR2)
            for _ in range(50):  # written at the proxy loop's next wait
                if os.path.exists(raw):
                    break
                time.sleep(0.1)
        print(result.stdout[-600:])
        if args.tool == "pyspy":
            print(_summarize_pyspy(raw, args.top))
        elif args.tool == "cprofile":
            print(_summarize_cprofile(raw, _requests(result.stdout), args.top))
        else:
            print(Path(raw).read_text()[-3000:])
    if args.out:
        shutil.copy(raw, args.out)
    shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
