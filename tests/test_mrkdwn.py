from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.slack.text import (
    BACKTICK_LOOKALIKE,
    ELLIPSIS,
    code,
    escape,
    escape_truncated,
    single_line,
    truncate,
    unescape,
    utf16_len,
)

HOSTILE = ["<!channel>", "<!here>", "<@U123>", "<!subteam^S1>", "<https://evil|click>"]


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("", ""),
        ("plain", "plain"),
        ("<!channel>", "&lt;!channel&gt;"),
        ("<@U1>", "&lt;@U1&gt;"),
        ("<!subteam^S1>", "&lt;!subteam^S1&gt;"),
        ("<https://x|innocent>", "&lt;https://x|innocent&gt;"),
        ("a & b", "a &amp; b"),
        ("&lt;", "&amp;lt;"),
        ("*bold* _it_ `code` ~s~", "*bold* _it_ `code` ~s~"),
        ("同步失败 <x> 🚀", "同步失败 &lt;x&gt; 🚀"),
        ("'\"", "'\""),
    ],
)
def test_escape_table(raw: str, escaped: str) -> None:
    assert escape(raw) == escaped
    assert unescape(escaped) == raw


@given(st.text())
def test_escape_leaves_no_control_characters(text: str) -> None:
    out = escape(text)
    assert "<" not in out and ">" not in out
    # Every & starts one of our three entities.
    assert out.count("&") == out.count("&amp;") + out.count("&lt;") + out.count("&gt;")
    assert unescape(out) == text


@given(st.text())
def test_hostile_strings_never_survive(text: str) -> None:
    for hostile in HOSTILE:
        assert hostile not in escape(text + hostile + text)


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("hello", 5, "hello"),
        ("hello!", 5, "hell…"),
        ("hello", 0, ""),
        ("ab👍cd", 4, "ab…"),  # the emoji takes two UTF-16 units and does not fit
        ("ab👍cd", 5, "ab👍…"),
        ("ab👍🏽cd", 6, "ab…"),  # never separates the skin-tone modifier from its emoji
        ("e\u0301\u0301xyz", 3, "…"),  # nor a letter from its combining accents
        ("a👩\u200d💻bc", 5, "a…"),  # nor a ZWJ sequence
        ("同步失败原因", 4, "同步失…"),
    ],
)
def test_truncate_table(text: str, limit: int, expected: str) -> None:
    assert truncate(text, limit) == expected


def test_truncate_rejects_negative_limit() -> None:
    with pytest.raises(ValueError, match="negative"):
        truncate("x", -1)


@given(st.text(), st.integers(min_value=0, max_value=300))
def test_truncate_fits_and_is_a_prefix(text: str, limit: int) -> None:
    out = truncate(text, limit)
    assert utf16_len(out) <= limit
    if out != text and out:
        assert out.endswith(ELLIPSIS)
        assert text.startswith(out[: -len(ELLIPSIS)])


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("<<<<", 16, "&lt;&lt;&lt;&lt;"),
        ("<<<<<", 16, "&lt;&lt;&lt;…"),  # cut before an entity, never inside one
        ("a&b", 5, "a…"),
        ("a&b", 7, "a&amp;b"),
    ],
)
def test_escape_truncated_table(text: str, limit: int, expected: str) -> None:
    assert escape_truncated(text, limit) == expected


@given(st.text(), st.integers(min_value=0, max_value=300))
def test_escape_truncated_fits_and_never_splits_entities(text: str, limit: int) -> None:
    out = escape_truncated(text, limit)
    assert utf16_len(out) <= limit
    assert "<" not in out and ">" not in out
    assert out.count("&") == out.count("&amp;") + out.count("&lt;") + out.count("&gt;")
    assert text.startswith(unescape(out).removesuffix(ELLIPSIS))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("harbor-prod", "`harbor-prod`"),
        ("a`b", f"`a{BACKTICK_LOOKALIKE}b`"),
        ("```", f"`{BACKTICK_LOOKALIKE * 3}`"),
        ("*bold* _x_", "`*bold* _x_`"),
        ("two\nlines\r\n", "`two lines `"),
        ("<@U1>", "`&lt;@U1&gt;`"),
        ("", ""),
        ("  ", ""),
    ],
)
def test_code_table(text: str, expected: str) -> None:
    assert code(text, 100) == expected


@given(st.text(), st.integers(min_value=0, max_value=200))
def test_code_span_is_closed_and_bounded(text: str, limit: int) -> None:
    out = code(text, limit)
    assert utf16_len(out) <= limit
    if out:
        assert out.startswith("`") and out.endswith("`")
        assert out.count("`") == 2
        assert "\n" not in out


def test_single_line() -> None:
    assert single_line("a\n\nb\tc\u2028d") == "a b c d"
