"""The benchmark's entry point: ``python -m bench.run [--quick]`` (``nox -s bench``).

Top of the benchmark: checks it runs as root, installs the tools it needs through
apt-get when missing, opens the pods and systems (``bench/systems.py``), measures
memory, runs every case in rounds that alternate the systems (``bench/cases.py``),
and writes ``bench/results/latest.json`` and ``latest.md`` (``bench/report.py``),
printing the table. The whole run is bounded by ``--time-limit``; on a timeout,
Ctrl-C or SIGTERM every process is stopped and both namespaces removed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from bench import configs, procstat
from bench.cases import Settings, measure_memory, run_round
from bench.catalog import CASES, MEMORY_SYSTEMS, PROXY_SYSTEMS, SYSTEMS
from bench.report import render_markdown
from bench.summary import Doc, Record, summarize
from bench.systems import SystemUnavailable, World, open_world
from bench.targets import evaluate_targets
from linkerd_proxy.testing.netns import NetNsUnavailable

RESULTS = Path(__file__).with_name("results")

#: Debian packages that provide what is missing, by the test that shows it is missing.
PACKAGES: tuple[tuple[str, str], ...] = (
    ("nginx", "nginx"),
    (configs.STREAM_MODULE, "libnginx-mod-stream"),
    ("haproxy", "haproxy"),
    ("wrk", "wrk"),
    ("h2load", "nghttp2-client"),
    ("nghttp", "nghttp2-client"),
    ("curl", "curl"),
    ("iptables", "iptables"),
    ("ip", "iproute2"),
)


class TimeLimit(Exception):
    """The whole run took longer than ``--time-limit``."""


def _present(what: str) -> bool:
    return os.path.exists(what) if what.startswith("/") else shutil.which(what) is not None


def ensure_tools() -> None:
    """apt-get install what is missing; stop services the packages may have started."""
    missing = [pkg for what, pkg in PACKAGES if not _present(what)]
    if not missing:
        return
    print(f"installing {' '.join(missing)} (apt-get)", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, timeout=600, env=env,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    subprocess.run(["apt-get", "install", "-y", "-q", *missing], check=True, timeout=900,
                   env=env, stdout=subprocess.DEVNULL)  # fmt: skip
    # Our own instances run in our namespaces; the packaged services must not run.
    for service in ("nginx", "haproxy"):
        if service in missing and shutil.which("service"):
            subprocess.run(["service", service, "stop"], capture_output=True, timeout=60)


def _version(argv: list[str]) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "?"
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    return lines[0].strip() if lines else "?"


def _word(text: str, index: int) -> str:
    words = text.split()
    return words[index] if len(words) > index else "?"


def _meta(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    repo = Path(__file__).resolve().parents[1]
    rev = _version(["git", "-C", str(repo), "describe", "--always", "--dirty"])
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "mode": "quick" if args.quick else "full",
        "rounds": settings.rounds,
        "duration_s": settings.duration,
        "bulk_mib": settings.bulk_bytes >> 20,
        "idle_conns": settings.idle_conns,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "versions": {
            "nginx": _version(["nginx", "-v"]).rpartition("/")[2],
            "haproxy": _word(_version(["haproxy", "-v"]), 2),
            "wrk": _word(_version(["wrk", "-v"]), 1).rpartition("/")[2],
            "h2load": _version(["h2load", "--version"]).rpartition("/")[2],
            "python": platform.python_version(),
        },
        "proxy": f"linkerd-proxy (Python) at {rev}",
    }


def _order(systems: tuple[str, ...], round_no: int) -> tuple[str, ...]:
    """Alternate the order between rounds so that drift does not favour one system."""
    return systems if round_no % 2 == 0 else tuple(reversed(systems))


def _bench(args: argparse.Namespace, settings: Settings) -> Doc:
    cases = [c for c in CASES if not args.cases or c.id in args.cases]
    wanted = set(args.systems or SYSTEMS)
    if args.no_proxy:
        wanted -= set(PROXY_SYSTEMS)
    doc: Doc = {"meta": _meta(args, settings), "cases": {}, "memory": {}, "peak_rss_mib": {}}
    notes: list[str] = []
    with open_world(with_proxy=not args.no_proxy) as world:
        errors = (world.proxy_error, world.mtls_error, *world.start_errors.values())
        for error in dict.fromkeys(e for e in errors if e):  # once each, in order
            notes.append(error[:500])
            print(f"warning: {error[:2000]}", file=sys.stderr)
        for system in MEMORY_SYSTEMS:
            if system in wanted:
                doc["memory"][system] = measure_memory(world, system, settings)
                _progress(f"memory {system}", doc["memory"][system])
        for case in cases:
            systems = tuple(s for s in case.systems if s in wanted)
            rounds: dict[str, list[Record]] = {s: [] for s in systems}
            for r in range(settings.rounds):
                for system in _order(systems, r):
                    rec = run_round(world, case, system, settings)
                    rounds[system].append(rec)
                    _progress(f"{case.id} {system} round {r + 1}", rec)
            doc["cases"][case.id] = {
                s: {**summarize(rs, case), "rounds": rs} for s, rs in rounds.items()
            }
        world.set_mode("plain")
        doc["meta"]["proxy_http"] = speaks = proxy_speaks_http(world)
        if speaks is False:
            notes.append(
                "The proxy exported no request_total after the HTTP cases: it forwarded "
                "HTTP/1 and HTTP/2 as opaque TCP, so those rows measure its TCP path."
            )
        for system in SYSTEMS:
            if system != "direct" and system in wanted and world.available(system) is None:
                doc["peak_rss_mib"][system] = procstat.memory_mib(world.pids(system), "VmHWM")
    doc["targets"] = evaluate_targets(doc)
    doc["notes"] = [
        *notes,
        "CPU and RSS are of the proxy processes only (both proxies for the x2 and mTLS "
        "rows, not the fake control planes; both nginx for the nginx gRPC pair); "
        "MB/s counts 10^6 bytes of response (or copied) data per second.",
        "Every system is one process (nginx master_process off, haproxy nbthread 1).",
    ]
    return doc


def proxy_speaks_http(world: World) -> bool | None:
    """Whether the proxy handled HTTP (its metrics have ``request_total``); ``None``: unknown."""
    if not world.proxies or world.proxies[0].proc.poll() is not None:
        return None
    status, body = world.proxies[0].get("/metrics")
    return None if status != 200 else "request_total" in body


def _progress(what: str, rec: Record) -> None:
    status = rec.get("status")
    figures = ", ".join(
        f"{k}={rec[k]:.4g}"
        for k in ("rps", "mb_s", "p50_ms", "p99_ms", "cpu_s", "idle_rss_mib", "conns_rss_mib")
        if isinstance(rec.get(k), float | int)
    )
    print(f"  {what}: {status} {figures}", flush=True)


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise TimeLimit("the benchmark exceeded its time limit")


def _on_term(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def write_results(doc: Doc, out: Path) -> str:
    """Write ``latest.json`` and ``latest.md`` to ``out``; return the markdown."""
    out.mkdir(parents=True, exist_ok=True)
    text = render_markdown(doc)
    for name, content in (("latest.json", json.dumps(doc, indent=1) + "\n"), ("latest.md", text)):
        tmp = out / (name + ".tmp")
        tmp.write_text(content)
        tmp.replace(out / name)
    return text


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="1 round, 2 s runs (< 3 min)")
    parser.add_argument("--rounds", type=int, help="rounds per case (default 3; quick 1)")
    parser.add_argument("--duration", type=float, help="seconds per run (default 5; quick 2)")
    parser.add_argument("--bulk-mib", type=int, help="TCP bulk size (default 1024; quick 256)")
    parser.add_argument("--conns", type=int, default=1000, help="idle connections for memory")
    parser.add_argument("--cases", nargs="*", help="only these case ids")
    parser.add_argument("--systems", nargs="*", choices=list(SYSTEMS), help="only these")
    parser.add_argument("--no-proxy", action="store_true", help="skip our proxy's cases")
    parser.add_argument("--no-install", action="store_true", help="never run apt-get")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    parser.add_argument("--time-limit", type=int, help="seconds (default 2400; quick 170)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("bench: needs root (network namespaces, iptables, apt-get); run it as root, "
              "e.g. `sudo nox -s bench`", file=sys.stderr)  # fmt: skip
        return 2
    quick = args.quick
    settings = Settings(
        rounds=args.rounds or (1 if quick else 3),
        duration=args.duration or (2.0 if quick else 5.0),
        bulk_bytes=(args.bulk_mib or (256 if quick else 1024)) << 20,
        idle_conns=args.conns,
    )
    if not args.no_install:
        ensure_tools()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.signal(signal.SIGTERM, _on_term)
    signal.alarm(args.time_limit or (170 if quick else 2400))
    started = time.monotonic()
    try:
        doc = _bench(args, settings)
    except (SystemUnavailable, NetNsUnavailable) as exc:
        print(f"bench: cannot set up: {exc}", file=sys.stderr)
        return 1
    except TimeLimit as exc:
        print(f"bench: {exc}; everything stopped, no results written", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("bench: interrupted; everything stopped, no results written", file=sys.stderr)
        return 130
    finally:
        signal.alarm(0)
    doc["meta"]["elapsed_s"] = round(time.monotonic() - started, 1)
    print(write_results(doc, args.out))
    print(f"written to {args.out}/latest.json and latest.md "
          f"({doc['meta']['elapsed_s']} s)")  # fmt: skip
    broken = [
        f"{case_id}/{system}"
        for case_id, per_system in doc["cases"].items()
        for system, entry in per_system.items()
        if system not in PROXY_SYSTEMS and not str(entry["status"]).startswith("ok")
    ]
    if broken:
        print(f"bench: reference systems failed: {', '.join(broken)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
