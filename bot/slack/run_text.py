"""Sync runs in mrkdwn, pure: a run's title, kind, times and outcome, and the line that says
which run a task reference (``latest``...) named. Everything from HSS is escaped here."""

from __future__ import annotations

from dataclasses import dataclass

from bot.runs import RunKind, SyncRun
from bot.slack.text import code, date_token, escape_truncated

_NAME_SHOWN = 80
_ID_SHOWN = 70
_TYPE_SHOWN = 24
_REASON_SHOWN = 120

KIND_WORDS = {RunKind.AUTO: "scheduled", RunKind.MANUAL: "manual"}


@dataclass(frozen=True, slots=True)
class Resolved:
    """A task reference as typed (``latest-auto``) and the run it named then."""

    reference: str
    run: SyncRun


def kind_text(run: SyncRun) -> str:
    kind = run.kind
    if kind is not None:
        return KIND_WORDS[kind]
    return code(run.task_type, _TYPE_SHOWN) or "unknown kind"


def run_time(ms: int | None) -> str:
    """A run's ``begin_time``/``end_time`` (ms) as a Slack date token; ``—`` without one."""
    if not ms:
        return "—"
    return date_token(ms / 1000) or "—"


def run_title(run: SyncRun) -> str:
    """The name and the id, each shown literally (code spans: a name holding ``*`` or
    ``_`` cannot restyle the line)."""
    ident = code(run.task_id, _ID_SHOWN) or "?"
    name = code(run.task_name, _NAME_SHOWN) or "_(no name)_"
    return f"{name} · id {ident}"


def outcome_text(run: SyncRun) -> str:
    emoji = ":arrows_counterclockwise:" if not run.ended else ":white_check_mark:"
    if run.ended and run.outcome != "finished":
        emoji = ":warning:"
    text = f"{emoji} {escape_truncated(run.outcome, 40)}"
    if run.failed_reason.strip():
        text += f" ({code(run.failed_reason, _REASON_SHOWN)})"
    return text


def counts_text(run: SyncRun) -> str:
    failed = f":x: *{run.failed_num}* failed" if run.failed_num else "0 failed"
    return f"{failed} · {run.success_num} finished · {run.total_num} in all"


def resolved_line(resolved: Resolved) -> str:
    """``latest-auto`` is ``Nightly`` · id ``t-1`` (scheduled, began <date>)."""
    run = resolved.run
    reference = code(resolved.reference.lower(), 20)
    return (
        f":pushpin: {reference} is {run_title(run)} "
        f"({kind_text(run)}, began {run_time(run.begin_time)})"
    )
