"""Benchmarks: this proxy against direct connections, nginx and haproxy (BENCH.md).

Run with ``nox -s bench`` (or ``python -m bench.run``, as root); see
``docs/performance.md``. Not part of the library or of CI.
"""
