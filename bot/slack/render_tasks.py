"""Pure Block Kit for ``/hss-sync tasks``: the sync runs newest first, a page at a time, each
with a "Show failed" button that runs the lookup of its failed registries.

A page of :data:`TASKS_PAGE_SIZE` runs is one section each (about 400 characters at most:
names and reasons are cut), so it stays far inside Slack's 50 blocks and message size.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bot.errors import CommandError
from bot.models import LookupRequest, SyncStatus
from bot.runs import SyncRun
from bot.slack.action_value import encode_action_value, encode_tasks_value
from bot.slack.blocks import button, context, header, section
from bot.slack.render import Message, fetched_clock
from bot.slack.run_text import counts_text, kind_text, outcome_text, run_time, run_title
from bot.slack.tasks_command import KIND_NAMES, ListTasks
from bot.slack.text import code, data_age, escape_truncated

logger = logging.getLogger(__name__)

TASKS_PAGE_SIZE = 10
ACTION_TASKS_PAGE = "hss_tasks_page"
ACTION_TASKS_PREV = f"{ACTION_TASKS_PAGE}_prev"
ACTION_TASKS_NEXT = f"{ACTION_TASKS_PAGE}_next"
ACTION_TASKS_PAGE_PATTERN = re.compile(rf"^{ACTION_TASKS_PAGE}_(prev|next)$")
#: A run's "Show failed": its value is a lookup's (the run's task id, status failed).
ACTION_TASKS_FAILED = "hss_tasks_failed"

_NOTICE_SHOWN = 600
_FALLBACK_SHOWN = 300
_FILTER_SHOWN = 60


@dataclass(frozen=True, slots=True)
class RunList:
    """What a ``tasks`` answer shows: the query, the runs matching it (newest first) and
    when the list they come from was fetched (None: nothing known yet)."""

    query: ListTasks
    runs: tuple[SyncRun, ...]
    fetched_at: float | None


def describe_query(query: ListTasks) -> str:
    parts = []
    if query.kind is not None:
        parts.append(KIND_NAMES[query.kind])
    if query.name is not None:
        parts.append("name=" + (code(query.name, _FILTER_SHOWN) or "?"))
    if query.failed:
        parts.append("failed")
    return " · ".join(parts)


def page_count(n_runs: int) -> int:
    return max(1, math.ceil(n_runs / TASKS_PAGE_SIZE))


def _run_block(run: SyncRun) -> dict[str, Any]:
    lines = [
        run_title(run),
        f"{kind_text(run)} · began {run_time(run.begin_time)} · "
        f"ended {run_time(run.end_time) if run.ended else '—'} · {outcome_text(run)}",
        counts_text(run),
    ]
    block = section("\n".join(lines))
    try:
        value = encode_action_value(LookupRequest(run.task_id, SyncStatus.FAILED), 0)
    except CommandError:
        # An id HSS sent that no lookup accepts (blank, invisible characters): no button.
        return block
    block["accessory"] = button("Show failed", ACTION_TASKS_FAILED, value)
    return block


def _empty_text(listing: RunList) -> str:
    if listing.fetched_at is None:
        return "_No data yet._"
    filters = describe_query(listing.query)
    return "No sync runs match" + (f": {filters}." if filters else ".")


def _paging(query: ListTasks, page: int, pages: int) -> list[dict[str, Any]]:
    buttons = []
    if page > 0:
        buttons.append(button("◀ Prev", ACTION_TASKS_PREV, encode_tasks_value(query, page - 1)))
    if page < pages - 1:
        buttons.append(button("Next ▶", ACTION_TASKS_NEXT, encode_tasks_value(query, page + 1)))
    return [{"type": "actions", "elements": buttons}] if buttons else []


def render_tasks(
    listing: RunList, *, page: int = 0, now: float, notice: str | None = None
) -> Message:
    """One page of the run list; ``page`` is clamped into range; ``notice`` is raw text."""
    runs: Sequence[SyncRun] = listing.runs
    pages = page_count(len(runs))
    page = min(max(page, 0), pages - 1)
    shown = runs[page * TASKS_PAGE_SIZE : (page + 1) * TASKS_PAGE_SIZE]
    blocks = [header("HSS image sync · runs")]
    if notice:
        blocks.append(section(f":information_source: {escape_truncated(notice, _NOTICE_SHOWN)}"))
    blocks.append({"type": "divider"})
    blocks.extend(_run_block(run) for run in shown)
    if not shown:
        blocks.append(section(_empty_text(listing)))
    filters = describe_query(listing.query)
    parts = [data_age(listing.fetched_at, now) + fetched_clock(listing.fetched_at)]
    parts.append(f"filters: {filters}" if filters else "no filters")
    if runs:
        first, last = page * TASKS_PAGE_SIZE + 1, min(len(runs), (page + 1) * TASKS_PAGE_SIZE)
        parts.append(f"page {page + 1} of {pages} · runs {first}–{last} of {len(runs)}")
    parts.append("newest first, of the newest 200 runs HSS lists")
    blocks.append(context(parts))
    blocks.extend(_paging(listing.query, page, pages))
    return Message(text=_fallback(listing, notice), blocks=blocks)


def _fallback(listing: RunList, notice: str | None) -> str:
    runs = listing.runs
    failing = sum(1 for run in runs if run.failed_num)
    raw = f"HSS sync runs: {len(runs)} listed, {failing} with failures"
    if listing.fetched_at is None:
        raw = "HSS sync runs: no data yet"
    if notice:
        raw += f". {notice}"
    return escape_truncated(raw, _FALLBACK_SHOWN)
