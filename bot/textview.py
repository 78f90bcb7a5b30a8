"""Block Kit as terminal text, for the demo: what a person would see in Slack, roughly."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_DATE = re.compile(r"<!date\^[^|>]*\|([^>]*)>")
_LINK = re.compile(r"<([^|>]+)\|([^>]+)>")
_MENTION = re.compile(r"<@([A-Z0-9]+)>")
#: ``<#C123>`` or ``<#C123|name>``: Slack shows the channel's current name.
_CHANNEL = re.compile(r"<#([A-Z0-9]+)(?:\|([^>]*))?>")

Names = Mapping[str, str]


def _mrkdwn(text: str, names: Names) -> str:
    # Show Slack's own markup as a person reads it, then undo the entity escaping.
    text = _DATE.sub(r"\1", text)
    text = _CHANNEL.sub(lambda m: "#" + (names.get(m[1]) or m[2] or m[1]), text)
    text = _LINK.sub(r"\2 (\1)", text)
    text = _MENTION.sub(lambda m: "@" + names.get(m[1], m[1]), text)
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _element_text(element: dict[str, Any], names: Names) -> str:
    if element.get("type") == "button":
        return f"[{element.get('text', {}).get('text', '')}]"
    return _mrkdwn(str(element.get("text", "")), names)


def _block(block: dict[str, Any], names: Names) -> list[str]:
    kind = block.get("type")
    if kind == "header":
        title = str(block.get("text", {}).get("text", ""))
        return [title, "=" * min(len(title), 60)]
    if kind == "section":
        lines = _mrkdwn(str(block.get("text", {}).get("text", "")), names).splitlines()
        fields = [_mrkdwn(str(f.get("text", "")), names) for f in block.get("fields") or []]
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
        return _mrkdwn(str(message.get("text", "")), names)
    return "\n".join(line for block in blocks for line in _block(block, names))
