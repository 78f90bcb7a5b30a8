"""``bot.slack.text``: escaping, code spans and truncation, ids, dates and data ages."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.slack.text import (
    BACKTICK_LOOKALIKE,
    CHANNEL_ID,
    CONVERSATION_ID,
    ELLIPSIS,
    USER_ID,
    age,
    channel_mention,
    code,
    data_age,
    date_token,
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


@pytest.mark.parametrize(
    ("escaped", "raw"),
    [
        ("&amp;lt;", "&lt;"),  # one pass: what an entity leaves is not read again
        ("&amp;amp;", "&amp;"),
        ("&lt;&gt;&amp;", "<>&"),
        ("&&lt;lt;", "&<lt;"),
        ("&lt &gt &amp", "&lt &gt &amp"),  # no semicolon, no entity
        ("&quot; &#60; &LT;", "&quot; &#60; &LT;"),  # only Slack's three
    ],
)
def test_unescape_table(escaped: str, raw: str) -> None:
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


# --- ids -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "user", "conversation", "channel"),
    [
        ("U024BE7LH", True, False, False),
        ("W0123ABCD", True, False, False),  # Enterprise Grid user
        ("C024BE91L", False, True, True),
        ("G024BE91L", False, True, True),  # private channel from before 2021
        ("D024BE91L", False, True, False),  # a DM: commands come from one, none is named
        ("S0614TZR7", False, False, False),  # a user group
        ("B024BE7LH", False, False, False),  # a bot
        ("U1", False, False, False),
        ("u024be7lh", False, False, False),
        ("U024BE7LH\n", False, False, False),
        ("<@U024BE7LH>", False, False, False),
        ("U" + "A" * 21, False, False, False),
        ("", False, False, False),
    ],
)
def test_id_patterns(text: str, user: bool, conversation: bool, channel: bool) -> None:
    assert bool(USER_ID.fullmatch(text)) is user
    assert bool(CONVERSATION_ID.fullmatch(text)) is conversation
    assert bool(CHANNEL_ID.fullmatch(text)) is channel


@pytest.mark.parametrize(
    ("conversation", "shown"),
    [
        ("C0ALERTS01", "<#C0ALERTS01>"),
        ("D0DIRECT01", "<#D0DIRECT01>"),
        ("<!channel>", "`&lt;!channel&gt;`"),
        ("ops", "`ops`"),
    ],
)
def test_channel_mention(conversation: str, shown: str) -> None:
    assert channel_mention(conversation) == shown


# --- dates and ages --------------------------------------------------------------------------

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("args", "token"),
    [
        ((NOW,), "<!date^1700000000^{date_short_pretty} {time}|2023-11-14 22:13 UTC>"),
        ((NOW + 0.9,), "<!date^1700000000^{date_short_pretty} {time}|2023-11-14 22:13 UTC>"),
        ((0.0,), "<!date^0^{date_short_pretty} {time}|1970-01-01 00:00 UTC>"),
        ((-1.0,), ""),
        ((4e10,), ""),
        ((math.nan,), ""),
        ((math.inf,), ""),
    ],
)
def test_date_token(args: tuple[float], token: str) -> None:
    assert date_token(*args) == token


def test_date_token_in_another_format() -> None:
    token = date_token(NOW, "{time_secs}", fallback="%H:%M:%S UTC")
    assert token == "<!date^1700000000^{time_secs}|22:13:20 UTC>"


MIN, HOUR, DAY = 60.0, 3600.0, 86_400.0


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0.0, "0 s ago"),
        (-5.0, "0 s ago"),  # a clock behind the data's
        (0.4, "0 s ago"),
        (0.5, "1 s ago"),  # halves round up, as people round
        (59.0, "59 s ago"),
        (59.9, "60 s ago"),
        (89.4, "89 s ago"),
        (89.5, "90 s ago"),
        (90.0, "2 min ago"),  # each unit starts at 2: never "1 min" for 89 s
        (150.0, "3 min ago"),
        (89.4 * MIN, "89 min ago"),
        (89.5 * MIN, "90 min ago"),
        (90 * MIN, "2 h ago"),  # was "1 h ago" in Slack and "2 h ago" in the CLI
        (2.5 * HOUR, "3 h ago"),
        (47.4 * HOUR, "47 h ago"),
        (47.9 * HOUR, "48 h ago"),
        (48 * HOUR, "2 d ago"),
        (2.5 * DAY, "3 d ago"),
        (400 * DAY, "400 d ago"),
    ],
)
def test_age_rounds_to_the_nearest_unit(seconds: float, shown: str) -> None:
    assert age(NOW - seconds, NOW) == shown
    assert data_age(NOW - seconds, NOW) == f"data from {shown}"


@pytest.mark.parametrize(
    ("fetched_at", "now", "shown", "phrase"),
    [
        (None, NOW, "no data yet", "no data yet"),
        (math.nan, NOW, "no data yet", "no data yet"),
        (math.inf, NOW, "no data yet", "no data yet"),
        (NOW, math.inf, "0 s ago", "data from 0 s ago"),
        (NOW, math.nan, "0 s ago", "data from 0 s ago"),
    ],
)
def test_age_without_usable_times(
    fetched_at: float | None, now: float, shown: str, phrase: str
) -> None:
    assert age(fetched_at, now) == shown
    assert data_age(fetched_at, now) == phrase


@given(st.floats(min_value=0, max_value=1e7), st.floats(min_value=0, max_value=1e7))
def test_older_data_never_reads_younger(a: float, b: float) -> None:
    order = {"s": 0, "min": 1, "h": 2, "d": 3}

    def rank(shown: str) -> tuple[int, int]:
        count, unit, _ = shown.split()
        return order[unit], int(count)

    younger, older = sorted((a, b))
    assert rank(age(NOW - younger, NOW)) <= rank(age(NOW - older, NOW))
