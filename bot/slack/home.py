"""The App Home tab, pure: every watch with its last refresh, totals, last alert and an
Unwatch button. Button values carry the watch's task and channel, re-validated on return."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bot.errors import CommandError
from bot.models import TaskRef, Totals
from bot.slack.action_value import BUTTON_VALUE_MAX
from bot.slack.blocks import button, context, header, section
from bot.slack.text import CONVERSATION_ID, channel_mention, code, date_token, escape_truncated
from bot.slack.words import validate_ep, validate_task_id
from bot.storage.watch_store import Watch

ACTION_HOME_UNWATCH = "hss_home_unwatch"
#: App Home allows 100 blocks: a header, a notice, an intro and a footer leave room for 90.
HOME_ROWS = 90
_PROJECT_MAX = 256


@dataclass(frozen=True, slots=True)
class HomeRow:
    watch: Watch
    #: When the task's data was last fetched (its newest view); None if never.
    fetched_at: float | None
    totals: Totals


def _totals(t: Totals) -> str:
    def n(v: int | None) -> str:
        return "?" if v is None else str(v)

    return f"{n(t.failed)} failed · {n(t.running)} running · {n(t.finished)} finished"


def _row(row: HomeRow) -> dict[str, Any]:
    w = row.watch
    refreshed = date_token(row.fetched_at) if row.fetched_at is not None else "never"
    alerted = date_token(w.last_alert_at) if w.last_alert_at is not None else "none yet"
    state = (
        f" · :pause_button: paused: {escape_truncated(w.paused_reason, 60)}"
        if w.paused_reason
        else ""
    )
    text = (
        f"*{code(w.task.task_id, 70)}* in {channel_mention(w.channel)}{state}\n"
        f"{_totals(row.totals)}\nrefreshed {refreshed} · last alert {alerted}"
    )
    block = section(text)
    block["accessory"] = button(
        "Unwatch", ACTION_HOME_UNWATCH, encode_home_value(w.task, w.channel)
    )
    return block


def render_home(rows: Sequence[HomeRow], *, notice: str | None = None) -> dict[str, Any]:
    """The ``views.publish`` view for the Home tab."""
    blocks: list[dict[str, Any]] = [header("HSS image-sync watches")]
    if notice:
        blocks.append(section(f":warning: {escape_truncated(notice, 500)}"))
    if not rows:
        blocks.append(section("No task is watched yet. In a channel: `/hss-sync watch <task_id>`."))
    blocks.extend(_row(r) for r in rows[:HOME_ROWS])
    if len(rows) > HOME_ROWS:
        blocks.append(context([f"…and {len(rows) - HOME_ROWS} more: `/hss-sync watches all`"]))
    return {"type": "home", "blocks": blocks}


def encode_home_value(task: TaskRef, channel: str) -> str:
    return json.dumps(
        {"p": task.project_id, "e": task.enterprise_project_id, "t": task.task_id, "c": channel},
        separators=(",", ":"),
        ensure_ascii=False,
    )


def decode_home_value(value: str) -> tuple[TaskRef, str]:
    """Slack hands button values back untrusted: check every field."""
    bad = CommandError("That button is out of date; open the Home tab again.")
    if not isinstance(value, str) or len(value) > BUTTON_VALUE_MAX:
        raise bad
    try:
        raw = json.loads(value)
    except (ValueError, TypeError, RecursionError):
        raise bad from None
    if not isinstance(raw, dict):
        raise bad
    project, ep, task_id, channel = raw.get("p"), raw.get("e"), raw.get("t"), raw.get("c")
    if not (isinstance(project, str) and 0 < len(project) <= _PROJECT_MAX):
        raise bad
    if not (isinstance(channel, str) and CONVERSATION_ID.fullmatch(channel)):
        raise bad
    if not isinstance(task_id, str) or not (ep is None or isinstance(ep, str)):
        raise bad
    ref = TaskRef(project, validate_task_id(task_id), validate_ep(ep) if ep is not None else None)
    return ref, channel
