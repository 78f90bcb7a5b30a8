"""The demo's text view reads mrkdwn as a person reads it in Slack: symbols for the bot's emoji
codes, no formatting markers, code spans set apart by their backticks, entities undone,
mentions and channels by name; and untrusted text the bot put in a code span
(``bot.slack.text.code``) comes back as it was, inside its backticks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bot.sandbox.textview import EMOJI, message_text, mrkdwn_text
from bot.slack.render import render_help
from bot.slack.text import BACKTICK_LOOKALIKE, code, escape

NAMES = {"U0DEMO0001": "demo.user", "C0ALERTS01": "sync-alerts"}


@pytest.mark.parametrize(
    ("mrkdwn", "shown"),
    [
        # the bot's own lines
        (
            ":x: *8* failed   :arrows_counterclockwise: *5* running   "
            ":white_check_mark: *44* finished   57 in all",
            "✗ 8 failed   ↻ 5 running   ✓ 44 finished   57 in all",
        ),
        (
            "*Failed* (3 registries): `disk &lt;full&gt; &amp; gone`",
            "Failed (3 registries): `disk <full> & gone`",
        ),
        (":x: `reg-1` · Harbor", "✗ `reg-1` · Harbor"),
        ("`id-7` _(no name)_", "`id-7` (no name)"),
        ("_No data yet._", "No data yet."),
        ("~struck~ out", "struck out"),
        (":warning: Unknown status &quot;x&quot;", "⚠ Unknown status &quot;x&quot;"),
        (":information_source: Fetching…", "ℹ Fetching…"),
        (":eyes: Acknowledged by <@U0DEMO0001>", "👀 Acknowledged by @demo.user"),
        (
            ":repeat: :wastebasket: :no_bell: :mute: :pause_button: :grey_question:",
            "🔁 🗑 🔕 🔇 ⏸ ?",
        ),
        # unknown codes, and colons that are no emoji, stay as they are
        (":party_parrot: at 12:30:05", ":party_parrot: at 12:30:05"),
        # markers only at word edges, as Slack reads them
        ("snake_case_name and 2 * 3 * 4 and a*b*c", "snake_case_name and 2 * 3 * 4 and a*b*c"),
        ("*_both_*", "both"),
        ("a lone ` backtick", "a lone ` backtick"),
        # Slack's tokens
        ("<@U0DEMO0001> <@U999>", "@demo.user @U999"),
        (
            "in <#C0ALERTS01> and <#C0OTHER|other&amp;co> and <#C0NONAME>",
            "in #sync-alerts and #other&co and #C0NONAME",
        ),
        ("at <!date^1700000000^{time_secs}|22:13:20 UTC>", "at 22:13:20 UTC"),
        ("<https://example.com/a_b_c|the &lt;docs&gt;>", "the <docs> (https://example.com/a_b_c)"),
        ("*<@U0DEMO0001>*", "@demo.user"),
        # entities: undone once, never read twice
        ("&amp;lt; is how &lt; is written", "&lt; is how < is written"),
        ("&lt;0&gt; &lt;@U0DEMO0001&gt;", "<0> <@U0DEMO0001>"),
        ("", ""),
    ],
)
def test_mrkdwn_reads_as_slack_shows_it(mrkdwn: str, shown: str) -> None:
    assert mrkdwn_text(mrkdwn, NAMES) == shown


@pytest.mark.parametrize(
    "name",
    [
        "prod_*harbor*_mirror",
        "*bold* _it_ ~gone~",
        "reg &lt; not an entity",
        "a<b>&c",
        "<@U0DEMO0001> <!channel>",
        ":x: :white_check_mark:",
        "tick`in`name",
        "<0> <1>",
        "仓库 ✗ 🔁",
    ],
)
def test_untrusted_text_in_a_code_span_reads_as_it_was(name: str) -> None:
    # bot.slack.text.code escapes & < > and swaps a backtick for a look-alike: read back, the
    # name is the same but for that look-alike, wherever the span sits in a line.
    expected = "`" + name.replace("`", BACKTICK_LOOKALIKE) + "`"
    assert mrkdwn_text(code(name, 200)) == expected
    line = f":x: *Failed* (1 registry): {code(name, 200)} · _{escape('Harbor&Co')}_"
    assert mrkdwn_text(line, NAMES) == f"✗ Failed (1 registry): {expected} · Harbor&Co"


def test_a_command_in_a_code_span_stays_apart_from_the_words_after_it() -> None:
    # /hss-sync help's lines: without the backticks they read "/hss-sync task-42 every...".
    line = "• `/hss-sync task-42 failed` only the failed ones, grouped by reason"
    assert mrkdwn_text(line) == line


def test_text_outside_a_code_span_is_unescaped() -> None:
    assert mrkdwn_text(f":warning: {escape('a <b> & c')}") == "⚠ a <b> & c"


def test_plain_text_objects_are_shown_as_they_are() -> None:
    message = {
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": "*not* bold :x:"}},
            {"type": "section", "text": {"type": "plain_text", "text": "_as is_ &amp;"}},
            {
                "type": "context",
                "elements": [
                    {"type": "plain_text", "text": "`kept`"},
                    {"type": "mrkdwn", "text": "`kept too`"},
                ],
            },
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": ":x: *1*"},
                "fields": [
                    {"type": "mrkdwn", "text": "*a*"},
                    {"type": "plain_text", "text": "*b*"},
                ],
            },
            {"type": "actions", "elements": [{"type": "button", "text": {"text": "Next ▶"}}]},
        ]
    }
    assert message_text(message).splitlines() == [
        "*not* bold :x:",
        "==============",
        "_as is_ &amp;",
        "  `kept` · `kept too`",
        "✗ 1",
        "a | *b*",
        "[Next ▶]",
    ]


def test_a_message_without_blocks_shows_its_text() -> None:
    assert (
        message_text({"text": "*2* failed in <#C0ALERTS01>"}, NAMES) == "2 failed in #sync-alerts"
    )


def test_every_emoji_code_the_bot_writes_has_a_symbol() -> None:
    bot = Path(__file__).resolve().parent.parent / "bot"
    # Every module that writes messages: all but Redis key names (``hss:alert:...``) and the
    # sandbox, which reads them.
    sources = [
        path
        for path in bot.rglob("*.py")
        if not path.is_relative_to(bot / "storage") and not path.is_relative_to(bot / "sandbox")
    ]
    used = {
        m[1]
        for source in sources
        for m in re.finditer(r"(?<![\w:]):([a-z_]+):(?![\w`])", source.read_text())
    }
    # Sphinx roles in docstrings (:class:`x`, :func:`y`) are no emoji.
    used -= {"class", "func", "mod", "meth", "data", "attr"}
    assert used, "no emoji codes found: the pattern is wrong"
    assert used <= EMOJI.keys(), sorted(used - EMOJI.keys())


def test_the_help_reads_with_each_command_set_apart() -> None:
    help_message = render_help()
    lines = message_text({"text": help_message.text, "blocks": help_message.blocks}).splitlines()
    examples = [line for line in lines if line.startswith("• ")]
    assert len(examples) >= 5
    for line in examples:
        assert re.match(r"• `/hss-sync [^`]*` \S", line), line
