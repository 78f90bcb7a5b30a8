"""The App Home tab, pure: an "Add a watch" button, the recent sync runs with their failed
counts (from the stored run list, with its age: rendering Home never calls HSS), every run
watch (what it follows, its filters and state) and every task watch with its last refresh,
totals and last alert, each with an Unwatch button. Button values carry the watch's task (or
kind of runs) and channel, re-validated on return."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bot.errors import CommandError
from bot.models import TaskRef, Totals
from bot.runs import RunKind, SyncRun
from bot.slack.action_value import BUTTON_VALUE_MAX
from bot.slack.blocks import button, context, header, pack, section
from bot.slack.run_text import counts_text, kind_text, outcome_text, run_time, run_title
from bot.slack.text import (
    CONVERSATION_ID,
    channel_mention,
    code,
    data_age,
    date_token,
    escape_truncated,
)
from bot.slack.watch_form import ACTION_HOME_ADD_WATCH
from bot.slack.watch_text import filters_text, runs_text, state_text
from bot.slack.words import validate_ep, validate_task_id
from bot.storage.run_watch_store import ALL_RUNS, RunWatch
from bot.storage.watch_store import Watch

ACTION_HOME_UNWATCH = "hss_home_unwatch"
ACTION_HOME_UNWATCH_RUNS = "hss_home_unwatch_runs"
#: App Home allows 100 blocks: the header, a notice, the button, the recent runs, the
#: headings and footers leave room for this many watch rows, run watches first.
HOME_ROWS = 85
#: Runs shown in "Recent runs", newest first.
HOME_RECENT_RUNS = 5


@dataclass(frozen=True, slots=True)
class RecentRuns:
    """What Home shows of the sync runs: the newest ones and when the list was fetched (None:
    never), or one sentence saying why there is no list."""

    runs: tuple[SyncRun, ...] = ()
    fetched_at: float | None = None
    unavailable: str | None = None


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
    return _unwatchable(text, ACTION_HOME_UNWATCH, encode_home_value(w.task, w.channel))


def _unwatchable(text: str, action_id: str, value: str) -> dict[str, Any]:
    """A section with an Unwatch button."""
    block = section(text)
    block["accessory"] = button("Unwatch", action_id, value)
    return block


def _run_row(w: RunWatch, now: float) -> dict[str, Any]:
    text = (
        f"*{runs_text(w.kind)}* in {channel_mention(w.channel)} · "
        f"{filters_text(w.types, w.name)} · {state_text(w, now)}"
    )
    return _unwatchable(text, ACTION_HOME_UNWATCH_RUNS, encode_home_runs_value(w.kind, w.channel))


def _recent_line(run: SyncRun) -> str:
    return (
        f"• {run_title(run)} · {kind_text(run)} · began {run_time(run.begin_time)} · "
        f"{outcome_text(run)} · {counts_text(run)}"
    )


def _recent_blocks(recent: RecentRuns, now: float) -> list[dict[str, Any]]:
    heading = section("*Recent runs*")
    if recent.unavailable is not None:
        return [heading, section(escape_truncated(recent.unavailable, 500))]
    if recent.fetched_at is None:
        return [heading, section("No run list yet: `/hss-sync tasks` fetches it.")]
    age = data_age(recent.fetched_at, now)
    if not recent.runs:
        return [heading, section(f"HSS lists no sync runs ({age}).")]
    lines = [_recent_line(run) for run in recent.runs[:HOME_RECENT_RUNS]]
    return [heading, *pack(lines), context([f"{age} · `/hss-sync tasks` for every run"])]


def render_home(
    rows: Sequence[HomeRow],
    *,
    runs: Sequence[RunWatch] = (),
    recent: RecentRuns | None = None,
    now: float,
    notice: str | None = None,
) -> dict[str, Any]:
    """The ``views.publish`` view for the Home tab; ``recent`` None: no "Recent runs"."""
    blocks: list[dict[str, Any]] = [header("HSS image-sync watches")]
    if notice:
        blocks.append(section(f":warning: {escape_truncated(notice, 500)}"))
    add = button("Add a watch", ACTION_HOME_ADD_WATCH, "add", primary=True)
    blocks.append({"type": "actions", "elements": [add]})
    if recent is not None:
        blocks.extend(_recent_blocks(recent, now))
    if not rows and not runs:
        blocks.append(
            section(
                "No task is watched yet and no runs are followed. In a channel: "
                "`/hss-sync watch <task_id>` or `/hss-sync watch runs`."
            )
        )
    shown_runs = runs[:HOME_ROWS]
    if shown_runs:
        blocks.append(section("*Runs followed*"))
        blocks.extend(_run_row(w, now) for w in shown_runs)
    room = HOME_ROWS - len(shown_runs)
    if rows and room > 0 and shown_runs:
        blocks.append(section("*Tasks watched*"))
    blocks.extend(_row(r) for r in rows[:room])
    hidden = len(runs) - len(shown_runs) + len(rows) - min(len(rows), room)
    if hidden > 0:
        blocks.append(context([f"…and {hidden} more: `/hss-sync watches all`"]))
    return {"type": "home", "blocks": blocks}


def encode_home_runs_value(kind: RunKind | None, channel: str) -> str:
    field = kind.value if kind is not None else ALL_RUNS
    return json.dumps({"k": field, "c": channel}, separators=(",", ":"))


def decode_home_runs_value(value: str) -> tuple[RunKind | None, str]:
    """Slack hands button values back untrusted: check every field."""
    raw = _json_object(value)
    field, channel = raw.get("k"), raw.get("c")
    if not (isinstance(channel, str) and CONVERSATION_ID.fullmatch(channel)):
        raise _out_of_date()
    if field == ALL_RUNS:
        return None, channel
    if field not in {k.value for k in RunKind}:
        raise _out_of_date()
    return RunKind(field), channel


def _out_of_date() -> CommandError:
    return CommandError("That button is out of date; open the Home tab again.")


def _json_object(value: str) -> dict[str, Any]:
    if not isinstance(value, str) or len(value) > BUTTON_VALUE_MAX:
        raise _out_of_date()
    try:
        raw = json.loads(value)
    except (ValueError, TypeError, RecursionError):
        raise _out_of_date() from None
    if not isinstance(raw, dict):
        raise _out_of_date()
    return raw


def encode_home_value(task: TaskRef, channel: str) -> str:
    return json.dumps(
        {"p": task.project_id, "e": task.enterprise_project_id, "t": task.task_id, "c": channel},
        separators=(",", ":"),
        ensure_ascii=False,
    )


def decode_home_value(value: str) -> tuple[TaskRef, str]:
    """Slack hands button values back untrusted: check every field."""
    bad = _out_of_date()
    raw = _json_object(value)
    project, ep, task_id, channel = raw.get("p"), raw.get("e"), raw.get("t"), raw.get("c")
    if not (isinstance(project, str) and 0 < len(project) <= _PROJECT_MAX):
        raise bad
    if not (isinstance(channel, str) and CONVERSATION_ID.fullmatch(channel)):
        raise bad
    if not isinstance(task_id, str) or not (ep is None or isinstance(ep, str)):
        raise bad
    ref = TaskRef(project, validate_task_id(task_id), validate_ep(ep) if ep is not None else None)
    return ref, channel
