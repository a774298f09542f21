"""The ``LINKERD2_PROXY_LOG`` filter: EnvFilter syntax, decided for Python loggers.

Pure (sans-IO) part of ``linkerd_proxy.log``: it parses the filter text the reference
proxy reads (the ``EnvFilter`` syntax of Rust's ``tracing-subscriber`` 0.3) and
answers "is a record from logger X at level L enabled?". ``setup.py`` installs the
answer on Python ``logging``; the admin server's ``/proxy-log-level`` replaces it at
runtime.

Syntax: directives separated by ``,``; each is one of

- ``level``: a bare level (``trace|debug|info|warn|error|off`` in any case, or
  ``0``-``5`` meaning off, error, warn, info, debug, trace), for every target;
- ``target`` or ``target=``: that target at ``trace``;
- ``target=level``;
- ``target[span{field,field=value}]=level`` and the forms without target, span
  name or fields, for example the injector's ``[{headers}]=off``.

A *target* matches a logger when the logger's target starts with it, as a plain
string prefix: ``linkerd`` matches ``linkerd_proxy::transport``. Logger names are
dotted (``linkerd_proxy.transport.connect``) and are compared in the Rust form
(``linkerd_proxy::transport::connect``); a ``.`` written in a directive's target is
read as ``::`` too (an extension: Rust targets never hold a dot). Of the directives
that match, the most specific decides alone: the longest target first, then the
one naming more fields, then a directive without target; if two directives have the
same target and field names, the later one replaces the earlier. When nothing
matches, the record is disabled. A text with no directive at all means ``warn``.

What span and field parts do here, since Python logging has no spans:

- a directive naming a span (``foo[span]=debug``, ``[span{f}]=off``, even ``[]``)
  or a field with a value (``[{f=1}]=debug``) never matches a record, exactly as in
  the reference for events outside spans;
- a directive naming only field names (``[{headers}]=off``, ``foo[{a}]=debug``)
  matches a record whose fields include all of them, as the reference does for
  events; a record's fields are ``message`` plus the keys it got through
  ``extra=``. So ``[{headers}]=off`` silences records logged with
  ``extra={"headers": ...}`` unless a target directive for their logger is more
  specific.

Like the reference, every filter also holds ``_access_log=off`` (added last), so
the access log (its own logger, written to stderr) never reaches the stdout log.

Whitespace: each directive is trimmed at both ends before parsing, which is what
``tracing-subscriber`` 0.3.23 means to do (it trims, then slices the untrimmed
text, so there ``warn, linkerd=info`` fails and ``warn, debug`` names a target
" debug"). Whitespace inside a directive is kept: ``linkerd = info`` is an error.
A comma always separates directives, so ``[{a,b}]=off`` is an error, as in the
reference.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from typing import Final

import attrs

__all__ = [
    "ACCESS_LOG_TARGET",
    "DEBUG",
    "DEFAULT_FILTER",
    "ERROR",
    "INFO",
    "OFF",
    "TRACE",
    "WARN",
    "Directive",
    "LogFilter",
    "level_bucket",
    "level_name",
    "parse_filter",
    "parse_filter_lossy",
    "to_target",
]

TRACE: Final = 5
DEBUG: Final = 10
INFO: Final = 20
WARN: Final = 30
ERROR: Final = 40
#: The threshold of an ``off`` directive: above any level a record can have.
OFF: Final = 2**31 - 1

DEFAULT_FILTER: Final = "warn,linkerd=info,hickory=error"
#: The target (and Python logger name) of the access log, always off in this filter.
ACCESS_LOG_TARGET: Final = "_access_log"

_LEVEL_NAMES: Final = {
    "off": OFF,
    "error": ERROR,
    "warn": WARN,
    "info": INFO,
    "debug": DEBUG,
    "trace": TRACE,
}
_LEVEL_NUMBERS: Final = (OFF, ERROR, WARN, INFO, DEBUG, TRACE)
_DISPLAY: Final = {TRACE: "trace", DEBUG: "debug", INFO: "info", WARN: "warn", ERROR: "error"}
# Rust parses the numeric form as a usize: an optional '+' and ASCII digits.
_NUMBER: Final = re.compile(r"\+?[0-9]+", re.ASCII)
_LEVEL_ERROR: Final = (
    'expected one of "off", "error", "warn", "info", "debug", "trace", or a number 0-5'
)


def to_target(name: str) -> str:
    """Return the Rust-style target of a Python logger name (``a.b`` -> ``a::b``)."""
    return name.replace(".", "::")


def level_bucket(levelno: int) -> int:
    """Return the tracing level a Python ``levelno`` counts as.

    ``CRITICAL`` counts as error, anything below ``DEBUG`` as trace, and levels in
    between as the nearest standard level below them (``25`` is info).
    """
    if levelno >= ERROR:
        return ERROR
    if levelno >= WARN:
        return WARN
    if levelno >= INFO:
        return INFO
    if levelno >= DEBUG:
        return DEBUG
    return TRACE


def level_name(levelno: int) -> str:
    """Return the upper-case tracing name of a record's level (``WARN``, ``TRACE``...)."""
    return _DISPLAY[level_bucket(levelno)].upper()


def _parse_level(text: str) -> int | None:
    if _NUMBER.fullmatch(text):
        number = int(text)
        return _LEVEL_NUMBERS[number] if number < len(_LEVEL_NUMBERS) else None
    return _LEVEL_NAMES.get(text.lower())


@attrs.frozen
class Directive:
    """One parsed directive.

    Attributes:
      target: the target as written, or ``None`` for all targets.
      span: the span name, or ``None`` (``""`` for ``[]``, which names a span).
      fields: ``(name, value)`` pairs from ``{...}``; ``value`` is ``None`` when
        only the name is given.
      level: the threshold: records at this level or above are enabled
        (``TRACE``...``ERROR``, or ``OFF``).
    """

    target: str | None
    span: str | None
    fields: tuple[tuple[str, str | None], ...]
    level: int

    @property
    def is_static(self) -> bool:
        """Whether it can match a record outside spans (no span, no field value)."""
        return self.span is None and all(value is None for _, value in self.fields)

    def __str__(self) -> str:
        out = self.target or ""
        if self.span is not None or self.fields:
            names = ",".join(n if v is None else f"{n}={v}" for n, v in self.fields)
            out += "[" + (self.span or "") + ("{" + names + "}" if self.fields else "") + "]"
        level = "off" if self.level == OFF else _DISPLAY[self.level]
        return f"{out}={level}" if out else level


@attrs.frozen
class _Rule:
    """A static directive in matching form: Rust target, field names, threshold."""

    target: str | None
    field_names: tuple[str, ...]
    level: int

    def matches_target(self, target: str) -> bool:
        return self.target is None or target.startswith(self.target)

    def sort_key(self) -> tuple[int, int, str, tuple[str, ...]]:
        # Most specific first (sorted in reverse): target length (none < any),
        # then the number of field names; ties broken like the reference.
        length = -1 if self.target is None else len(self.target)
        return (length, len(self.field_names), self.target or "", self.field_names)


class _BadDirective(ValueError):
    def __init__(self, directive: str, reason: str) -> None:
        super().__init__(f"invalid filter directive `{directive}`: {reason}")
        self.reason = reason


def _parse_directive(raw: str) -> Directive:
    """Parse one directive (already split on commas); raise ``ValueError``."""
    text = raw.strip()

    def fail(reason: str) -> ValueError:
        return _BadDirective(raw, reason)

    def level_of(part: str) -> int:
        if part == "":
            return TRACE
        level = _parse_level(part)
        if level is None:
            raise fail(f"invalid level `{part}`: {_LEVEL_ERROR}")
        return level

    if not text:
        raise fail("empty directive")
    target: str | None = None
    span: str | None = None
    fields: list[tuple[str, str | None]] = []
    rest = text
    if not rest.startswith("["):
        first = rest[0]
        if not (first.isalnum() or first in "-:_"):
            raise fail(f"unexpected `{first}` at the start")
        end = min((i for i in (rest.find("="), rest.find("[")) if i >= 0), default=-1)
        if end < 0:
            # A bare word: a level if it parses as one, else a target at trace.
            level = _parse_level(rest)
            if level is not None:
                return Directive(None, None, (), level)
            return Directive(rest, None, (), TRACE)
        target, rest = rest[:end], rest[end:]
    if rest.startswith("["):
        close = rest.find("]")
        brace = rest.find("{")
        if brace >= 0 and (close < 0 or brace < close):
            span = rest[1:brace] or None
            close_fields = rest.find("}", brace)
            if close_fields < 0:
                raise fail("unterminated `{` field list (a comma always ends a directive)")
            # No comma can be left here: the text was split on them already.
            part = rest[brace + 1 : close_fields]
            if not part:
                raise fail("empty field name")
            name, eq, value = part.partition("=")
            # Like the reference, only the text up to a second '=' is the value.
            fields.append((name, value.partition("=")[0] if eq else None))
            rest = rest[close_fields + 1 :]
            if not rest.startswith("]"):
                raise fail("expected `]` after the field list")
        elif close < 0:
            raise fail("unterminated `[` span")
        else:
            span = rest[1:close]
            rest = rest[close:]
        rest = rest[1:]
        if rest and not rest.startswith("="):
            raise fail(f"unexpected `{rest[0]}` after `]`")
    if rest.startswith("="):
        return Directive(target, span, tuple(fields), level_of(rest[1:]))
    return Directive(target, span, tuple(fields), TRACE)


def _split(text: str) -> list[str]:
    return [part for part in text.split(",") if part]


@attrs.frozen(eq=False)
class LogFilter:
    """A parsed filter; immutable. Build it with :func:`parse_filter`.

    ``str()`` gives back the text it was parsed from, which is what the admin
    ``GET /proxy-log-level`` answers.
    """

    text: str
    directives: tuple[Directive, ...]
    _rules: tuple[_Rule, ...] = attrs.field(alias="rules")

    @classmethod
    def _build(cls, text: str, directives: Iterable[Directive]) -> LogFilter:
        directives = tuple(directives)
        by_key: dict[tuple[str | None, tuple[str, ...]], _Rule] = {}

        def add(rule: _Rule) -> None:
            by_key.pop((rule.target, rule.field_names), None)
            by_key[(rule.target, rule.field_names)] = rule

        # Directives without span or fields first, then the field-only ones; a
        # later directive with the same target and field names replaces one before.
        plain = [d for d in directives if d.span is None and not d.fields]
        with_fields = [d for d in directives if d.fields and d.is_static]
        for d in (*plain, *with_fields):
            target = None if d.target is None else to_target(d.target)
            add(_Rule(target, tuple(name for name, _ in d.fields), d.level))
        if not directives:
            add(_Rule(None, (), WARN))
        add(_Rule(ACCESS_LOG_TARGET, (), OFF))
        rules = sorted(by_key.values(), key=_Rule.sort_key, reverse=True)
        return cls(text, directives, rules=tuple(rules))

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"LogFilter({self.text!r})"

    def enabled(self, target: str, level: int, fields: Collection[str] = ()) -> bool:
        """Return whether a record is enabled.

        Args:
          target: a Python logger name (dotted) or a Rust-style target.
          level: the record's ``levelno``.
          fields: the record's field names (``message`` and its ``extra`` keys);
            only directives naming fields look at them.
        """
        target = to_target(target)
        bucket = level_bucket(level)
        for rule in self._rules:
            if rule.matches_target(target) and all(f in fields for f in rule.field_names):
                return bucket >= rule.level
        return False

    def decide(self, target: str, level: int) -> bool | None:
        """Return :meth:`enabled` when it does not depend on fields, else ``None``.

        This is what a cache keyed by (logger, level) may keep.
        """
        target = to_target(target)
        bucket = level_bucket(level)
        answers: set[bool] = set()
        for rule in self._rules:
            if rule.matches_target(target):
                answers.add(bucket >= rule.level)
                if not rule.field_names:
                    break
        else:
            answers.add(False)
        return answers.pop() if len(answers) == 1 else None

    def min_level(self, target: str) -> int:
        """Return the lowest level that may be enabled for ``target`` or below it.

        "Below it" means any target that extends it, so this is a safe Python
        logger level for the logger of that name: its children inheriting it
        lose nothing the filter would enable. ``OFF`` when nothing can be.
        """
        target = to_target(target)
        lowest = OFF
        for rule in self._rules:
            if rule.matches_target(target):
                lowest = min(lowest, rule.level)
                if not rule.field_names:
                    break
            elif rule.target is not None and rule.target.startswith(target):
                lowest = min(lowest, rule.level)
        return lowest

    def max_verbosity(self) -> int:
        """Return the lowest level any directive enables (``OFF`` if none)."""
        return min((rule.level for rule in self._rules), default=OFF)


def parse_filter(text: str) -> LogFilter:
    """Parse filter text strictly, as ``PUT /proxy-log-level`` does.

    Raises:
      ValueError: a directive is invalid; the message names it and says why.
    """
    return LogFilter._build(text, [_parse_directive(part) for part in _split(text)])


def parse_filter_lossy(text: str) -> tuple[LogFilter, list[str]]:
    """Parse filter text skipping invalid directives, as the proxy does at startup.

    Returns:
      The filter of the valid directives (``str()`` is still the whole text), and
      one message per skipped directive, ``ignoring `<directive>`: <why>``.
    """
    directives: list[Directive] = []
    skipped: list[str] = []
    for part in _split(text):
        try:
            directives.append(_parse_directive(part))
        except _BadDirective as err:
            skipped.append(f"ignoring `{part}`: {err.reason}")
    return LogFilter._build(text, directives), skipped
