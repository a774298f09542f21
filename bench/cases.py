"""Running one round of one case against one system, and the memory measurement.

The middle of the benchmark: ``bench/run.py`` decides the order (rounds alternate
systems), this module switches the iptables mode, runs the load tool inside pod A
with a hard time limit, charges the CPU the system's processes used, and returns a
record from ``bench/report.py``. A failing round never raises: it is recorded, and
for our proxy an HTTP/2 failure is recorded as "not supported yet". A gRPC round
starts with one call checked for ``grpc-status: 0``; a ``proxy-mtls`` round is
rejected unless pod B's proxy counted its traffic as mTLS (``bench/verify.py``).
"""

from __future__ import annotations

import select
import subprocess
import time

import attrs

from bench import configs, mesh, procstat
from bench.catalog import MTLS_SYSTEMS, PROXY_SYSTEMS, Case
from bench.parse import LoadResult, ParseError, parse_bulk, parse_h2load, parse_wrk
from bench.summary import NOT_SUPPORTED, OK, Record, round_record
from bench.systems import Kind, World, mode_of, tool_command
from bench.verify import grpc_reply_problem, mtls_problem


@attrs.frozen
class Settings:
    """How long and how much: full run or ``--quick``.

    Attributes:
        rounds: rounds per case (systems alternate within each round).
        duration: seconds per wrk/h2load run.
        bulk_bytes: bytes copied by the TCP bulk case.
        idle_conns: connections held open by the memory measurement.
    """

    rounds: int = 3
    duration: float = 5.0
    bulk_bytes: int = 1 << 30
    idle_conns: int = 1000


def _kind(case: Case) -> Kind:
    if case.tool == "wrk":
        return "h1"
    if case.tool == "h2load":
        return "grpc" if case.grpc else "h2"
    return "bulk"


def grpc_post_args(request_file: str) -> list[str]:
    """h2load's and nghttp's arguments to POST one gRPC frame from ``request_file``."""
    return ["-d", request_file, "-H", "content-type: application/grpc", "-H", "te: trailers"]


def load_command(
    case: Case, target: str, settings: Settings, grpc_request: str = ""
) -> tuple[list[str], float]:
    """The load generator's argv for ``case`` against ``target``, and its time limit.

    ``grpc_request`` is the file a gRPC case POSTs (one gRPC frame).
    """
    secs = max(1, round(settings.duration))
    if case.tool == "wrk":
        argv = ["wrk", "-t1", f"-c{case.connections}", f"-d{secs}s", "--latency",
                "--timeout", "5s", f"http://{target}{case.path}"]  # fmt: skip
        return argv, secs + 20
    if case.tool == "h2load":
        argv = ["h2load", "-t1", f"-c{case.connections}", f"-m{case.streams}",
                f"--duration={secs}", "--warm-up-time=500ms",
                "--connection-inactivity-timeout=5", f"http://{target}{case.path}"]  # fmt: skip
        if case.grpc:
            argv[-1:-1] = grpc_post_args(grpc_request)
        return argv, secs + 20
    # At least 50 MB/s, or it counts as failed.
    limit = settings.bulk_bytes / 50e6 + 10
    argv = tool_command("send", "--addr", target, "--bytes", str(settings.bulk_bytes),
                        "--timeout", str(limit))  # fmt: skip
    return argv, limit + 10


def _parse(case: Case, output: str) -> LoadResult:
    if case.tool == "wrk":
        return parse_wrk(output)
    if case.tool == "h2load":
        return parse_h2load(output)
    return parse_bulk(output)


def check_result(case: Case, result: LoadResult, settings: Settings) -> str | None:
    """Why a parsed result does not count, or ``None`` if it does."""
    if case.tool == "bulk":
        if result.bytes_read != settings.bulk_bytes:
            return f"copied {result.bytes_read} of {settings.bulk_bytes} bytes"
        return None
    if result.requests == 0:
        return "no request completed"
    if result.errors > max(10, result.requests // 1000):
        return f"{result.errors} errors in {result.requests} requests"
    return None


def _failure(case: Case, system: str, detail: str, status: str = "") -> Record:
    if not status:
        status = NOT_SUPPORTED if system in PROXY_SYSTEMS and case.is_http2 else "failed"
    return round_record(None, status=status, detail=detail[-2000:])


def grpc_call_problem(world: World, target: str, path: str) -> str | None:
    """Make one gRPC call from pod A (``nghttp -v``, h2c prior knowledge); why it did
    not succeed (status 200, the frame, then a ``grpc-status: 0`` trailer), or ``None``."""
    argv = ["nghttp", "-v", "-t", "5", *grpc_post_args(world.grpc_request),
            f"http://{target}{path}"]  # fmt: skip
    try:
        proc = subprocess.run(world.a.command(argv), capture_output=True, timeout=15)
    except subprocess.TimeoutExpired:
        return "nghttp did not finish within 15s"
    if proc.returncode != 0:
        out = (proc.stdout + proc.stderr)[-800:].decode(errors="replace")
        return f"nghttp exit {proc.returncode}: {out}"
    return grpc_reply_problem(proc.stdout, configs.GRPC_FRAME)


def _pod_b_metrics(world: World) -> str:
    status, body = world.mtls_proxies[1].get("/metrics")
    return body if status == 200 else ""


def run_round(world: World, case: Case, system: str, settings: Settings) -> Record:
    """One run of ``case`` against ``system``; never raises for a failed run."""
    why = world.available(system)
    if why is not None:
        label = "not runnable" if system in PROXY_SYSTEMS else "failed"
        return round_record(None, status=label, detail=why)
    world.set_mode(mode_of(system))
    target = world.target(system, _kind(case))
    if case.grpc:
        problem = grpc_call_problem(world, target, case.path)
        if problem is not None:
            return _failure(case, system, f"a gRPC call failed: {problem}")
    argv, limit = load_command(case, target, settings, world.grpc_request)
    mtls = system == "proxy-mtls"
    metrics_before = _pod_b_metrics(world) if mtls else ""
    pids = world.pids(system)
    before = [procstat.cpu_seconds([pid]) for pid in pids]
    try:
        proc = world.a.run(argv, timeout=limit, check=False)
    except subprocess.TimeoutExpired:
        return _failure(case, system, f"{argv[0]} did not finish within {limit:.0f}s")
    used = [procstat.cpu_seconds([pid]) - b for pid, b in zip(pids, before, strict=True)]
    cpu = sum(used) if pids else None
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        return _failure(case, system, f"exit {proc.returncode}: {output[-1500:]}")
    try:
        result = _parse(case, proc.stdout)
    except ParseError as exc:
        return _failure(case, system, f"{exc}: {output[-1500:]}")
    problem = check_result(case, result, settings)
    if problem is None and system in PROXY_SYSTEMS and min(used, default=0.0) <= 0:
        # A proxy that used no CPU was bypassed (e.g. iptables rules not in force).
        problem = "a proxy used no CPU: traffic did not pass through it"
    if problem is None and mtls:
        problem = mtls_problem(
            metrics_before,
            _pod_b_metrics(world),
            client_id=mesh.A_ID,
            min_conns=1 if case.tool == "bulk" else 0,
            min_requests=result.requests,
        )
        if problem is not None:
            return _failure(case, system, f"not mTLS: {problem}", status="not mTLS")
    if problem is not None:
        return _failure(case, system, f"{problem}: {output[-1000:]}")
    return round_record(result, cpu_s=cpu, status=OK)


def _read_line(proc: subprocess.Popen[bytes], timeout: float) -> bytes:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline() if ready else b""


def measure_memory(world: World, system: str, settings: Settings) -> Record:
    """Idle RSS after a short warm-up, and the RSS added by idle keep-alive connections.

    Returns:
        ``{"status", "detail", "idle_rss_mib", "conns_rss_mib", "conns"}``.
    """
    why = world.available(system)
    if why is not None:
        return {"status": "not runnable", "detail": why}
    world.set_mode(mode_of(system))
    if system in MTLS_SYSTEMS:
        return _meshed_memory(world, system)
    target = world.target(system, "h1")
    pids = world.pids(system)
    warm = world.a.run(["wrk", "-t1", "-c4", "-d1s", f"http://{target}/ok"], timeout=20,
                       check=False)  # fmt: skip
    if warm.returncode != 0:
        return {"status": "failed", "detail": f"warm-up failed: {warm.stderr[-1000:]}"}
    time.sleep(1.0)  # let the warm-up's connections close
    idle = procstat.memory_mib(pids)
    n = settings.idle_conns
    hold = world.a.popen(tool_command("hold", "--addr", target, "--count", str(n),
                                      "--timeout", "90"), stdin=subprocess.PIPE)  # fmt: skip
    try:
        line = _read_line(hold, 60.0)
        if b"held" not in line:
            hold.kill()
            _, err = hold.communicate(timeout=10)
            return {"status": "failed", "detail": f"holding {n} connections: {err[-1000:]!r}"}
        time.sleep(1.0)
        loaded = procstat.memory_mib(pids)
    finally:
        if hold.poll() is None:
            assert hold.stdin is not None
            hold.stdin.close()
            try:
                hold.wait(15)
            except subprocess.TimeoutExpired:
                hold.kill()
                hold.wait(5)
    return {
        "status": OK,
        "detail": "",
        "idle_rss_mib": idle,
        "conns_rss_mib": loaded - idle,
        "conns": n,
    }


def _meshed_memory(world: World, system: str) -> Record:
    # A meshed pair carries gRPC only (no plain HTTP/1 to hold connections with):
    # warm up with a short gRPC load, then the idle RSS per proxy (the mean of
    # the two: both run identity, discovery and mTLS, i.e. every feature loaded).
    target = world.target(system, "grpc")
    warm = world.a.run(
        ["h2load", "-c4", "-m1", "-D", "1", *grpc_post_args(world.grpc_request),
         f"http://{target}{configs.GRPC_PATH}"],
        timeout=30, check=False,
    )  # fmt: skip
    if warm.returncode != 0:
        return {"status": "failed", "detail": f"warm-up failed: {warm.stdout[-1000:]}"}
    time.sleep(1.0)
    pids = world.pids(system)
    idle = procstat.memory_mib(pids) / max(1, len(pids))
    return {"status": OK, "detail": "per proxy", "idle_rss_mib": idle, "conns_rss_mib": None}
