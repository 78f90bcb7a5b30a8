"""How watches read in Slack, pure: filters, state, and what a run watch follows. Shared by
the replies to watch commands, ``watches`` and the App Home."""

from __future__ import annotations

from bot.runs import RunKind
from bot.slack.blocks import section
from bot.slack.render import Message
from bot.slack.text import channel_mention, code, date_token, escape_truncated
from bot.storage.channel_watches import ChannelWatch
from bot.storage.run_watch_store import RunWatch


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
