"""Pure Block Kit for flip alerts: one channel message per incident, lines in its thread.

The channel message is rendered whole from an :class:`~bot.alerting.flips.Incident` (never from a
diff), so every later refresh, acknowledgement or mute re-renders it and ``chat.update``
replaces it in place, as GitHub's Slack app does with its one parent message per item.
Failures are grouped by reason (Alertmanager), with Acknowledge / Mute buttons (PagerDuty).
What happened in one refresh goes to the thread as :func:`render_thread_line`.

Every string from HSS or users is escaped here (see :mod:`bot.slack.text`); the per-section line
budgets keep any incident, whatever its size or text, far inside Slack's limits.

Button values are lookup requests in :mod:`bot.slack.action_value`'s format (task id and
enterprise project; Show all also the watch's filters and ``failed``);
:func:`decode_alert_action` re-validates what Slack sends back.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from bot.alerting.flips import AlertPlan, Flip, FlipKind, Incident, by_name, group_by_reason
from bot.errors import CommandError
from bot.models import LookupRequest, SyncStatus, Totals
from bot.slack.action_value import decode_action_value, encode_action_value
from bot.slack.blocks import button, context, header, pack, section
from bot.slack.render import Message, describe_filters
from bot.slack.text import USER_ID, code, date_token, escape_truncated, single_line, truncate

logger = logging.getLogger(__name__)

ACTION_ACK = "hss_alert_ack"
ACTION_MUTE_1H = "hss_alert_mute_1h"
ACTION_MUTE_24H = "hss_alert_mute_24h"
ACTION_UNMUTE = "hss_alert_unmute"
ACTION_DETAILS = "hss_alert_details"
ACTION_ALL = "hss_alert_all"
#: Matches every alert button, for one Bolt listener.
ACTION_PATTERN = re.compile(r"^hss_alert_(ack|mute_1h|mute_24h|unmute|details|all)$")
#: How long each mute button mutes the task, in seconds.
MUTE_SECONDS = {ACTION_MUTE_1H: 3600, ACTION_MUTE_24H: 86_400}

#: Registry lines shown in the message: failing ones, then each other group.
FAILED_LINES = 12
OTHER_LINES = 5
#: Lines per kind in one thread message.
THREAD_LINES = 8

_NAME_SHOWN = 72
_TYPE_SHOWN = 24
_REASON_SHOWN = 160
_FALLBACK_SHOWN = 300
#: The notification text lists this many reasons, each with this many names.
_FALLBACK_REASONS = 3
_FALLBACK_NAMES = 3
_FALLBACK_REASON_SHOWN = 60
_BAD_VALUE = "This button's data is out of date or damaged; run /hss-sync again."


@dataclass(frozen=True, slots=True)
class AlertAction:
    """A decoded alert button: which one, and the lookup it stands for."""

    action_id: str
    request: LookupRequest

    @property
    def mute_seconds(self) -> int | None:
        return MUTE_SECONDS.get(self.action_id)


# --- button values ----------------------------------------------------------------------------


def _task_only(scope: LookupRequest) -> LookupRequest:
    return LookupRequest(task_id=scope.task_id, ep=scope.ep)


def _all_failed(scope: LookupRequest) -> LookupRequest:
    return replace(scope, status=SyncStatus.FAILED)


def encode_alert_value(action_id: str, scope: LookupRequest) -> str:
    """The value of alert button ``action_id`` for a watch ``scope`` (task, ep, filters).

    Show all carries the watch's filters and ``failed`` (the lookup that lists every failing
    registry); every other button only the task and enterprise project.
    Raises :class:`CommandError` for an unknown action or a request the parser would refuse.
    """
    if not ACTION_PATTERN.fullmatch(action_id):
        raise CommandError(_BAD_VALUE)
    request = _all_failed(scope) if action_id == ACTION_ALL else _task_only(scope)
    return encode_action_value(request, 0)


def decode_alert_action(action_id: str, value: str) -> AlertAction:
    """Inverse of :func:`encode_alert_value`; :class:`CommandError` on anything else."""
    if not isinstance(action_id, str) or not ACTION_PATTERN.fullmatch(action_id):
        raise CommandError(_BAD_VALUE)
    request, page = decode_action_value(value)
    expected = _all_failed(request) if action_id == ACTION_ALL else _task_only(request)
    if page != 0 or request != expected:
        raise CommandError(_BAD_VALUE)
    return AlertAction(action_id=action_id, request=request)


# --- lines --------------------------------------------------------------------------------------


def who(flip: Flip) -> str:
    """A registry as a line shows it: its name in code (or its id), and its type."""
    name = code(flip.name, _NAME_SHOWN)
    if not name:
        name = f"{code(flip.registry_id, _NAME_SHOWN) or '?'} _(no name)_"
    kind = escape_truncated(flip.type, _TYPE_SHOWN)
    return f"{name} · {kind}" if kind else name


def reason_text(reason: str) -> str:
    """A failure reason in code, or that none was given."""
    return code(reason, _REASON_SHOWN) or "_no reason given_"


def plural(n: int, one: str = "registry", many: str = "registries") -> str:
    return f"{n} {one if n == 1 else many}"


def more_line(n: int, what: str) -> list[str]:
    """``_+n more what_`` when ``n`` were left out."""
    return [f"_+{n} more {what}_"] if n > 0 else []


def _failing_lines(incident: Incident, limit: int) -> tuple[list[str], int]:
    """Grouped failure lines, at most ``limit`` registries; returns the lines and how many
    failing registries were left out."""
    lines: list[str] = []
    shown = 0
    for reason, members in group_by_reason(incident.failing):
        if shown >= limit:
            break
        lines.append(f"*Failed* ({plural(len(members))}): {reason_text(reason)}")
        for flip in members[: limit - shown]:
            mark = " · :repeat: flapping" if flip.registry_id in incident.flapping else ""
            lines.append(f"• {who(flip)}{mark}")
            shown += 1
    return lines, len(incident.failing) - shown


def _listed(title: str, flips: Sequence[Flip], limit: int, what: str) -> list[str]:
    if not flips:
        return []
    ordered = sorted(flips, key=by_name)
    lines = [title, *(f"• {who(f)}" for f in ordered[:limit])]
    return lines + more_line(len(flips) - limit, what)


# --- the channel message ---------------------------------------------------------------------


def resolution(incident: Incident) -> str:
    """How a resolved incident ended: a removed registry never counts as recovered."""
    kinds = {f.kind for f in incident.latest.values()}
    if FlipKind.RECOVERY in kinds:
        return "All recovered"  # removed ones are listed apart, as not recoveries
    if kinds == {FlipKind.REMOVED}:
        return "All removed from the task"
    return "Nothing failing any more"


def _resolved_kind(incident: Incident) -> FlipKind | None:
    """The kind the resolution's headline already counts (not repeated beside it)."""
    if not incident.resolved:
        return None
    kinds = {f.kind for f in incident.latest.values()}
    return FlipKind.RECOVERY if FlipKind.RECOVERY in kinds else next(iter(kinds), None)


def _headline(incident: Incident, *, bold: bool = False) -> str:
    """``All recovered (2 registries)``: the resolution with how many it concerns."""
    said = f"*{resolution(incident)}*" if bold else resolution(incident)
    kind = _resolved_kind(incident)
    return f"{said} ({plural(len(incident.of_kind(kind)))})" if kind is not None else said


def _summary(incident: Incident, scope: LookupRequest, totals: Totals | None) -> str:
    failing = len(incident.failing)
    counts = [
        (FlipKind.RETRY, ":arrows_counterclockwise:", "retrying"),
        (FlipKind.RECOVERY, ":white_check_mark:", "recovered"),
        (FlipKind.REMOVED, ":wastebasket:", "removed"),
    ]
    parts = [f":x: *{plural(failing)}* failing"] if failing or not incident.resolved else []
    if incident.resolved and incident.latest:
        parts.append(f":white_check_mark: {_headline(incident, bold=True)}")
    for kind, emoji, label in counts:
        n = len(incident.of_kind(kind))
        if n and kind is not _resolved_kind(incident):
            parts.append(f"{emoji} *{n}* {label}")
    lines = ["   ".join(parts) or "_No changes yet._"]
    if totals is not None and totals.failed is not None:
        size = totals.total
        of = f" of {size}" if size is not None else ""
        lines.append(f"Task now: *{totals.failed}* failed{of} registries")
    filters = describe_filters(replace(scope, status=None))
    if filters:
        lines.append(f"Watching: {filters}")
    return "\n".join(lines)


def _context(incident: Incident, now: float, acked_by: str | None, muted: float | None) -> str:
    parts: list[str] = []
    if acked_by is not None:
        parts.append(acknowledged(acked_by))
    if muted is not None:
        parts.append(f":no_bell: Muted until {date_token(muted) or 'later'}")
    last = max((f.at for f in incident.latest.values()), default=now)
    seen = date_token(last)
    parts.append(f"last change {seen}" if seen else "last change: time unknown")
    return " · ".join(parts)


def acknowledged(user: str) -> str:
    """Who acknowledged, as the alert's context shows it (a mention only of a user id)."""
    if USER_ID.fullmatch(user):
        return f":eyes: Acknowledged by <@{user}>"
    logger.warning("not showing an acknowledging user id that is not a Slack user id")
    return ":eyes: Acknowledged"


def shown_mute(muted_until: float | None, now: float) -> float | None:
    """The mute to show: a finite time still ahead of ``now``, else None."""
    if muted_until is None or not math.isfinite(muted_until) or muted_until <= now:
        return None
    return muted_until


def buttons_block(
    scope: LookupRequest, *, ack: bool, muted: bool, more: bool, mute: bool = True
) -> list[dict[str, Any]]:
    """The alert buttons for a watch ``scope``: Acknowledge (``ack``), Mute or Unmute
    (``mute``; Unmute when ``muted``), Show details, and Show all failed (``more``: some
    failing registries were left out)."""
    try:
        ids = [ACTION_ACK] if ack else []
        if mute:
            ids += [ACTION_UNMUTE] if muted else [ACTION_MUTE_1H, ACTION_MUTE_24H]
        ids += [ACTION_DETAILS] + ([ACTION_ALL] if more else [])
        values = {action: encode_alert_value(action, scope) for action in ids}
    except CommandError:
        # A scope that never came from the parser: show the alert, just without buttons.
        logger.warning("not rendering alert buttons for an invalid watch")
        return []
    labels = {
        ACTION_ACK: "Acknowledge",
        ACTION_MUTE_1H: "Mute 1 h",
        ACTION_MUTE_24H: "Mute 24 h",
        ACTION_UNMUTE: "Unmute",
        ACTION_DETAILS: "Show details",
        ACTION_ALL: "Show all failed",
    }
    elements = [
        button(labels[a], a, values[a], primary=a == ACTION_ACK) for a in ids if a in values
    ]
    return [{"type": "actions", "elements": elements}]


def _fallback(task_id: str, incident: Incident) -> str:
    """The notification text: failures under their own reasons (or how it ended), then the
    other news; escaped whole."""
    if incident.resolved:
        head = _headline(incident)
        raw = f"HSS sync task {task_id}: {head[:1].lower()}{head[1:]}"
    else:
        raw = f"HSS sync task {task_id}: {plural(len(incident.failing))} failing"
        if incident.failing:
            raw += " — " + "; ".join(fallback_groups(incident.failing))
    others = [
        (FlipKind.RETRY, "retrying"),
        (FlipKind.RECOVERY, "recovered"),
        (FlipKind.REMOVED, "removed from the task"),
    ]
    news = [
        f"{len(incident.of_kind(kind))} {label}"
        for kind, label in others
        if incident.of_kind(kind) and kind is not _resolved_kind(incident)
    ]
    if news:
        raw += ". " + ", ".join(news)
    return escape_truncated(raw, _FALLBACK_SHOWN)


def fallback_groups(failing: Sequence[Flip]) -> list[str]:
    """``reason (n): name, name…`` for the first few reasons, each with its own names."""
    groups = group_by_reason(failing)
    shown = []
    for reason, members in groups[:_FALLBACK_REASONS]:
        said = truncate(single_line(reason), _FALLBACK_REASON_SHOWN) or "no reason given"
        names = ", ".join(
            truncate(single_line(f.name or f.registry_id), _NAME_SHOWN)
            for f in members[:_FALLBACK_NAMES]
        )
        more = f" +{len(members) - _FALLBACK_NAMES} more" if len(members) > _FALLBACK_NAMES else ""
        shown.append(f"{said} ({len(members)}): {names}{more}")
    if len(groups) > _FALLBACK_REASONS:
        shown.append(f"+{len(groups) - _FALLBACK_REASONS} more reasons")
    return shown


def render_alert(
    scope: LookupRequest,
    incident: Incident,
    *,
    now: float,
    totals: Totals | None = None,
    acked_by: str | None = None,
    muted_until: float | None = None,
) -> Message:
    """The channel message for an incident of the watch ``scope`` (task, ep, filters).

    ``acked_by`` is the Slack user id who acknowledged; ``muted_until`` an epoch time (shown
    while in the future); ``totals`` the task's current counts, when known.
    """
    title = resolution(incident) if incident.resolved and incident.latest else "Sync failures"
    blocks = [header(f"{title} · task {scope.task_id}")]
    blocks.append(section(_summary(incident, scope, totals)))
    failing, hidden = _failing_lines(incident, FAILED_LINES)
    if failing:
        blocks.append({"type": "divider"})
        blocks.extend(pack(failing + more_line(hidden, "failing registries: *Show all failed*")))
    sections = [
        ("*Retrying* (failed → running)", FlipKind.RETRY, "retrying"),
        ("*Recovered*", FlipKind.RECOVERY, "recovered"),
        ("*Removed from the task* (not recoveries)", FlipKind.REMOVED, "removed"),
    ]
    for title_line, kind, what in sections:
        blocks.extend(pack(_listed(title_line, incident.of_kind(kind), OTHER_LINES, what)))
    muted = shown_mute(muted_until, now)
    blocks.append(context([_context(incident, now, acked_by, muted)]))
    ack = acked_by is None and not incident.resolved
    blocks.extend(buttons_block(scope, ack=ack, muted=muted is not None, more=hidden > 0))
    return Message(text=_fallback(scope.task_id, incident), blocks=blocks)


# --- the thread -------------------------------------------------------------------------------


def _thread_lines(plan: AlertPlan) -> list[str]:
    lines: list[str] = []
    failed = sorted(plan.failures, key=by_name)
    lines += [f":x: {who(f)} failed: {reason_text(f.reason)}" for f in failed[:THREAD_LINES]]
    lines += more_line(len(failed) - THREAD_LINES, "failed")
    flapping = sorted(plan.flapping, key=by_name)
    for flip in flapping[:THREAD_LINES]:
        times = plan.flap_counts.get(flip.registry_id, 0)
        count = f" ({times} times in the last hour)" if times else ""
        lines.append(f":repeat: {who(flip)} failed again{count}: flapping, not re-alerted")
    lines += more_line(len(flapping) - THREAD_LINES, "flapping")
    simple = [
        (plan.retries, ":arrows_counterclockwise:", "is retrying (was failed)", "retrying"),
        (plan.recoveries, ":white_check_mark:", "recovered", "recovered"),
        (plan.removed, ":wastebasket:", "was removed from the task", "removed"),
    ]
    for flips, emoji, verb, what in simple:
        ordered = sorted(flips, key=by_name)
        lines += [f"{emoji} {who(f)} {verb}" for f in ordered[:THREAD_LINES]]
        lines += more_line(len(ordered) - THREAD_LINES, what)
    return lines


def _thread_fallback(plan: AlertPlan) -> str:
    counts = [
        (len(plan.failures), "failed"),
        (len(plan.flapping), "flapping"),
        (len(plan.retries), "retrying"),
        (len(plan.recoveries), "recovered"),
        (len(plan.removed), "removed"),
    ]
    text = ", ".join(f"{n} {label}" for n, label in counts if n) or "no changes"
    return escape_truncated(text[0].upper() + text[1:], _FALLBACK_SHOWN)


def render_thread_line(plan: AlertPlan, *, now: float) -> Message:
    """One thread reply for what a refresh changed: failures with their reasons, flapping
    registries (summarised, not re-alerted), retries, recoveries and removals."""
    lines = _thread_lines(plan) or ["_No changes._"]
    at = max((f.at for f in plan.in_order()), default=now)
    seen = date_token(at)
    blocks = [*pack(lines), context([f"seen {seen}" if seen else "seen just now"])]
    return Message(text=_thread_fallback(plan), blocks=blocks)
