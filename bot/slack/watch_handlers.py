"""The watch sub-commands in Slack: watch, unwatch, watches, mute, unmute, and their run
forms (``watch runs ...``, carried out by :mod:`bot.slack.run_watch_handlers`).

Every change checks who asks (``HSS_WATCH_ADMINS``), every new watch checks that the bot
can post in the channel, and every answer is ephemeral. A new watch reports how many
registries are failed right now: that is the baseline, not flips.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.errors import BotError, ChannelRefused, CommandError, NotAllowed
from bot.lookup import LookupService
from bot.models import LookupRequest, SyncStatus, TaskRef
from bot.runs import RunKind, SyncRun, latest
from bot.runs_service import RunsService, named_run
from bot.slack.blocks import section
from bot.slack.home_handlers import HomeTab
from bot.slack.render import Message, render_error
from bot.slack.run_text import Resolved, resolved_line
from bot.slack.run_watch_command import RunWatchCommand
from bot.slack.run_watch_handlers import RunWatchChanges
from bot.slack.text import channel_mention, code, date_token, escape
from bot.slack.watch_command import AddWatch, ListWatches, Mute, Unmute, Unwatch, WatchCommand
from bot.slack.watch_form import OpenWatchForm, form_view
from bot.slack.watch_text import filters_text, render_watch_list, section_message
from bot.storage.run_watch_store import RunWatchStore
from bot.storage.watch_store import WatchStore, may_change_watches

logger = logging.getLogger(__name__)

Reply = Callable[[Message], Awaitable[None]]

#: How long a user group's member list is trusted before asking Slack again.
GROUP_CACHE_SECONDS = 300.0


class WatchCommands:
    def __init__(
        self,
        *,
        watches: WatchStore,
        run_watches: RunWatchStore,
        lookups: LookupService,
        client: AsyncWebClient,
        admins: frozenset[str],
        clock: Callable[[], float] = time.time,
        on_watch: Callable[[str], Awaitable[None]] | None = None,
        runs: RunsService | None = None,
    ) -> None:
        self._watches = watches
        self._runs = runs
        # Watching again in a channel whose alerts were parked (the bot was removed, say)
        # means people fixed it: let the outbox send there again.
        self._on_watch = on_watch
        self._lookups = lookups
        self._client = client
        self._admins = admins
        self._clock = clock
        self._groups: dict[str, tuple[float, frozenset[str]]] = {}
        self._run_watches = run_watches
        self.home = HomeTab(
            self,
            watches=watches,
            run_watches=run_watches,
            lookups=lookups,
            runs=runs,
            client=client,
            clock=clock,
        )
        self._run_changes = RunWatchChanges(
            run_watches,
            check_channel=self.check_channel,
            clock=clock,
            on_watch=on_watch,
            newest=self._newest_run,
        )

    async def handle(
        self,
        cmd: WatchCommand | RunWatchCommand | OpenWatchForm,
        command: dict[str, Any],
        reply: Reply,
    ) -> None:
        """Answer ``cmd`` through ``reply`` (the ack); BotErrors become ephemeral sentences."""
        user = str(command.get("user_id", ""))
        here = str(command.get("channel_id", ""))
        try:
            if isinstance(cmd, ListWatches):
                await reply(await self._list(cmd, here))
            elif isinstance(cmd, OpenWatchForm):
                trigger = str(command.get("trigger_id", ""))
                await reply(await self.open_form(user, trigger, channel=here, from_home=False))
            else:
                await reply(await self.change(cmd, user=user, channel=cmd.channel or here))
        except BotError as exc:
            await reply(render_error(exc.user_message()))

    async def change(
        self, cmd: AddWatch | Unwatch | Mute | Unmute | RunWatchCommand, *, user: str, channel: str
    ) -> Message:
        """Carry out a change for ``user`` in ``channel``: the one path of the command and the
        form. Raises :class:`NotAllowed`, :class:`ChannelRefused` (a new watch where the bot
        cannot post) and other BotErrors."""
        if not await self.allowed(user):
            raise NotAllowed(self.refusal())
        return await self._change(cmd, user=user, channel=channel)

    async def _change(
        self, cmd: AddWatch | Unwatch | Mute | Unmute | RunWatchCommand, *, user: str, channel: str
    ) -> Message:
        if not isinstance(cmd, AddWatch | Unwatch | Mute | Unmute):
            return await self._run_changes.change(cmd, user=user, channel=channel)
        # A task reference is the run it names now: a watch made on `latest` stays on that
        # run (following the runs to come is `watch runs`).
        run = await named_run(self._runs, cmd.task_id)
        if run is None:
            return await self._apply(cmd, user=user, channel=channel)
        named = resolved_line(Resolved(cmd.task_id, run))
        done = await self._apply(replace(cmd, task_id=run.task_id), user=user, channel=channel)
        return Message(text=f"{named}\n{done.text}", blocks=[section(named), *done.blocks])

    async def _apply(
        self, cmd: AddWatch | Unwatch | Mute | Unmute, *, user: str, channel: str
    ) -> Message:
        if isinstance(cmd, AddWatch):
            return await self._watch(cmd, user=user, channel=channel)
        ref, task, where = self._ref(cmd.task_id), code(cmd.task_id, 70), channel_mention(channel)
        if isinstance(cmd, Unwatch):
            done = await self._watches.remove(task=ref, channel=channel) is not None
            said = f"Stopped watching task {task} in {where}."
        elif isinstance(cmd, Mute):
            until = self._clock() + cmd.seconds
            done = await self._watches.mute(task=ref, channel=channel, until=until) is not None
            said = f"Muted task {task} in {where} until {date_token(until)}."
        else:
            done = await self._watches.unmute(task=ref, channel=channel) is not None
            said = f"Alerts for task {task} in {where} are on again."
        return section_message(said if done else f"Task {task} is not watched in {where}.")

    async def _watch(self, cmd: AddWatch, *, user: str, channel: str) -> Message:
        await self.check_channel(channel)
        ref = self._ref(cmd.task_id, cmd.ep)
        record, created = await self._watches.add(
            task=ref, channel=channel, created_by=user, types=cmd.types, name=cmd.name
        )
        if self._on_watch is not None:
            await self._on_watch(channel)
        verb = "Watching" if created else "Updated the watch of"
        baseline = await self._baseline(cmd)
        return section_message(
            f"{verb} task {code(cmd.task_id, 70)} in {channel_mention(channel)} "
            f"({filters_text(record.types, record.name)}). {baseline} This channel will hear "
            "when a registry fails, and when it recovers."
        )

    async def _baseline(self, cmd: AddWatch) -> str:
        request = LookupRequest(cmd.task_id, SyncStatus.FAILED, cmd.types, cmd.name, cmd.ep)
        peek = await self._lookups.peek(request)
        if not peek.answer.has_data:
            return "The first refresh will take the current failures as the baseline."
        failed = len(peek.answer.registries)
        noun = "registry is" if failed == 1 else "registries are"
        return f"{failed} {noun} failed right now (the baseline, not alerts)."

    async def _list(self, cmd: ListWatches, here: str) -> Message:
        if cmd.all_channels:
            found, runs = await self._watches.all(), await self._run_watches.all()
        else:
            found = await self._watches.of_channel(here)
            runs = await self._run_watches.of_channel(here)
        return render_watch_list(found, runs, now=self._clock(), everywhere=cmd.all_channels)

    def _ref(self, task_id: str, ep: str | None = None) -> TaskRef:
        return self._lookups.ref(LookupRequest(task_id, ep=ep))

    async def _newest_run(self, kind: RunKind | None) -> SyncRun | None:
        """The newest run of ``kind`` in the stored run list (never a call)."""
        snap = await self._runs.peek() if self._runs is not None else None
        return latest(snap.runs, kind) if snap is not None else None

    # --- the form ---

    async def open_form(
        self, user: str, trigger_id: str, *, channel: str | None, from_home: bool
    ) -> Message:
        """Open the "Add a watch" modal for ``user``, who must be allowed to add one."""
        if not await self.allowed(user):
            raise NotAllowed(self.refusal())
        if not trigger_id:
            raise CommandError("Slack sent nothing to open the form with; try again.")
        try:
            view = form_view(channel=channel, from_home=from_home)
            await self._client.views_open(trigger_id=trigger_id, view=view)
        except SlackApiError as exc:
            error = str(exc.response.get("error", "unknown_error"))
            raise CommandError(
                f"Slack did not open the form ({error}). Type the watch instead: "
                "`/hss-sync watch <task_id>` or `/hss-sync watch runs`."
            ) from None
        return section_message("The form to add a watch is open.")

    # --- who may, and where ---

    def refusal(self) -> str:
        who = ", ".join(
            f"<@{a}>" if a[0] in "UW" else f"<!subteam^{a}>" for a in sorted(self._admins)
        )
        return f"Only the watch admins ({who}) may change watches. Ask one of them."

    async def allowed(self, user: str) -> bool:
        if not self._admins or user in self._admins:
            return True
        groups = frozenset(g for g in self._admins if g.startswith("S"))
        member_of = {g for g in groups if user in await self._members(g)}
        return may_change_watches(user, member_of, self._admins)

    async def _members(self, group: str) -> frozenset[str]:
        cached = self._groups.get(group)
        if cached is not None and self._clock() - cached[0] < GROUP_CACHE_SECONDS:
            return cached[1]
        try:
            response = await self._client.usergroups_users_list(usergroup=group)
            users = frozenset(str(u) for u in response.get("users") or [])
        except SlackApiError as exc:
            logger.warning("cannot list user group %s: %s", group, exc.response.get("error"))
            users = frozenset()
        self._groups[group] = (self._clock(), users)
        return users

    async def check_channel(self, channel: str) -> None:
        """Raise :class:`ChannelRefused` unless the bot can post in ``channel``."""
        problem = await self.channel_problem(channel)
        if problem is not None:
            raise ChannelRefused(problem)

    async def channel_problem(self, channel: str) -> str | None:
        """Why the bot cannot post in ``channel``, with how to fix it; None when it can."""
        invite = "invite the app there (`/invite @hss-sync`) and run the command again"
        where = channel_mention(channel)
        try:
            info = await self._client.conversations_info(channel=channel)
        except SlackApiError as exc:
            error = str(exc.response.get("error", "unknown_error"))
            if error == "channel_not_found":
                return f"I cannot see {where}. If it is a private channel, {invite}."
            return f"Slack refused to tell me about {where} ({escape(error)})."
        details = info.get("channel") or {}
        if details.get("is_archived"):
            return f"{where} is archived: choose a channel that is in use."
        if details.get("is_member") is False:
            return f"I am not a member of {where}: {invite}."
        return None
