"""Block Kit building blocks and the Slack limits they respect.

Pure dict builders with no knowledge of registries or requests; :mod:`bot.slack.render` lays our
messages out with them. Text passed in is already escaped (mrkdwn) except for the header,
which Slack shows literally.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from bot.slack.text import truncate

# Slack's limits.
HEADER_MAX = 150
SECTION_MAX = 3000

#: Escaped characters packed into one section, leaving room under ``SECTION_MAX``.
_SECTION_BUDGET = 2900


def header(text: str) -> dict[str, Any]:
    # plain_text: Slack shows it literally (no mentions, no entities), only the length matters.
    return {"type": "header", "text": {"type": "plain_text", "text": truncate(text, HEADER_MAX)}}


def section(mrkdwn: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": mrkdwn}}


def context(parts: Iterable[str]) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": p} for p in parts]}


def button(label: str, action_id: str, value: str, *, primary: bool = False) -> dict[str, Any]:
    element: dict[str, Any] = {
        "type": "button",
        "text": {"type": "plain_text", "text": label},
        "action_id": action_id,
        "value": value,
    }
    if primary:
        element["style"] = "primary"
    return element


def pack(lines: Sequence[str]) -> list[dict[str, Any]]:
    """Join already-escaped lines into as few sections as fit ``_SECTION_BUDGET`` each."""
    sections: list[dict[str, Any]] = []
    chunk: list[str] = []
    size = 0
    for line in lines:
        if chunk and size + len(line) + 1 > _SECTION_BUDGET:
            sections.append(section("\n".join(chunk)))
            chunk, size = [], 0
        chunk.append(line)
        size += len(line) + 1
    if chunk:
        sections.append(section("\n".join(chunk)))
    return sections
