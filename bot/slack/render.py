"""Pure Block Kit rendering: answers, help and errors as :class:`Message`.

Every string from HSS or from users is escaped (mrkdwn) or length-limited (plain_text) here;
callers pass raw data. The per-item display budgets below are chosen so that a page stays
far inside Slack's limits whatever the data (see ``tests/test_render.py`` for the proof by
example): a page of ``PAGE_SIZE`` registries, each with its own 10,000-character reason,
renders in under 30 blocks and about 8,000 characters.

Block builders and Slack's limits live in :mod:`bot.slack.blocks`; button values in
:mod:`bot.slack.action_value`.
"""

from __future__ import annotations

import itertools
import logging
import math
import re
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bot.errors import CommandError
from bot.models import (
    REGISTRY_TYPES,
    UNKNOWN_STATUS,
    Answer,
    LookupRequest,
    Registry,
    SyncStatus,
    Totals,
)
from bot.slack.action_value import encode_action_value
from bot.slack.blocks import HEADER_MAX, button, context, header, pack, section
from bot.slack.command import USAGE
from bot.slack.run_text import Resolved, resolved_line
from bot.slack.text import USER_ID, code, data_age, date_token, escape_truncated, truncate

logger = logging.getLogger(__name__)

PAGE_SIZE = 20

ACTION_PAGE = "hss_page"
ACTION_PAGE_PREV = f"{ACTION_PAGE}_prev"
ACTION_PAGE_NEXT = f"{ACTION_PAGE}_next"
#: Slack wants action ids unique within a block, so Prev and Next differ; match both with this.
ACTION_PAGE_PATTERN = re.compile(rf"^{ACTION_PAGE}_(prev|next)$")
ACTION_REFRESH = "hss_refresh"
#: Refresh of a multi-page view, once its cost has been shown.
ACTION_REFRESH_CONFIRM = "hss_refresh_confirm"
ACTION_SHARE = "hss_share"
#: On an answer whose lookup gave up and is being tried again in the background.
ACTION_RETRY = "hss_retry"

# Display budgets (escaped characters) for untrusted text.
_NAME_SHOWN = 72
_TYPE_SHOWN = 24
_STATUS_SHOWN = 20
_REASON_SHOWN = 160
_NOTICE_SHOWN = 600
_ERROR_SHOWN = 1500
_FILTER_SHOWN = 60
_FALLBACK_SHOWN = 300

_EMOJI = {
    SyncStatus.FAILED.value: ":x:",
    SyncStatus.RUNNING.value: ":arrows_counterclockwise:",
    SyncStatus.FINISHED.value: ":white_check_mark:",
}
_UNKNOWN_EMOJI = ":grey_question:"
_RANK = {SyncStatus.FAILED.value: 0, SyncStatus.RUNNING.value: 1, SyncStatus.FINISHED.value: 3}
_UNKNOWN_RANK = 2
_GROUP_TITLE = {1: "*Running*", 2: "*Status unknown*", 3: "*Finished*"}
_DIGITS = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class Message:
    """``text`` is the notification fallback (escaped mrkdwn); ``blocks`` the Block Kit body."""

    text: str
    blocks: list[dict[str, Any]]


# --- registries --------------------------------------------------------------------------


def _rank(registry: Registry) -> int:
    return _RANK.get(registry.sync_status, _UNKNOWN_RANK)


def _reason(registry: Registry) -> str:
    return registry.failed_reason.strip()


def _natural(name: str) -> str:
    """Sort key putting ``reg-5`` before ``reg-41``."""
    return _DIGITS.sub(lambda m: m.group().zfill(24), name.casefold())


#: The display order of the last few answers, by identity of their registry tuple: paging a
#: 100,000-registry answer must not sort it again for every click.
_ORDER_MEMO: OrderedDict[int, tuple[Sequence[Registry], list[Registry]]] = OrderedDict()
_ORDER_MEMO_SIZE = 32


def _ordered(registries: Sequence[Registry]) -> list[Registry]:
    memo = _ORDER_MEMO.get(id(registries))
    if memo is not None and memo[0] is registries:
        return memo[1]
    ordered = _sort_for_display(registries)
    _ORDER_MEMO[id(registries)] = (registries, ordered)  # holding it keeps the id unique
    while len(_ORDER_MEMO) > _ORDER_MEMO_SIZE:
        _ORDER_MEMO.popitem(last=False)
    return ordered


def _sort_for_display(registries: Sequence[Registry]) -> list[Registry]:
    """Failed first, the most common reason first (so groups stay together), then the rest."""
    counts = Counter(_reason(r) for r in registries if _rank(r) == 0)

    def key(r: Registry) -> tuple[int, int, str, str, str]:
        failed = _rank(r) == 0
        reason = _reason(r) if failed else ""
        return (
            _rank(r),
            -counts[reason] if failed else 0,
            reason,
            _natural(r.registry_name),
            r.registry_id,
        )

    return sorted(registries, key=key)


def _registry_line(registry: Registry) -> str:
    emoji = _EMOJI.get(registry.sync_status, _UNKNOWN_EMOJI)
    name = code(registry.registry_name, _NAME_SHOWN)
    if not name:
        name = f"{code(registry.registry_id, _NAME_SHOWN) or '?'} _(no name)_"
    parts = [f"{emoji} {name}"]
    if registry.registry_type:
        parts.append(escape_truncated(registry.registry_type, _TYPE_SHOWN))
    odd_status = registry.sync_status not in _RANK and registry.sync_status != UNKNOWN_STATUS
    if odd_status and registry.sync_status:
        parts.append(f"status {code(registry.sync_status, _STATUS_SHOWN)}")
    return " · ".join(parts)


def _group_title(rank: int, reason: str, counts: Counter[str]) -> str:
    if rank != 0:
        return _GROUP_TITLE[rank]
    n = counts[reason]
    many = f"{n} registries" if n != 1 else "1 registry"
    shown = code(reason, _REASON_SHOWN) or "_no reason given_"
    return f"*Failed* ({many}): {shown}"


def _registry_blocks(
    page: Sequence[Registry], everything: Sequence[Registry]
) -> list[dict[str, Any]]:
    counts = Counter(_reason(r) for r in everything if _rank(r) == 0)
    blocks: list[dict[str, Any]] = []
    groups = itertools.groupby(page, key=lambda r: (_rank(r), _reason(r) if _rank(r) == 0 else ""))
    for (rank, reason), members in groups:
        lines = [_group_title(rank, reason, counts), *(_registry_line(r) for r in members)]
        blocks.extend(pack(lines))
    return blocks


# --- summary lines ---------------------------------------------------------------------------


def _count(value: int | None) -> str:
    return "?" if value is None else str(value)


def _totals_text(totals: Totals) -> str:
    parts = [
        f":x: *{_count(totals.failed)}* failed",
        f":arrows_counterclockwise: *{_count(totals.running)}* running",
        f":white_check_mark: *{_count(totals.finished)}* finished",
    ]
    if totals.unknown:
        parts.append(f"{_UNKNOWN_EMOJI} *{totals.unknown}* unknown")
    parts.append(f"{_count(totals.total)} in all")
    return "   ".join(parts)


def fetched_clock(fetched_at: float | None) -> str:
    """When the data was fetched, in each reader's own time zone."""
    if fetched_at is None:
        return ""
    token = date_token(fetched_at, "{time_secs}", fallback="%H:%M:%S UTC")
    return f" ({token})" if token else ""


def describe_filters(request: LookupRequest) -> str:
    """The active filters as escaped mrkdwn, e.g. ``failed · type=Harbor · name=`x```."""
    parts: list[str] = []
    if request.status is not None:
        parts.append(request.status.value)
    if request.types:
        parts.append("type=" + ",".join(t for t in REGISTRY_TYPES if t in request.types))
    if request.name is not None:
        parts.append("name=" + (code(request.name, _FILTER_SHOWN) or "?"))
    if request.ep is not None:
        parts.append("ep=" + (code(request.ep, _FILTER_SHOWN) or "?"))
    return " · ".join(parts)


def _empty_text(answer: Answer) -> str:
    if not answer.has_data:
        return "_No data yet._"
    status = answer.request.status
    what = f"No {status.value} registries" if status is not None else "No registries"
    filters = describe_filters(answer.request)
    return f"{what} match" + (f": {filters}." if filters else ".")


def _fallback(answer: Answer, notice: str | None) -> str:
    """The notification text: the counts that are known (never a ``?``), then the notice."""
    raw = f"HSS sync task {answer.request.task_id}: {_known_counts(answer)}"
    if notice:
        raw += f". {notice}"
    return escape_truncated(raw, _FALLBACK_SHOWN)


def _known_counts(answer: Answer) -> str:
    t = answer.totals
    counts = [(t.failed, "failed"), (t.running, "running"), (t.finished, "finished")]
    known = [f"{n} {label}" for n, label in counts if n is not None]
    if not known:  # a filtered view of a big task: what matched is all that is known
        if not answer.has_data:
            return "no data yet"
        n = len(answer.registries)
        return f"{n} matching {'registry' if n == 1 else 'registries'}"
    shown = ", ".join(known)
    if len(known) < len(counts) and t.size is not None:
        shown += f" of {t.size}"
    return shown


def _shared_by(user: str) -> str:
    if USER_ID.fullmatch(user):
        return f"Shared by <@{user}>"
    return f"Shared by {escape_truncated(user, _FILTER_SHOWN)}"


# --- buttons -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Offer:
    """What an answer's buttons offer besides paging and sharing: ``retry`` adds Retry now
    (a lookup that gave up is being tried again); ``confirm_calls`` turns Refresh into
    "Refresh (N calls)", pressed once its cost has been said."""

    retry: bool = False
    confirm_calls: int | None = None


def _actions(
    answer: Answer, page: int, pages: int, shareable: bool, offer: Offer
) -> list[dict[str, Any]]:
    request = answer.request
    try:
        here = encode_action_value(request, page)
        buttons: list[dict[str, Any]] = []
        if offer.retry:
            buttons.append(button("Retry now", ACTION_RETRY, here, primary=True))
        if page > 0:
            buttons.append(
                button("◀ Prev", ACTION_PAGE_PREV, encode_action_value(request, page - 1))
            )
        if page < pages - 1:
            buttons.append(
                button("Next ▶", ACTION_PAGE_NEXT, encode_action_value(request, page + 1))
            )
    except CommandError:
        # A request that never came from the parser: show the data, just without buttons.
        logger.warning("not rendering buttons for an invalid request")
        return []
    if offer.confirm_calls is not None:
        label = f"Refresh ({offer.confirm_calls} calls)"
        buttons.append(button(label, ACTION_REFRESH_CONFIRM, here))
    else:
        buttons.append(button("Refresh", ACTION_REFRESH, here))
    if shareable:
        buttons.append(button("Share to channel", ACTION_SHARE, here, primary=True))
    return [{"type": "actions", "elements": buttons}]


# --- public renderers ----------------------------------------------------------------------


def page_count(n_registries: int) -> int:
    return max(1, math.ceil(n_registries / PAGE_SIZE))


def render_answer(
    answer: Answer,
    *,
    page: int = 0,
    now: float,
    notice: str | None = None,
    shareable: bool = True,
    shared_by: str | None = None,
    offer: Offer | None = None,
    resolved: Resolved | None = None,
) -> Message:
    """One lookup answer; ``page`` is clamped into range; ``offer``: extra buttons;
    ``resolved``: the task reference the lookup was asked with, and the run it named."""
    ordered = _ordered(answer.registries)
    pages = page_count(len(ordered))
    page = min(max(page, 0), pages - 1)
    shown = ordered[page * PAGE_SIZE : (page + 1) * PAGE_SIZE]

    blocks = [header(f"HSS image sync · task {answer.request.task_id}")]
    if resolved is not None:
        blocks.append(section(resolved_line(resolved)))
    if notice:
        blocks.append(section(f":information_source: {escape_truncated(notice, _NOTICE_SHOWN)}"))
    t = answer.totals
    if answer.has_data or any(n is not None for n in (t.failed, t.running, t.finished, t.size)):
        blocks.append(section(_totals_text(answer.totals)))
    blocks.append({"type": "divider"})
    blocks.extend(_registry_blocks(shown, ordered) if shown else [section(_empty_text(answer))])
    blocks.append(context(_context_parts(answer, page, pages, len(ordered), now, shared_by)))
    blocks.extend(_actions(answer, page, pages, shareable, offer or Offer()))
    return Message(text=_fallback(answer, notice), blocks=blocks)


def _context_parts(
    answer: Answer, page: int, pages: int, n: int, now: float, shared_by: str | None
) -> list[str]:
    parts = [data_age(answer.fetched_at, now) + fetched_clock(answer.fetched_at)]
    filters = describe_filters(answer.request)
    parts.append(f"filters: {filters}" if filters else "no filters")
    if n:
        first, last = page * PAGE_SIZE + 1, min(n, (page + 1) * PAGE_SIZE)
        parts.append(f"page {page + 1} of {pages} · registries {first}–{last} of {n}")
    if shared_by:
        parts.append(_shared_by(shared_by))
    return parts


def render_help(command_name: str = "/hss-sync") -> Message:
    def example(args: str, what: str) -> str:
        return f"• {code(f'{command_name} {args}', 200)} {what}"

    lines = [
        "*Usage:* " + code(USAGE.replace("/hss-sync", command_name, 1), 400),
        example("task-42", "every registry of task `task-42`"),
        example("task-42 failed", "only the failed ones, grouped by reason"),
        example(
            "task-42 running type=Harbor,Jfrog",
            f"filter by registry type ({', '.join(REGISTRY_TYPES)})",
        ),
        example('task-42 name="prod harbor" ep=0', "one registry, in enterprise project `0`"),
        example(
            "latest failed",
            "the newest sync run's failures (`latest-auto`, `latest-manual`: of one kind); "
            "a reference works wherever a task id does",
        ),
        "*Sync runs:*",
        example("tasks", "the runs, newest first, with their counts and a Show failed button"),
        example('tasks auto name="nightly" failed', "scheduled runs named so, with failures"),
        "*Alerts in a channel:*",
        example("watch task-42 #ops type=Harbor", "tell #ops when a Harbor registry fails"),
        example(
            "watch runs auto #ops",
            "follow every new scheduled run in #ops (`manual`, or neither for every run); "
            "`unwatch runs auto`, `mute runs auto 24h` and `unmute runs auto` change it",
        ),
        example("watch", "a form for a new watch (runs or a task, channel, filters)"),
        example("watches all", "what is watched, in every channel"),
        example("mute task-42 24h", "quiet for a day (`unmute` to undo); `unwatch` to stop"),
        example("help", "this help"),
    ]
    note = (
        "Answers are only visible to you; use *Share to channel* to post one. "
        "HSS allows 5 calls a minute, so answers may come from recent data (its age is shown)."
    )
    title = truncate(f"{command_name} help", HEADER_MAX)
    # Sections of whole lines: a long command name must not push one past Slack's limit.
    blocks = [header(title), *pack(lines), context([note])]
    return Message(text=escape_truncated(title, _FALLBACK_SHOWN), blocks=blocks)


def render_error(text: str) -> Message:
    """A short ephemeral error reply; ``text`` is raw and gets escaped here."""
    shown = escape_truncated(text, _ERROR_SHOWN)
    return Message(
        text=escape_truncated(text, _FALLBACK_SHOWN), blocks=[section(f":warning: {shown}")]
    )
