"""Tests for linkerd_proxy.log.filter: EnvFilter parsing and matching."""

from __future__ import annotations

import ast
import pathlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linkerd_proxy.log import filter as log_filter
from linkerd_proxy.log.filter import (
    DEBUG,
    DEFAULT_FILTER,
    ERROR,
    INFO,
    OFF,
    TRACE,
    WARN,
    Directive,
    parse_filter,
    parse_filter_lossy,
)

INJECTED = "warn,linkerd=info,hickory=error,[{headers}]=off,[{request}]=off"


def test_module_is_pure() -> None:
    tree = ast.parse(pathlib.Path(log_filter.__file__).read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert "re" in imported  # the walk sees imports at all
    assert "trio" not in imported
    assert "logging" not in imported


@pytest.mark.parametrize(
    ("text", "directives"),
    [
        ("warn", [Directive(None, None, (), WARN)]),
        ("DEBUG", [Directive(None, None, (), DEBUG)]),
        ("Info", [Directive(None, None, (), INFO)]),
        ("off", [Directive(None, None, (), OFF)]),
        ("0", [Directive(None, None, (), OFF)]),
        ("1", [Directive(None, None, (), ERROR)]),
        ("5", [Directive(None, None, (), TRACE)]),
        ("linkerd=debug", [Directive("linkerd", None, (), DEBUG)]),
        ("linkerd=TRACE", [Directive("linkerd", None, (), TRACE)]),
        ("linkerd=3", [Directive("linkerd", None, (), INFO)]),
        ("linkerd=+2", [Directive("linkerd", None, (), WARN)]),
        ("linkerd", [Directive("linkerd", None, (), TRACE)]),
        ("linkerd=", [Directive("linkerd", None, (), TRACE)]),
        ("a::b-c_d=off", [Directive("a::b-c_d", None, (), OFF)]),
        ("info=debug", [Directive("info", None, (), DEBUG)]),
        ("[{headers}]=off", [Directive(None, None, (("headers", None),), OFF)]),
        ("foo[span]=debug", [Directive("foo", "span", (), DEBUG)]),
        ("[span{f=1}]=info", [Directive(None, "span", (("f", "1"),), INFO)]),
        ("[{f=a=b}]", [Directive(None, None, (("f", "a"),), TRACE)]),
        ("foo[]", [Directive("foo", "", (), TRACE)]),
        (
            "warn,linkerd=info",
            [Directive(None, None, (), WARN), Directive("linkerd", None, (), INFO)],
        ),
        # Each directive is trimmed; empty pieces between commas are dropped.
        (
            " warn , linkerd=debug\n",
            [Directive(None, None, (), WARN), Directive("linkerd", None, (), DEBUG)],
        ),
        ("warn,,info,", [Directive(None, None, (), WARN), Directive(None, None, (), INFO)]),
        ("", []),
    ],
)
async def test_parse_valid(text: str, directives: list[Directive]) -> None:
    parsed = parse_filter(text)
    assert list(parsed.directives) == directives
    assert str(parsed) == text


async def test_parse_injected_filter() -> None:
    parsed = parse_filter(INJECTED)
    assert str(parsed) == INJECTED
    assert [str(d) for d in parsed.directives] == [
        "warn",
        "linkerd=info",
        "hickory=error",
        "[{headers}]=off",
        "[{request}]=off",
    ]


@pytest.mark.parametrize(
    ("text", "bad"),
    [
        ("linkerd=bogus", "`linkerd=bogus`"),
        ("linkerd=6", "`linkerd=6`"),
        ("warn,linkerd=-1", "`linkerd=-1`"),
        ("=info", "`=info`"),
        ("+3", "`+3`"),
        ("linkerd = info", "`linkerd = info`"),
        ("warn, ", "` `"),
        ("[", "`[`"),
        ("foo[span", "`foo[span`"),
        ("[{}]=off", "`[{}]=off`"),
        ("[{a}", "`[{a}`"),
        ("[{a}x]", "`[{a}x]`"),
        ("[a]b", "`[a]b`"),
        ("[a]=nope", "`[a]=nope`"),
        # A comma always separates directives, even inside braces.
        ("[{a,b}]=off", "`[{a`"),
    ],
)
async def test_parse_invalid(text: str, bad: str) -> None:
    with pytest.raises(ValueError, match="invalid filter directive") as info:
        parse_filter(text)
    assert bad in str(info.value)


async def test_parse_lossy_skips_invalid_directives() -> None:
    parsed, skipped = parse_filter_lossy("warn,linkerd=bogus,foo=debug")
    assert str(parsed) == "warn,linkerd=bogus,foo=debug"
    assert [str(d) for d in parsed.directives] == ["warn", "foo=debug"]
    assert len(skipped) == 1
    assert skipped[0].startswith("ignoring `linkerd=bogus`: invalid level `bogus`")
    assert parsed.enabled("foo", DEBUG)
    assert not parsed.enabled("linkerd_proxy", INFO)


async def test_default_filter() -> None:
    f = parse_filter(DEFAULT_FILTER)
    assert f.enabled("linkerd_proxy.app", INFO)
    assert not f.enabled("linkerd_proxy.app", DEBUG)
    assert f.enabled("linkerd2_proxy", INFO)
    assert f.enabled("trio", WARN)
    assert not f.enabled("trio", INFO)
    assert f.enabled("hickory_resolver", ERROR)
    assert not f.enabled("hickory_resolver", WARN)
    assert f.enabled("root", 50)  # CRITICAL counts as error


async def test_no_directive_means_warn() -> None:
    for text in ("", ",", ",,"):
        f = parse_filter(text)
        assert f.enabled("anything", WARN)
        assert not f.enabled("anything", INFO)


async def test_no_match_is_disabled() -> None:
    f = parse_filter("linkerd=debug")
    assert f.enabled("linkerd_proxy.x", DEBUG)
    assert not f.enabled("trio", ERROR)


async def test_more_specific_target_wins() -> None:
    f = parse_filter("linkerd=debug,linkerd_proxy::transport=off,info")
    assert f.enabled("linkerd_proxy.app", DEBUG)
    assert not f.enabled("linkerd_proxy.transport", ERROR)
    assert not f.enabled("linkerd_proxy.transport.connect", ERROR)
    # A string prefix, not a path segment: "transport" also matches "transport_x".
    assert not f.enabled("linkerd_proxy.transport_x", ERROR)
    assert f.enabled("other", INFO)
    assert not f.enabled("other", DEBUG)
    # Order in the text does not matter, only specificity.
    g = parse_filter("linkerd_proxy::transport=off,info,linkerd=debug")
    assert not g.enabled("linkerd_proxy.transport.connect", ERROR)
    assert g.enabled("linkerd_proxy.app", DEBUG)


async def test_more_specific_can_enable_more() -> None:
    f = parse_filter("warn,linkerd_proxy::transport::connect=trace")
    assert f.enabled("linkerd_proxy.transport.connect", TRACE)
    assert f.enabled("linkerd_proxy.transport.connect", 1)
    assert not f.enabled("linkerd_proxy.transport", INFO)


async def test_later_duplicate_replaces_earlier() -> None:
    f = parse_filter("linkerd=debug,linkerd=error")
    assert not f.enabled("linkerd_proxy", WARN)
    assert f.enabled("linkerd_proxy", ERROR)
    g = parse_filter("error,debug")
    assert g.enabled("x", DEBUG)


async def test_bare_off_disables_everything() -> None:
    f = parse_filter("off")
    for level in (TRACE, DEBUG, INFO, WARN, ERROR, 50):
        assert not f.enabled("linkerd_proxy.app", level)
    assert parse_filter("off,linkerd=info").enabled("linkerd_proxy", INFO)


async def test_levels_in_between_count_as_the_level_below() -> None:
    f = parse_filter("info")
    assert f.enabled("x", 25)
    assert not f.enabled("x", 19)
    assert f.enabled("x", 50)


async def test_targets_given_dotted_or_rust_style() -> None:
    f = parse_filter("warn,linkerd_proxy.app=debug")
    assert f.enabled("linkerd_proxy.app.x", DEBUG)
    assert f.enabled("linkerd_proxy::app::x", DEBUG)
    assert not f.enabled("linkerd_proxy.apq", DEBUG)


async def test_access_log_target_is_always_off() -> None:
    f = parse_filter("trace,_access_log=trace")
    assert not f.enabled("_access_log", ERROR)
    assert f.enabled("anything", TRACE)


async def test_span_directives_never_match() -> None:
    f = parse_filter("warn,foo[span]=trace,[{f=1}]=trace,[span{g}]=trace")
    assert not f.enabled("foo", DEBUG, {"message", "f", "g"})
    assert f.enabled("foo", WARN, {"message", "f", "g"})
    # A span directive alone means there are directives, so no default `warn`.
    assert not parse_filter("foo[span]=trace").enabled("foo", ERROR)


async def test_field_name_directives_match_records_with_those_fields() -> None:
    f = parse_filter(INJECTED)
    assert f.enabled("trio", WARN, {"message"})
    assert not f.enabled("trio", WARN, {"message", "headers"})
    assert not f.enabled("trio", ERROR, {"message", "request"})
    # A target directive is more specific than a field-only one.
    assert f.enabled("linkerd_proxy.http", INFO, {"message", "headers"})
    g = parse_filter("warn,linkerd[{peer}]=debug")
    assert g.enabled("linkerd_proxy", DEBUG, {"message", "peer"})
    assert not g.enabled("linkerd_proxy", DEBUG, {"message"})


async def test_decide_is_none_only_when_fields_matter() -> None:
    f = parse_filter(INJECTED)
    assert f.decide("linkerd_proxy.app", INFO) is True
    assert f.decide("linkerd_proxy.app", DEBUG) is False
    assert f.decide("trio", WARN) is None
    assert f.decide("trio", INFO) is False
    assert parse_filter("linkerd=info").decide("trio", ERROR) is False


async def test_min_level_covers_the_subtree() -> None:
    f = parse_filter("info,linkerd_proxy::transport=off,linkerd_proxy::transport::connect=debug")
    assert f.min_level("linkerd_proxy.transport") == DEBUG
    assert f.min_level("linkerd_proxy.transport.connect") == DEBUG
    assert f.min_level("linkerd_proxy.transport.listen") == OFF
    assert f.min_level("linkerd_proxy.app") == INFO
    assert f.min_level("linkerd_proxy") == DEBUG
    assert f.max_verbosity() == DEBUG
    assert parse_filter("off").max_verbosity() == OFF
    g = parse_filter("error,[{special}]=trace")
    assert g.min_level("anything") == TRACE


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from("ab:_-=[]{},. \tinfoDEBUG05+"), max_size=30))
async def test_parse_fails_only_with_value_error(text: str) -> None:
    try:
        f = parse_filter(text)
    except ValueError:
        return
    assert str(f) == text
    f.enabled("a::b", INFO, {"message", "a"})
    f.min_level("a")
