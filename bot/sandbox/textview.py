"""Block Kit as terminal text, for the demo: what a person would see in Slack, roughly.

mrkdwn is rendered for a reader (:func:`mrkdwn_text`): the emoji codes the bot uses become
short symbols, ``*bold*``, ``_italic_`` and ``~strike~`` lose their markers, Slack's tokens
(mentions, channels, links, dates) show as Slack shows them, and the ``&lt; &gt; &amp;``
entities are undone. Code spans keep their backticks: Slack sets them apart in a box, and
without a mark a command runs into the words around it (``• /hss-sync help this help``).
Text inside a code span is shown exactly as :func:`bot.slack.text.code` put it there
(entities undone, nothing else): a registry name with ``*``, ``_`` or ``:x:`` in it reads as
the name. ``plain_text`` objects are shown as they are.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from bot.slack.text import unescape

Names = Mapping[str, str]

#: The emoji codes the bot writes (render, alerts, home, watches), as one symbol each.
EMOJI = {
    "x": "✗",
    "white_check_mark": "✓",
    "arrows_counterclockwise": "↻",
    "grey_question": "?",
    "warning": "⚠",
    "information_source": "ℹ",
    "eyes": "👀",
    "repeat": "🔁",
    "wastebasket": "🗑",
    "no_bell": "🔕",
    "mute": "🔇",
    "pause_button": "⏸",
    # Sync runs (issue 10): a resolved reference, run alerts and their notices.
    "pushpin": "📌",
    "new": "🆕",
    "alarm_clock": "⏰",
    "hourglass": "⌛",
    "checkered_flag": "🏁",
}

#: What formatting leaves alone: a code span, or one of Slack's ``<...>`` tokens. In escaped
#: mrkdwn every raw ``<`` starts a token, so ``<N>`` is a safe placeholder for piece ``N``.
_PIECE = re.compile(r"`([^`\n]+)`|<[^<>\n]*>")
_HOLE_OR_ENTITY = re.compile(r"<(\d+)>|&(?:lt|gt|amp);")
_EMOJI_CODE = re.compile(r":([a-z0-9_+-]+):")
#: ``*bold*``, ``_italic_``, ``~strike~`` as Slack reads them: markers at word edges around
#: text that neither starts nor ends with a space.
_STYLES = [
    re.compile(rf"(?<!\w){m}([^{m}\s](?:[^{m}\n]*[^{m}\s])?){m}(?!\w)") for m in (r"\*", "_", "~")
]

_DATE = re.compile(r"<!date\^[^|>]*\|([^>]*)>")
_LINK = re.compile(r"<([^|>]+)\|([^>]+)>")
_MENTION = re.compile(r"<@([A-Z0-9]+)>")
#: ``<#C123>`` or ``<#C123|name>``: Slack shows the channel's current name.
_CHANNEL = re.compile(r"<#([A-Z0-9]+)(?:\|([^>]*))?>")


def _token(token: str, names: Names) -> str:
    if m := _DATE.fullmatch(token):
        return unescape(m[1])
    if m := _CHANNEL.fullmatch(token):
        return "#" + (names.get(m[1]) or unescape(m[2] or "") or m[1])
    if m := _MENTION.fullmatch(token):
        return "@" + names.get(m[1], m[1])
    if m := _LINK.fullmatch(token):
        return f"{unescape(m[2])} ({unescape(m[1])})"
    return unescape(token)


def mrkdwn_text(text: str, names: Names | None = None) -> str:
    """``text`` (mrkdwn, escaped as Slack wants it) as a person reads it in Slack."""
    names = names or {}
    pieces: list[str] = []

    def hold(m: re.Match[str]) -> str:
        pieces.append(f"`{unescape(m[1])}`" if m[1] is not None else _token(m[0], names))
        return f"<{len(pieces) - 1}>"

    text = _PIECE.sub(hold, text)
    text = _EMOJI_CODE.sub(lambda m: EMOJI.get(m[1], m[0]), text)
    for style in _STYLES:
        text = style.sub(r"\1", text)
    # One pass: a piece put back is not read again, an entity undone is not a placeholder.
    return _HOLE_OR_ENTITY.sub(lambda m: pieces[int(m[1])] if m[1] else unescape(m[0]), text)


def _text_object(obj: object, names: Names) -> str:
    if not isinstance(obj, dict):
        return str(obj or "")
    text = str(obj.get("text", ""))
    return text if obj.get("type") == "plain_text" else mrkdwn_text(text, names)


def _element_text(element: dict[str, Any], names: Names) -> str:
    if element.get("type") == "button":
        return f"[{element.get('text', {}).get('text', '')}]"
    return _text_object(element, names)


def _block(block: dict[str, Any], names: Names) -> list[str]:
    kind = block.get("type")
    if kind == "header":
        title = str(block.get("text", {}).get("text", ""))
        return [title, "=" * min(len(title), 60)]
    if kind == "section":
        lines = _text_object(block.get("text"), names).splitlines()
        fields = [_text_object(f, names) for f in block.get("fields") or []]
        return lines + ([" | ".join(fields)] if fields else [])
    if kind in ("context", "actions"):
        elements = [_element_text(e, names) for e in block.get("elements") or []]
        return ["  " + " · ".join(elements)] if kind == "context" else [" ".join(elements)]
    if kind == "divider":
        return ["-" * 40]
    return []


def message_text(message: dict[str, Any], names: Names | None = None) -> str:
    """A readable rendering of a message payload (``text`` + ``blocks``). ``names`` maps
    channel and user ids to names: Slack shows ``<#C123>`` and ``<@U123>`` by name."""
    names = names or {}
    blocks = message.get("blocks") or []
    if not blocks:
        return mrkdwn_text(str(message.get("text", "")), names)
    return "\n".join(line for block in blocks for line in _block(block, names))
