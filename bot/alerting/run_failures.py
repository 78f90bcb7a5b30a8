"""A run's failed registries, and those of the previous run of its kind, through the mirror.

The lookup service's refresh is the one way the bot fetches registries: it shares a fetch
with anyone asking the same at once (in-process and across replicas), spends the registries
budget at background priority (behind people), and keeps the answer in the mirror, where the
next round finds it without a call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from bot.alerting.flips import Flip
from bot.alerting.run_flips import complete, failed_flip, previous_run
from bot.errors import BotError
from bot.hss.budget import Priority
from bot.lookup import LookupService
from bot.models import LookupRequest, SyncStatus
from bot.runs import SyncRun

logger = logging.getLogger(__name__)


class RunFailures:
    def __init__(self, *, lookups: LookupService, poll: float, clock: Callable[[], float]) -> None:
        self._lookups = lookups
        self._poll = poll
        self._clock = clock

    async def both(
        self, runs: tuple[SyncRun, ...], fetched_at: float, run: SyncRun
    ) -> tuple[list[Flip], list[Flip]]:
        """The failed registries of ``run`` and of the run before it (of its kind, among
        ``runs``, listed at ``fetched_at``). Raises ``BotError`` when they cannot be had."""
        current = await self._failed(run, newer_than=fetched_at)
        before = previous_run(runs, run)
        previous: list[Flip] = []
        # The previous run's failures matter only to mark failures, or to find what
        # recovered once the run is through: no call for a clean run under way.
        if before is not None and (current or complete(run)):
            previous = await self._failed(before, newer_than=_end(before, fetched_at))
        return current, previous

    async def _failed(self, run: SyncRun, *, newer_than: float) -> list[Flip]:
        """The run's failed registries from the mirror, refreshed unless its copy is newer
        than ``newer_than``; no call for a run that lists no failure."""
        if run.failed_num == 0:
            return []
        request = LookupRequest(task_id=run.task_id, status=SyncStatus.FAILED)
        max_age = max(self._clock() - newer_than, 0.0)
        answer = await self._lookups.refresh(request, priority=Priority.BACKGROUND, max_age=max_age)
        at = answer.fetched_at if answer.fetched_at is not None else self._clock()
        return [
            failed_flip(r.registry_id, r.registry_name, r.registry_type, r.failed_reason, at)
            for r in answer.registries
        ]

    async def finished(self, run: SyncRun) -> frozenset[str]:
        """Registries the mirror knows finished in ``run`` (what recovered while it goes on,
        or in a run stopped early). The whole run is fetched only when the registries budget
        has the calls free right now and the mirror's copy is older than a poll: full
        refreshes come as often as the budget allows, never ahead of anyone."""
        whole = LookupRequest(task_id=run.task_id)
        try:
            cost = await self._lookups.refresh_cost(whole)
            if cost.wait <= 0.0 and cost.calls < cost.limit.calls:
                await self._lookups.refresh(whole, priority=Priority.BACKGROUND, max_age=self._poll)
        except BotError as exc:
            logger.debug("run %s: no full refresh this round: %s", run.task_id, exc)
        done = LookupRequest(task_id=run.task_id, status=SyncStatus.FINISHED)
        peek = await self._lookups.peek(done)
        return frozenset(r.registry_id for r in peek.answer.registries)


def _end(run: SyncRun, fetched_at: float) -> float:
    """Mirror data newer than this answers for ``run``: its end, or the list call that
    showed it still going."""
    if run.ended and run.end_time:
        return min(run.end_time / 1000, fetched_at)
    return fetched_at
