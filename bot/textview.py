"""Block Kit as terminal text, for the demo: what a person would see in Slack, roughly."""

from __future__ import annotations

import re
from typing import Any

_DATE = re.compile(r"<!date\^[^|>]*\|([^>]*)>")
_LINK = re.compile(r"<([^|>]+)\|([^>]+)>")
_MENTION = re.compile(r"<@([A-Z0-9]+)>")


def _mrkdwn(text: str) -> str:
    # Show Slack's own markup as a person reads it, then undo the entity escaping.
    text = _DATE.sub(r"\1", text)
    text = _LINK.sub(r"\2 (\1)", text)
    text = _MENTION.sub(r"@\1", text)
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _element_text(element: dict[str, Any]) -> str:
    if element.get("type") == "button":
        return f"[{element.get('text', {}).get('text', '')}]"
    return _mrkdwn(str(element.get("text", "")))


def _block(block: dict[str, Any]) -> list[str]:
    kind = block.get("type")
    if kind == "header":
        title = str(block.get("text", {}).get("text", ""))
        return [title, "=" * min(len(title), 60)]
    if kind == "section":
        lines = _mrkdwn(str(block.get("text", {}).get("text", ""))).splitlines()
        fields = [_mrkdwn(str(f.get("text", ""))) for f in block.get("fields") or []]
        return lines + ([" | ".join(fields)] if fields else [])
    if kind == "context":
        return ["  " + " · ".join(_element_text(e) for e in block.get("elements") or [])]
    if kind == "actions":
        return [" ".join(_element_text(e) for e in block.get("elements") or [])]
    if kind == "divider":
        return ["-" * 40]
    return []


def message_text(message: dict[str, Any]) -> str:
    """A readable rendering of a message payload (``text`` + ``blocks``)."""
    blocks = message.get("blocks") or []
    if not blocks:
        return _mrkdwn(str(message.get("text", "")))
    return "\n".join(line for block in blocks for line in _block(block))
