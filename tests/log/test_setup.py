"""Tests for linkerd_proxy.log.setup: handler, formats, levels, runtime changes."""

from __future__ import annotations

import datetime
import io
import json
import logging
import re
import threading
import time
from collections.abc import Iterator

import pytest

from linkerd_proxy.log import (
    DEFAULT_FILTER,
    TRACE,
    parse_log_format,
    setup_logging,
    teardown_logging,
)

PLAIN = re.compile(
    r"\[ *(?P<secs>\d+)\.(?P<micros>\d{6})s\] (?P<level>[ A-Z]{5}) ThreadId\((?P<tid>\d{2,})\)"
    r" (?P<target>\S+): (?P<rest>.*)"
)


@pytest.fixture(autouse=True)
def _clean_logging() -> Iterator[None]:
    yield
    teardown_logging()


def lines(out: io.StringIO) -> list[str]:
    return out.getvalue().splitlines()


async def test_plain_line_format() -> None:
    out = io.StringIO()
    setup_logging("warn,linkerd=trace", "plain", out, start_time=time.monotonic() - 12.5)
    log = logging.getLogger("linkerd_proxy.test_setup.plain")
    log.info("accepted connection", extra={"peer": "10.0.0.1:5000", "port": 4143})
    log.warning("careful")
    log.error("broken")
    log.debug("details")
    log.log(TRACE, "very fine")

    got = lines(out)
    assert len(got) == 5
    first = PLAIN.fullmatch(got[0])
    assert first is not None, got[0]
    assert got[0].startswith("[    12.")
    assert 12 <= int(first["secs"]) < 30
    assert first["level"] == " INFO"
    assert first["tid"] == "01"
    assert first["target"] == "linkerd_proxy::test_setup::plain"
    assert first["rest"] == "accepted connection peer=10.0.0.1:5000 port=4143"
    assert [line[17:23] for line in got] == [" INFO ", " WARN ", "ERROR ", "DEBUG ", "TRACE "]
    assert got[1].endswith(" ThreadId(01) linkerd_proxy::test_setup::plain: careful")


async def test_plain_exception_traceback_follows() -> None:
    out = io.StringIO()
    setup_logging("warn", "plain", out)
    try:
        raise RuntimeError("kaput")
    except RuntimeError:
        logging.getLogger("test_setup.exc").exception("it failed")
    text = out.getvalue()
    assert "ERROR ThreadId(01) test_setup::exc: it failed\nTraceback" in text
    assert "RuntimeError: kaput" in text


async def test_json_line_format() -> None:
    out = io.StringIO()
    setup_logging(DEFAULT_FILTER, "json", out)
    before = datetime.datetime.now(datetime.UTC)
    logging.getLogger("linkerd_proxy.test_setup.json").info(
        "hello \u00e9",
        extra={"peer": "1.2.3.4:80", "n": 3, "ok": True, "ratio": 0.5, "nan": float("nan")},
    )
    logging.getLogger("linkerd_proxy.test_setup.json").warning("obj", extra={"addr": ("a", 1)})

    got = lines(out)
    assert len(got) == 2
    assert "\u00e9" in got[0] and ", " not in got[0]  # raw UTF-8, compact
    obj = json.loads(got[0])
    assert list(obj) == ["timestamp", "level", "fields", "target", "threadId"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", obj["timestamp"])
    stamp = datetime.datetime.strptime(obj["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.UTC
    )
    assert abs((stamp - before).total_seconds()) < 5
    assert obj["level"] == "INFO"
    assert obj["target"] == "linkerd_proxy::test_setup::json"
    assert obj["threadId"] == "ThreadId(1)"
    assert obj["fields"] == {
        "message": "hello \u00e9",
        "peer": "1.2.3.4:80",
        "n": 3,
        "ok": True,
        "ratio": 0.5,
        "nan": None,
    }
    second = json.loads(got[1])
    assert second["level"] == "WARN"
    assert second["fields"] == {"message": "obj", "addr": "('a', 1)"}


async def test_default_filter_decides_what_is_written() -> None:
    out = io.StringIO()
    setup_logging(DEFAULT_FILTER, "plain", out)
    ours = logging.getLogger("linkerd_proxy.test_setup.default")
    other = logging.getLogger("test_setup_other_lib")
    ours.debug("ours debug")
    ours.info("ours info")
    other.info("other info")
    other.warning("other warn")
    logging.getLogger("hickory_resolver").warning("dns warn")
    logging.getLogger("_access_log").error("access line")
    text = out.getvalue()
    assert "ours info" in text
    assert "other warn" in text
    for hidden in ("ours debug", "other info", "dns warn", "access line"):
        assert hidden not in text


async def test_disabled_records_are_skipped_by_logger_levels() -> None:
    existing = logging.getLogger("linkerd_proxy.test_setup.levels")
    out = io.StringIO()
    setup_logging(DEFAULT_FILTER, "plain", out)
    assert logging.root.level == logging.INFO
    assert not existing.isEnabledFor(logging.DEBUG)
    assert existing.isEnabledFor(logging.INFO)
    created_later = logging.getLogger("test_setup_levels_other")
    assert created_later.isEnabledFor(logging.INFO)  # inherits root's permissive level
    created_later.info("dropped by the filter")
    assert not created_later.isEnabledFor(logging.INFO)  # narrowed on first sight
    assert created_later.isEnabledFor(logging.WARNING)
    assert "dropped by the filter" not in out.getvalue()


async def test_loggers_created_later_inherit_enough() -> None:
    parent = logging.getLogger("test_setup_tree.transport")
    out = io.StringIO()
    setup_logging(
        "info,test_setup_tree::transport=off,test_setup_tree::transport::connect=debug",
        "plain",
        out,
    )
    assert parent.level == logging.DEBUG
    connect = logging.getLogger("test_setup_tree.transport.connect")
    listen = logging.getLogger("test_setup_tree.transport.listen")
    connect.debug("connect debug")
    listen.error("listen error")
    parent.error("parent error")
    text = out.getvalue()
    assert "test_setup_tree::transport::connect: connect debug" in text
    assert "listen error" not in text
    assert "parent error" not in text
    assert not listen.isEnabledFor(logging.CRITICAL)


async def test_runtime_set_changes_what_is_emitted() -> None:
    out = io.StringIO()
    handle = setup_logging(DEFAULT_FILTER, "plain", out)
    assert handle.get() == DEFAULT_FILTER
    assert handle.reloadable
    log = logging.getLogger("linkerd_proxy.test_setup.runtime")
    log.debug("before")
    assert "before" not in out.getvalue()

    handle.set("warn,linkerd=debug")
    assert handle.get() == "warn,linkerd=debug"
    assert log.isEnabledFor(logging.DEBUG)
    log.debug("after")
    assert "linkerd_proxy::test_setup::runtime: after" in out.getvalue()
    assert "linkerd_proxy::log::setup: set new log level level=warn,linkerd=debug" in (
        out.getvalue()
    )

    handle.set("linkerd_proxy::test_setup=off,linkerd=info")
    log.error("silenced")
    assert "silenced" not in out.getvalue()
    assert not log.isEnabledFor(logging.CRITICAL)


async def test_invalid_set_keeps_the_old_filter() -> None:
    out = io.StringIO()
    handle = setup_logging("warn,linkerd=debug", "plain", out)
    with pytest.raises(ValueError, match="linkerd=verbose"):
        handle.set("warn,linkerd=verbose")
    assert handle.get() == "warn,linkerd=debug"
    logging.getLogger("linkerd_proxy.test_setup.keep").debug("still debug")
    assert "still debug" in out.getvalue()
    assert "set new log level" not in out.getvalue()


async def test_field_directives_filter_records_by_extra_keys() -> None:
    out = io.StringIO()
    setup_logging("warn,[{headers}]=off", "plain", out)
    log = logging.getLogger("test_setup_fields")
    log.warning("plain warning")
    log.warning("with headers", extra={"headers": "x"})
    log.warning("plain again")
    text = out.getvalue()
    assert "plain warning" in text
    assert "plain again" in text
    assert "with headers" not in text


async def test_setup_twice_replaces_the_handler() -> None:
    first = io.StringIO()
    second = io.StringIO()
    setup_logging("warn", "plain", first)
    setup_logging("warn", "json", second)
    logging.getLogger("test_setup_twice").warning("once")
    assert first.getvalue() == ""
    assert len(lines(second)) == 1
    assert json.loads(lines(second)[0])["fields"]["message"] == "once"


async def test_teardown_restores_levels_and_removes_handler() -> None:
    existing = logging.getLogger("test_setup_restore")
    existing.setLevel(logging.ERROR)
    root_level = logging.root.level
    handlers = list(logging.root.handlers)
    out = io.StringIO()
    handle = setup_logging("trace", "plain", out)
    assert existing.level == 1
    assert logging.root.level == 1
    teardown_logging()
    assert existing.level == logging.ERROR
    assert logging.root.level == root_level
    assert logging.root.handlers == handlers
    handle.set("debug")  # a stale handle no longer touches levels
    assert existing.level == logging.ERROR
    existing.error("after teardown")
    assert out.getvalue() == ""
    existing.setLevel(logging.NOTSET)


async def test_invalid_startup_directives_are_reported_and_skipped(
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = io.StringIO()
    handle = setup_logging("warn,linkerd=bogus,test_setup_lossy=debug", "plain", out)
    assert "ignoring `linkerd=bogus`" in capsys.readouterr().err
    assert handle.get() == "warn,linkerd=bogus,test_setup_lossy=debug"
    logging.getLogger("test_setup_lossy").debug("kept")
    assert "kept" in out.getvalue()


async def test_off_at_startup_is_not_reloadable() -> None:
    out = io.StringIO()
    handle = setup_logging(" OFF ", "plain", out)
    assert not handle.reloadable
    logging.getLogger("test_setup_off").critical("nothing")
    assert out.getvalue() == ""


async def test_other_threads_get_their_own_id() -> None:
    out = io.StringIO()
    setup_logging("info", "plain", out)
    log = logging.getLogger("test_setup_threads")
    worker = threading.Thread(target=log.info, args=("from worker",))
    worker.start()
    worker.join(timeout=5)
    assert not worker.is_alive()
    log.info("from main")
    by_message = {m["rest"]: m["tid"] for m in map(PLAIN.fullmatch, lines(out)) if m}
    assert by_message["from main"] == "01"
    assert by_message["from worker"] != "01"


async def test_parse_log_format_and_unknown_format() -> None:
    assert parse_log_format("json") == "json"
    assert parse_log_format(" JSON ") == "json"
    assert parse_log_format("PLAIN") == "plain"
    assert parse_log_format("anything") == "plain"
    with pytest.raises(ValueError, match="unknown log format"):
        setup_logging("warn", "xml", io.StringIO())  # type: ignore[arg-type]
