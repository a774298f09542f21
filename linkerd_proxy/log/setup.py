"""Install the proxy's log filter and line formats on Python ``logging``.

The I/O half of ``linkerd_proxy.log`` (``filter.py`` is the pure half). The binary
calls :func:`setup_logging` once with ``LINKERD2_PROXY_LOG`` and
``LINKERD2_PROXY_LOG_FORMAT``; the admin server keeps the returned
:class:`LogLevelHandle` to serve ``GET``/``PUT /proxy-log-level``.

What gets installed on the root logger:

- one ``StreamHandler`` (stdout by default) with a plain or JSON formatter;
- on it, a ``logging.Filter`` that asks the current :class:`LogFilter`, caching the
  answer per (logger name, level) and starting a fresh cache on every change;
- logger levels, so disabled records are dropped by ``Logger.isEnabledFor`` before
  a ``LogRecord`` is even built: the root logger gets the most verbose level any
  directive enables, every existing logger the most verbose level its subtree may
  need (so loggers created later inherit a level that loses nothing), and a logger
  seen for the first time is narrowed to that same level. Levels set by others on
  existing loggers are overwritten; :func:`teardown_logging` restores them.

Formats, after the reference's ``tracing-subscriber`` output:

- plain: ``[     0.012345s]  INFO ThreadId(01) linkerd_proxy::app: message k=v``:
  uptime since setup (or ``start_time``), the level right-aligned to 5, a small
  per-thread number (the main thread is 01), the logger name as a Rust target,
  the message, then the record's ``extra`` items as ``key=value`` (``str()`` of
  the value, unquoted). An exception's traceback follows on the next lines.
- json: one compact object per line, keys in this order: ``timestamp`` (UTC,
  ``2024-01-02T03:04:05.123456Z``), ``level``, ``fields`` (``message`` then the
  ``extra`` items; str, int, bool, None and finite floats are kept, anything else
  becomes its ``str()``; a traceback goes in ``exception``), ``target``,
  ``threadId`` (``"ThreadId(1)"``). There is no ``spans`` key: Python records run
  outside spans, and the reference writes it only inside one.
"""

from __future__ import annotations

import datetime
import itertools
import json
import logging
import math
import sys
import threading
import time
from typing import Final, Literal, TextIO

from .filter import TRACE, LogFilter, level_name, parse_filter, parse_filter_lossy, to_target

__all__ = [
    "JsonFormatter",
    "LogFormat",
    "LogLevelHandle",
    "PlainFormatter",
    "parse_log_format",
    "setup_logging",
    "teardown_logging",
]

LogFormat = Literal["plain", "json"]

# Python logging has no trace level; name ours so %(levelname)s elsewhere reads well.
logging.addLevelName(TRACE, "TRACE")

_log = logging.getLogger(__name__)

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD_ATTRS: Final = frozenset(
    {*logging.makeLogRecord({}).__dict__, "message", "asctime", "taskName"}
)
# Bounds the decision cache if a program logs under ever-new logger names.
_CACHE_LIMIT: Final = 4096


def parse_log_format(text: str) -> LogFormat:
    """Read ``LINKERD2_PROXY_LOG_FORMAT`` as the reference does.

    ``json`` in any case, with surrounding whitespace, selects JSON; any other
    value (the default is ``PLAIN``) selects plain text.
    """
    return "json" if text.strip().lower() == "json" else "plain"


def _record_extras(record: logging.LogRecord) -> dict[str, object]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS}


def _python_level(threshold: int) -> int:
    # A trace threshold admits every numbered record (level_bucket counts 1..9 as
    # trace); level 0 would mean "inherit" to logging, hence 1.
    return 1 if threshold <= TRACE else threshold


class _ThreadIds:
    """Small sequential thread numbers, like Rust's ``ThreadId``: main is 1."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids: dict[int | None, int] = {threading.main_thread().ident: 1}
        self._next = itertools.count(2)

    def get(self, ident: int | None) -> int:
        number = self._ids.get(ident)
        if number is None:
            with self._lock:
                number = self._ids.setdefault(ident, next(self._next))
        return number


class PlainFormatter(logging.Formatter):
    """The plain line format (see the module docstring).

    Args:
      start_time: the ``time.monotonic()`` value uptime counts from.
    """

    def __init__(self, start_time: float) -> None:
        super().__init__()
        self._start = start_time
        self._threads = _ThreadIds()

    def format(self, record: logging.LogRecord) -> str:
        micros = int(max(0.0, time.monotonic() - self._start) * 1_000_000)
        secs, sub = divmod(micros, 1_000_000)
        thread = self._threads.get(record.thread)
        parts = [
            f"[{secs:>6}.{sub:06}s] {level_name(record.levelno):>5} ThreadId({thread:02})"
            f" {to_target(record.name)}: {record.getMessage()}"
        ]
        parts.extend(f"{key}={value}" for key, value in _record_extras(record).items())
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


def _json_value(value: object) -> object:
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        # serde_json writes a non-finite float as null; json.dumps would write NaN.
        return value if math.isfinite(value) else None
    return str(value)


class JsonFormatter(logging.Formatter):
    """The JSON line format (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self._threads = _ThreadIds()

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC)
        fields: dict[str, object] = {"message": record.getMessage()}
        for key, value in _record_extras(record).items():
            fields[key] = _json_value(value)
        if record.exc_info:
            fields["exception"] = self.formatException(record.exc_info)
        obj = {
            "timestamp": when.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "level": level_name(record.levelno),
            "fields": fields,
            "target": to_target(record.name),
            "threadId": f"ThreadId({self._threads.get(record.thread)})",
        }
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


class _State:
    """One filter and the decisions cached for it; replaced whole on change."""

    def __init__(self, log_filter: LogFilter) -> None:
        self.filter = log_filter
        self.cache: dict[tuple[str, int], bool | None] = {}
        self.leveled: set[str] = set()


class _Installation:
    """The handler, its filter state and the logger levels it manages."""

    def __init__(self, log_filter: LogFilter, handler: logging.Handler) -> None:
        self.handler = handler
        self.state = _State(log_filter)
        self.active = True
        self._lock = threading.Lock()
        self._original: dict[logging.Logger, int] = {}

    def _set_level(self, logger: logging.Logger, threshold: int) -> None:
        self._original.setdefault(logger, logger.level)
        level = _python_level(threshold)
        if logger.level != level:
            logger.setLevel(level)

    def replace(self, log_filter: LogFilter) -> None:
        """Swap in a new filter and re-level the root and every existing logger."""
        with self._lock:
            self.state = state = _State(log_filter)
            if not self.active:
                return
            self._set_level(logging.root, log_filter.max_verbosity())
            for name, logger in list(logging.root.manager.loggerDict.items()):
                if isinstance(logger, logging.Logger):
                    self._set_level(logger, log_filter.min_level(name))
                    state.leveled.add(name)

    def narrow(self, state: _State, name: str) -> None:
        """Set the level of logger ``name`` from ``state``, if still current."""
        with self._lock:
            if state is not self.state or not self.active or name in state.leveled:
                return
            state.leveled.add(name)
            logger = logging.root.manager.loggerDict.get(name)
            if isinstance(logger, logging.Logger):
                self._set_level(logger, state.filter.min_level(name))

    def restore(self) -> None:
        """Put back every logger level changed since installation."""
        with self._lock:
            self.active = False
            for logger, level in self._original.items():
                logger.setLevel(level)
            self._original.clear()

    def filter(self, record: logging.LogRecord) -> bool:
        state = self.state
        key = (record.name, record.levelno)
        try:
            decision = state.cache[key]
        except KeyError:
            decision = state.filter.decide(record.name, record.levelno)
            if len(state.cache) >= _CACHE_LIMIT:
                state.cache.clear()
            state.cache[key] = decision
            if record.name not in state.leveled:
                self.narrow(state, record.name)
        if decision is None:
            fields = {"message", *_record_extras(record)}
            return state.filter.enabled(record.name, record.levelno, fields)
        return decision


class _HandlerFilter(logging.Filter):
    def __init__(self, installation: _Installation) -> None:
        super().__init__()
        self._installation = installation

    def filter(self, record: logging.LogRecord) -> bool:
        return self._installation.filter(record)


class LogLevelHandle:
    """Reads and replaces the installed filter at runtime (``/proxy-log-level``).

    Safe to use from any thread.
    """

    def __init__(self, installation: _Installation, reloadable: bool) -> None:
        self._installation = installation
        self._reloadable = reloadable

    @property
    def filter(self) -> LogFilter:
        """The filter in force."""
        return self._installation.state.filter

    @property
    def reloadable(self) -> bool:
        """False when logging was set up with the filter ``off``.

        The reference then installs no log at all and its admin server answers
        ``/proxy-log-level`` with 404; ours should do the same.
        """
        return self._reloadable

    def get(self) -> str:
        """Return the current filter text, as it was given."""
        return str(self._installation.state.filter)

    def set(self, text: str) -> None:
        """Parse ``text`` strictly and make it the filter; logs the change at info.

        Raises:
          ValueError: the text is invalid; the old filter stays in force.
        """
        self._installation.replace(parse_filter(text))
        _log.info("set new log level", extra={"level": text})


_installed: _Installation | None = None
_install_lock = threading.Lock()


def setup_logging(
    filter_text: str,
    fmt: LogFormat,
    stream: TextIO | None = None,
    *,
    start_time: float | None = None,
) -> LogLevelHandle:
    """Install the proxy's logging on the root logger, replacing an earlier setup.

    Like the reference at startup, invalid directives are skipped with a line
    ``ignoring `<directive>`: <why>`` on stderr rather than failing.

    Args:
      filter_text: the ``LINKERD2_PROXY_LOG`` text.
      fmt: ``"plain"`` or ``"json"`` (see :func:`parse_log_format`).
      stream: where lines go; ``sys.stdout`` (looked up at call time) if None.
      start_time: the ``time.monotonic()`` value plain uptime counts from;
        now if None.

    Returns:
      The handle to read and change the filter at runtime.

    Raises:
      ValueError: ``fmt`` is neither ``"plain"`` nor ``"json"``.
    """
    global _installed
    formatter: logging.Formatter
    if fmt == "plain":
        formatter = PlainFormatter(time.monotonic() if start_time is None else start_time)
    elif fmt == "json":
        formatter = JsonFormatter()
    else:
        raise ValueError(f"unknown log format {fmt!r}: expected 'plain' or 'json'")
    log_filter, skipped = parse_filter_lossy(filter_text)
    for message in skipped:
        print(message, file=sys.stderr)
    handler = logging.StreamHandler(sys.stdout if stream is None else stream)
    handler.setFormatter(formatter)
    installation = _Installation(log_filter, handler)
    handler.addFilter(_HandlerFilter(installation))
    with _install_lock:
        _teardown_locked()
        installation.replace(log_filter)
        logging.root.addHandler(handler)
        _installed = installation
    return LogLevelHandle(installation, reloadable=filter_text.strip().lower() != "off")


def _teardown_locked() -> None:
    global _installed
    if _installed is not None:
        logging.root.removeHandler(_installed.handler)
        _installed.handler.close()
        _installed.restore()
        _installed = None


def teardown_logging() -> None:
    """Remove what :func:`setup_logging` installed and restore logger levels.

    A no-op when nothing is installed. Handles keep working on their own filter
    but no longer change logger levels.
    """
    with _install_lock:
        _teardown_locked()
