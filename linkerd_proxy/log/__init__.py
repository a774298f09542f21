"""Process logging: the ``LINKERD2_PROXY_LOG`` filter and the stdout log formats.

A leaf of the tree used by the binary (setup at startup) and the admin server
(``/proxy-log-level``). ``filter`` is pure: EnvFilter syntax and matching.
``setup`` installs it on Python ``logging`` with the plain or JSON line format and
hands back a :class:`LogLevelHandle` for runtime changes.

Library code logs with ``logging.getLogger(__name__)``; its records are filtered by
target ``linkerd_proxy::<module path>``, so the default ``linkerd=info`` covers it.
Key/value context goes in ``extra=``: ``log.info("accepted", extra={"peer": addr})``.
"""

from .filter import (
    ACCESS_LOG_TARGET,
    DEFAULT_FILTER,
    TRACE,
    Directive,
    LogFilter,
    parse_filter,
    parse_filter_lossy,
)
from .setup import LogFormat, LogLevelHandle, parse_log_format, setup_logging, teardown_logging

__all__ = [
    "ACCESS_LOG_TARGET",
    "DEFAULT_FILTER",
    "TRACE",
    "Directive",
    "LogFilter",
    "LogFormat",
    "LogLevelHandle",
    "parse_filter",
    "parse_filter_lossy",
    "parse_log_format",
    "setup_logging",
    "teardown_logging",
]
