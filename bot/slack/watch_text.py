"""How watches read in Slack, pure: filters, state, what a run watch follows, and the
``watches`` list. Shared by the replies to watch commands, ``watches`` and the App Home."""

from __future__ import annotations

from bot.runs import RunKind
from bot.slack.blocks import pack, section
from bot.slack.render import Message
from bot.slack.text import channel_mention, code, date_token, escape_truncated
from bot.storage.channel_watches import ChannelWatch
from bot.storage.run_watch_store import RunWatch
from bot.storage.watch_store import Watch


def section_message(mrkdwn: str) -> Message:
    """A reply of one mrkdwn section, which is also its notification text."""
    return Message(text=mrkdwn, blocks=[section(mrkdwn)])


def filters_text(types: frozenset[str], name: str | None) -> str:
    parts = []
    if types:
        parts.append("type=" + ",".join(sorted(types)))
    if name is not None:
        parts.append("name=" + code(name, 80))
    return " ".join(parts) if parts else "all registries"


def state_text(w: ChannelWatch, now: float) -> str:
    """``active``, paused (with Slack's reason) or muted (until when)."""
    if w.paused_reason is not None:
        return f":pause_button: paused ({escape_truncated(w.paused_reason, 60)})"
    if w.muted(now) and w.muted_until is not None:
        return f":mute: muted until {date_token(w.muted_until)}"
    return "active"


#: Kind -> what its run watch is about as a noun, and which runs it follows in full.
_RUNS: dict[RunKind | None, tuple[str, str]] = {
    None: ("all runs", "every run, scheduled (auto) or manual"),
    RunKind.AUTO: ("auto runs", "every scheduled (auto) run"),
    RunKind.MANUAL: ("manual runs", "every manual run"),
}


def runs_text(kind: RunKind | None) -> str:
    """What a run watch of ``kind`` is about, as a noun: ``auto runs``, ``all runs``."""
    return _RUNS[kind][0]


def followed_text(kind: RunKind | None) -> str:
    """Which runs a run watch of ``kind`` follows, in full."""
    return _RUNS[kind][1]


def run_watch_line(w: RunWatch, now: float) -> str:
    where = channel_mention(w.channel)
    what = filters_text(w.types, w.name)
    return f"• {runs_text(w.kind)} in {where} · {what} · {state_text(w, now)}"


#: Lines ``watches`` shows at most.
_LIST_SHOWN = 40


def watch_line(w: Watch, now: float) -> str:
    last = f", last alert {date_token(w.last_alert_at)}" if w.last_alert_at else ""
    where = channel_mention(w.channel)
    what = filters_text(w.types, w.name)
    return f"• {code(w.task.task_id, 70)} in {where} · {what} · {state_text(w, now)}{last}"


def render_watch_list(
    watches: list[Watch], runs: list[RunWatch], *, now: float, everywhere: bool
) -> Message:
    """Run watches first (a channel has at most three), then task watches."""
    if not watches and not runs:
        where = "in any channel" if everywhere else "in this channel"
        return section_message(
            f"No task is watched {where}, and no runs are followed. Start with "
            "`/hss-sync watch <task_id>` or `/hss-sync watch runs`."
        )
    lines = [run_watch_line(w, now) for w in runs] + [watch_line(w, now) for w in watches]
    shown = lines[:_LIST_SHOWN]
    if len(lines) > _LIST_SHOWN:
        shown.append(f"_…and {len(lines) - _LIST_SHOWN} more_")
    title = "Watches in every channel" if everywhere else "Watches in this channel"
    # Sections of whole lines: forty lines with long names would pass Slack's 3000 in one.
    shown.insert(0, f"*{title}* ({len(lines)})")
    return Message(text="\n".join(shown), blocks=pack(shown))
