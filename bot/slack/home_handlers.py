"""The App Home tab in Slack: publishing it (recent runs from the stored run list, run
watches, task watches with their mirrors' totals: never an HSS call), and its buttons
(Unwatch, Add a watch), each checked like the commands they stand for."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from slack_sdk.web.async_client import AsyncWebClient

from bot.errors import BotError, CommandError
from bot.lookup import LookupService
from bot.models import LookupRequest
from bot.runs_service import RunsService
from bot.slack.home import (
    HOME_RECENT_RUNS,
    HomeRow,
    RecentRuns,
    decode_home_runs_value,
    decode_home_value,
    render_home,
)
from bot.slack.request_shape import first_action, user_of
from bot.storage.run_watch_store import RunWatchStore
from bot.storage.watch_store import WatchStore

if TYPE_CHECKING:
    from bot.slack.watch_handlers import WatchCommands


class HomeTab:
    """Made by :class:`~bot.slack.watch_handlers.WatchCommands`, whose checks it uses."""

    def __init__(
        self,
        commands: WatchCommands,
        *,
        watches: WatchStore,
        run_watches: RunWatchStore,
        lookups: LookupService,
        runs: RunsService | None,
        client: AsyncWebClient,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._commands = commands
        self._watches = watches
        self._run_watches = run_watches
        self._lookups = lookups
        self._runs = runs
        self._client = client
        self._clock = clock

    async def rows(self) -> list[HomeRow]:
        rows = []
        for w in await self._watches.all():
            request = LookupRequest(w.task.task_id, ep=w.task.enterprise_project_id)
            answer = (await self._lookups.peek(request)).answer
            rows.append(HomeRow(watch=w, fetched_at=answer.fetched_at, totals=answer.totals))
        return rows

    async def publish(self, user: str, notice: str | None = None) -> None:
        rows, runs = await self.rows(), await self._run_watches.all()
        recent = await self._recent_runs()
        view = render_home(rows, runs=runs, recent=recent, now=self._clock(), notice=notice)
        await self._client.views_publish(user_id=user, view=view)

    async def _recent_runs(self) -> RecentRuns | None:
        """The stored run list for Home (never a call): None when runs are not configured."""
        if self._runs is None:
            return None
        refused = await self._runs.refused()
        if refused is not None:
            return RecentRuns(unavailable=refused.user_message())
        snap = await self._runs.peek()
        if snap is None:
            return RecentRuns()
        return RecentRuns(runs=snap.runs[:HOME_RECENT_RUNS], fetched_at=snap.fetched_at)

    async def on_opened(self, event: dict[str, Any]) -> None:
        user = event.get("user")
        if event.get("tab", "home") == "home" and isinstance(user, str) and user:
            await self.publish(user)

    async def on_unwatch(self, body: dict[str, Any], respond: Any = None) -> None:
        """The work after an Unwatch click's ack (``respond`` unused: Home has no message)."""

        async def remove(value: str) -> None:
            task, channel = decode_home_value(value)
            await self._watches.remove(task=task, channel=channel)

        await self._unwatch(body, remove)

    async def on_unwatch_runs(self, body: dict[str, Any], respond: Any = None) -> None:
        """The work after a run watch's Unwatch click's ack."""

        async def remove(value: str) -> None:
            kind, channel = decode_home_runs_value(value)
            await self._run_watches.remove(channel=channel, kind=kind)

        await self._unwatch(body, remove)

    async def _unwatch(
        self, body: dict[str, Any], remove: Callable[[str], Awaitable[None]]
    ) -> None:
        """Check who clicked, then ``remove`` by the button's value (CommandError: a value
        that is not one of ours), and show the Home tab again."""
        user = user_of(body)
        if not await self._commands.allowed(user):
            await self.publish(user, notice=self._commands.refusal())
            return
        try:
            await remove(str(first_action(body).get("value", "")))
        except CommandError as exc:
            await self.publish(user, notice=exc.user_message())
            return
        await self.publish(user)

    async def on_add_watch(self, body: dict[str, Any], respond: Any = None) -> None:
        """The work after the Home tab's "Add a watch" click."""
        user = user_of(body)
        try:
            trigger = body.get("trigger_id")
            trigger = trigger if isinstance(trigger, str) else ""
            await self._commands.open_form(user, trigger, channel=None, from_home=True)
        except BotError as exc:
            await self.publish(user, notice=exc.user_message())
