"""Developer tasks: ``nox -s tests``, ``nox -s lint``, ``nox -s bench``."""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["tests", "lint"]
nox.options.reuse_existing_virtualenvs = True

PY = "3.11"


@nox.session(python=PY)
def tests(session: nox.Session) -> None:
    """Run the test suite (system tests skip unless root and tools are present)."""
    session.install("-e", ".[test]")
    session.run("pytest", "-q", "-ra", *session.posargs)


@nox.session(python=PY)
def lint(session: nox.Session) -> None:
    """ruff, mypy --strict, and the generated API check."""
    session.install("-e", ".[dev]")
    session.run(
        "ruff", "check", "linkerd_proxy", "linkerd_proxy_bin", "tests", "scripts", "noxfile.py"
    )
    session.run(
        "ruff", "format", "--check", "linkerd_proxy", "linkerd_proxy_bin", "tests", "scripts"
    )
    session.run("mypy")
    # The committed linkerd_proxy/api must be what proto/ generates.
    session.run("python", "scripts/gen_api.py", "--check")


@nox.session(python=PY)
def bench(session: nox.Session) -> None:
    """Benchmarks vs direct, nginx, haproxy (needs root); ``-- --quick`` takes < 3 min."""
    if os.geteuid() != 0:
        session.error("the benchmark needs root (network namespaces, iptables, apt-get)")
    session.install("-e", ".")
    session.run("python", "-m", "bench.run", *session.posargs)
