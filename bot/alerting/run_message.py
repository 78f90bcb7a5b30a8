"""Pure Block Kit for run alerts: one channel message per run, lines in its thread, notices.

The message follows the task alerts' conventions (:mod:`bot.alerting.message`, whose helpers
it uses): rendered whole from a :class:`~bot.alerting.run_flips.RunDiff` so every update
replaces it in place, failures grouped by reason, every string from HSS escaped, and the same
buttons (Acknowledge, Mute or Unmute, Show details, Show all failed). Its first line counts
the **new**, **still failing** and recovered registries; each failing registry carries the
word ``new`` or ``still failing``, which people scan for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from bot.alerting.flips import Flip, group_by_reason
from bot.alerting.message import (
    FAILED_LINES,
    OTHER_LINES,
    THREAD_LINES,
    acknowledged,
    buttons_block,
    fallback_groups,
    more_line,
    plural,
    reason_text,
    shown_mute,
    who,
)
from bot.alerting.run_flips import NEW, Missed, RunDiff, began_at
from bot.models import LookupRequest
from bot.runs import RunKind, SyncRun
from bot.slack.blocks import context, header, pack, section
from bot.slack.render import Message, describe_filters
from bot.slack.text import code, date_token, escape_truncated, single_line, truncate

_NAME_SHOWN = 80
_ID_SHOWN = 64
_FALLBACK_SHOWN = 300
_KIND_WORDS = {RunKind.AUTO: "scheduled", RunKind.MANUAL: "manual"}


def counts_line(diff: RunDiff) -> str:
    """``2 new, 3 still failing, 1 recovered``: the three counts, always all three."""
    return f"{len(diff.new)} new, {len(diff.still)} still failing, {len(diff.recovered)} recovered"


def kind_word(run: SyncRun) -> str:
    kind = run.kind
    return _KIND_WORDS[kind] if kind is not None else "unknown kind"


def run_line(run: SyncRun) -> str:
    """The run named in mrkdwn: name and id, kind, start time, progress or outcome."""
    name = code(run.task_name, _NAME_SHOWN) or "_(no name)_"
    ident = code(run.task_id, _ID_SHOWN) or "?"
    start = began_at(run)
    began = (date_token(start) if start is not None else "") or "start time unknown"
    return f"Run {name} ({ident}) · {kind_word(run)} · began {began} · {run.outcome}"


def run_plain(run: SyncRun) -> str:
    """The run named in plain text (notification fallbacks), not yet escaped."""
    name = truncate(single_line(run.task_name), _NAME_SHOWN) or "(no name)"
    return f"{kind_word(run)} sync run {name} ({truncate(single_line(run.task_id), _ID_SHOWN)})"


def _marked(flip: Flip, diff: RunDiff) -> str:
    mark = diff.mark(flip.registry_id)
    word = "*new*" if mark == NEW else "_still failing_"
    return f"• {who(flip)} · {word}"


def _failing_lines(diff: RunDiff, limit: int) -> tuple[list[str], int]:
    lines: list[str] = []
    shown = 0
    for reason, members in group_by_reason(diff.failing):
        if shown >= limit:
            break
        lines.append(f"*Failed* ({plural(len(members))}): {reason_text(reason)}")
        for flip in members[: limit - shown]:
            lines.append(_marked(flip, diff))
            shown += 1
    return lines, len(diff.failing) - shown


def _summary(run: SyncRun, diff: RunDiff, scope: LookupRequest) -> str:
    counts = (
        f":new: *{len(diff.new)}* new   :repeat: *{len(diff.still)}* still failing   "
        f":white_check_mark: *{len(diff.recovered)}* recovered"
    )
    lines = [counts, run_line(run)]
    if run.total_num:
        lines.append(f"Run now: *{run.failed_num}* failed of {run.total_num} registries")
    filters = describe_filters(replace(scope, status=None))
    if filters:
        lines.append(f"Watching: {filters}")
    return "\n".join(lines)


def render_run_alert(
    scope: LookupRequest,
    run: SyncRun,
    diff: RunDiff,
    *,
    now: float,
    acked_by: str | None = None,
    muted_until: float | None = None,
) -> Message:
    """The run's channel message for a watch's ``scope`` (the run's task id and the watch's
    filters, which the buttons carry). ``acked_by``: the Slack user who acknowledged;
    ``muted_until``: the watch's mute (shown while ahead of ``now``)."""
    state = "ended: " + run.outcome if run.ended else run.outcome
    blocks = [header(f"Sync run: {counts_line(diff)} ({state})")]
    blocks.append(section(_summary(run, diff, scope)))
    failing, hidden = _failing_lines(diff, FAILED_LINES)
    if failing:
        blocks.append({"type": "divider"})
        blocks.extend(pack(failing + more_line(hidden, "failing registries: *Show all failed*")))
    if diff.recovered:
        recovered = [f"• {who(f)}" for f in diff.recovered[:OTHER_LINES]]
        lines = ["*Recovered* (failed in the previous run)", *recovered]
        blocks.extend(pack(lines + more_line(len(diff.recovered) - OTHER_LINES, "recovered")))
    muted = shown_mute(muted_until, now)
    parts = [acknowledged(acked_by)] if acked_by is not None else []
    if muted is not None:
        parts.append(f":no_bell: Muted until {date_token(muted) or 'later'}")
    seen = date_token(now)
    parts.append(f"as of {seen}" if seen else "as of now")
    blocks.append(context([" · ".join(parts)]))
    blocks.extend(
        buttons_block(scope, ack=acked_by is None, muted=muted is not None, more=hidden > 0)
    )
    return Message(text=_fallback(run, diff), blocks=blocks)


def _lookup_buttons(scope: LookupRequest) -> list[dict[str, Any]]:
    # A short notice shows the lookup: acknowledging or muting is the run message's.
    return buttons_block(scope, ack=False, muted=False, more=False, mute=False)


def _fallback(run: SyncRun, diff: RunDiff) -> str:
    raw = f"HSS {run_plain(run)}: {counts_line(diff)}"
    groups = fallback_groups(diff.failing)
    if groups:
        raw += " — " + "; ".join(groups)
    return escape_truncated(raw, _FALLBACK_SHOWN)


def render_all_recovered(scope: LookupRequest, run: SyncRun, diff: RunDiff) -> Message:
    """The one short message of a run with no failures that recovered everything the
    previous run of its kind failed."""
    n = len(diff.recovered)
    text = f":white_check_mark: *All recovered*: {plural(n)} that failed in the previous run"
    text += f" finished this time, and nothing failed.\n{run_line(run)}"
    blocks = [section(text), *_lookup_buttons(scope)]
    raw = f"HSS {run_plain(run)}: all recovered ({plural(n)}), nothing failed"
    return Message(text=escape_truncated(raw, _FALLBACK_SHOWN), blocks=blocks)


def render_end_line(run: SyncRun, diff: RunDiff) -> Message:
    """The thread line noting the run's end: its outcome and the counts."""
    counts = counts_line(diff)
    said = f"Run ended: *{run.outcome}* · {counts}"
    if run.total_num:
        said += f" · {run.failed_num} failed, {run.success_num} finished of {run.total_num}"
    end = run.end_time / 1000 if run.end_time else None
    when = date_token(end) if end is not None else ""
    blocks = [section(f":checkered_flag: {said}")]
    if when:
        blocks.append(context([f"ended {when}"]))
    raw = f"Run ended: {run.outcome}, {counts}"
    return Message(text=escape_truncated(raw, _FALLBACK_SHOWN), blocks=blocks)


def render_changes_line(
    added: Sequence[Flip], gone: Sequence[str], diff: RunDiff, *, now: float
) -> Message:
    """A thread line for what changed since the message last showed: registries newly
    failing (each marked new or still failing) and ids no longer failing."""
    lines: list[str] = []
    for flip in added[:THREAD_LINES]:
        lines.append(f":x: {_marked(flip, diff)[2:]} failed: {reason_text(flip.reason)}")
    lines += more_line(len(added) - THREAD_LINES, "failed")
    names = ", ".join(code(rid, _ID_SHOWN) for rid in gone[:THREAD_LINES])
    if gone:
        lines.append(f":arrows_counterclockwise: no longer failing: {names}")
        lines += more_line(len(gone) - THREAD_LINES, "no longer failing")
    seen = date_token(now)
    blocks = [*pack(lines or ["_No changes._"]), context([f"seen {seen}" if seen else "seen now"])]
    new = sum(1 for f in added if diff.mark(f.registry_id) == NEW)
    parts = [f"{len(added)} more failed ({new} new)"] if added else []
    parts += [f"{len(gone)} no longer failing"] if gone else []
    raw = ", ".join(parts) or "No changes"
    return Message(text=escape_truncated(raw, _FALLBACK_SHOWN), blocks=blocks)


def render_stuck(run: SyncRun, *, since: float) -> Message:
    """The notice for a run whose progress has not moved since ``since``."""
    when = date_token(since) or "a long time"
    text = f":hourglass: This run looks *stuck*: no progress since {when}.\n{run_line(run)}"
    raw = f"HSS {run_plain(run)} looks stuck: no progress at {run.outcome}"
    return Message(text=escape_truncated(raw, _FALLBACK_SHOWN), blocks=[section(text)])


def render_missed(missed: Missed, *, after: float) -> Message:
    """The notice for a scheduled run that did not come."""
    hours = f"{after / 3600:g} h"
    if missed.last is not None:
        text = f":alarm_clock: A scheduled sync run was *missed*: none began in the {hours} "
        text += f"since the last one.\nLast: {run_line(missed.last)}"
        raw = f"HSS: a scheduled sync run was missed; the last, {run_plain(missed.last)}, "
        raw += f"began over {hours} ago"
    else:
        when = date_token(missed.since) or "the watch was made"
        text = f":alarm_clock: A scheduled sync run was *missed*: none began since {when} "
        text += f"({hours} or more)."
        raw = f"HSS: a scheduled sync run was missed: none in {hours}"
    return Message(text=escape_truncated(raw, _FALLBACK_SHOWN), blocks=[section(text)])
