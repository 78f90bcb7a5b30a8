"""``/hss-sync tasks`` in Slack, and its paging buttons.

Answered at once from the runs' snapshot, with its age, as lookups are: when the snapshot is
older than ``fresh_seconds`` (``HSS_FRESH_SECONDS``) the first answer says fresh data is
coming, and one shared list call (:meth:`bot.runs_service.RunsService.refresh`) brings the
answer that replaces it. Paging reads the snapshot only: it never calls HSS. "Show failed"
on a run is a lookup (:meth:`bot.slack.lookup_handlers.LookupHandlers.on_show_failed`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.context.respond.async_respond import AsyncRespond

from bot.errors import BotError, CommandError, RunsUnavailable
from bot.hss.budget import Priority
from bot.runs_service import RunsService, filter_runs
from bot.slack.action_value import decode_tasks_value
from bot.slack.followups import FAILED, payload, say_error
from bot.slack.render import Message, render_error
from bot.slack.render_tasks import RunList, render_tasks
from bot.slack.request_shape import first_action
from bot.slack.tasks_command import ListTasks
from bot.storage.runs_store import RunsSnapshot

logger = logging.getLogger(__name__)

Reply = Callable[[Message], Awaitable[None]]

FETCHING = "Fetching the runs from HSS…"
#: A follow-up past this is given up (response_url lives 30 minutes; one call is enough).
MAX_WAIT = 10 * 60.0


def run_list(query: ListTasks, snap: RunsSnapshot | None) -> RunList:
    if snap is None:
        return RunList(query=query, runs=(), fetched_at=None)
    runs = filter_runs(snap.runs, kind=query.kind, name=query.name, failed=query.failed)
    return RunList(query=query, runs=runs, fetched_at=snap.fetched_at)


class TasksHandlers:
    def __init__(
        self,
        *,
        runs: RunsService,
        fresh_seconds: float,
        clock: Callable[[], float] = time.time,
        max_wait: float = MAX_WAIT,
    ) -> None:
        self._runs = runs
        self._fresh_seconds = fresh_seconds
        self._clock = clock
        self._max_wait = max_wait

    async def answer(self, query: ListTasks, reply: Reply, respond: AsyncRespond) -> None:
        """The first answer through ``reply`` (the ack); a fresher one through ``respond``."""
        snap = await self._runs.peek()
        now = self._clock()
        listing = run_list(query, snap)
        if snap is not None and self._runs.age(snap) < self._fresh_seconds:
            await reply(render_tasks(listing, now=now))
            _note(query, "fresh")
            return
        refused = await self._runs.refused()
        if refused is not None:
            await reply(self._over(listing, refused.user_message()))
            _note(query, "unavailable")
            return
        await reply(render_tasks(listing, now=now, notice=FETCHING))
        # Someone with nothing to look at needs the call more than someone with older data.
        priority = Priority.INTERACTIVE if snap is None else Priority.BACKGROUND
        message = await self._refreshed(query, listing, priority)
        await respond(**payload(message, response_type="ephemeral", replace_original=True))

    async def _refreshed(self, query: ListTasks, stale: RunList, priority: Priority) -> Message:
        try:
            async with asyncio.timeout(self._max_wait):
                fresh = await self._runs.refresh(priority=priority, max_age=self._fresh_seconds)
        except TimeoutError:
            _note(query, "gave_up")
            return self._over(stale, "HSS did not answer in time; ask again in a few minutes.")
        except RunsUnavailable as exc:
            _note(query, "unavailable")
            return self._over(stale, exc.user_message())
        except BotError as exc:
            _note(query, "failed", exc)
            return self._over(stale, exc.user_message())
        except Exception:
            logger.exception("listing the runs failed after the acknowledgement")
            return self._over(stale, FAILED)
        _note(query, "refreshed")
        return render_tasks(run_list(query, fresh), now=self._clock())

    def _over(self, listing: RunList, notice: str) -> Message:
        """``notice`` over what is known; the sentence alone when nothing is."""
        if listing.fetched_at is None:
            return render_error(notice)
        return render_tasks(listing, now=self._clock(), notice=notice)

    async def on_page(self, body: dict[str, Any], respond: AsyncRespond) -> None:
        """Prev/Next: the work after the ack, from the snapshot (no call)."""
        try:
            query, page = decode_tasks_value(str(first_action(body).get("value", "")))
        except CommandError as exc:
            await say_error(respond, exc.user_message())
            return
        listing = run_list(query, await self._runs.peek())
        message = render_tasks(listing, page=page, now=self._clock())
        await respond(**payload(message, response_type="ephemeral", replace_original=True))


def _note(query: ListTasks, outcome: str, error: BaseException | None = None) -> None:
    why = getattr(error, "error_code", None) or (type(error).__name__ if error else None)
    logger.info(
        "tasks kind=%s failed=%s -> %s%s",
        query.kind.value if query.kind is not None else "any",
        query.failed,
        outcome,
        f" ({why})" if why else "",
        extra={"event": "tasks", "outcome": outcome, "error": why},
    )
