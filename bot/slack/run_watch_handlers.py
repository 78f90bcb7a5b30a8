"""The run-watch sub-commands in Slack: ``watch runs``, ``unwatch runs``, ``mute runs``,
``unmute runs``.

:class:`~bot.slack.watch_handlers.WatchCommands` checks who asks and hands the command here
with the channel it is about; a new watch is refused (ChannelRefused, with how to fix it)
when the bot cannot post there: the same check as for task watches. Runs that exist when the
watch is made are its baseline: the reply says so, and which runs will be followed.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from bot.runs import RunKind, SyncRun
from bot.slack.render import Message
from bot.slack.run_text import run_time, run_title
from bot.slack.run_watch_command import (
    AddRunWatch,
    MuteRuns,
    RunWatchCommand,
    UnmuteRuns,
    UnwatchRuns,
    kind_word,
)
from bot.slack.text import channel_mention, date_token
from bot.slack.watch_text import filters_text, followed_text, runs_text, section_message
from bot.storage.run_watch_store import RunWatch, RunWatchStore

#: Raises ChannelRefused (with how to fix it) unless the bot can post in a channel.
ChannelCheck = Callable[[str], Awaitable[None]]
#: The newest run of a kind (None: any) the bot knows of, without asking HSS.
NewestRun = Callable[[RunKind | None], Awaitable[SyncRun | None]]


def watching_text(record: RunWatch, *, created: bool, newest: SyncRun | None = None) -> str:
    """The reply to ``watch runs``: what is followed, where, and what the baseline is
    (``newest``: the newest run of the kind the bot knows of, which is part of it)."""
    where = channel_mention(record.channel)
    filters = filters_text(record.types, record.name)
    if created:
        head = f"Following {followed_text(record.kind)} in {where} ({filters})."
        baseline = "Runs that exist now are the baseline, not alerts"
        if newest is not None:
            baseline += (
                f" (the newest I know of is {run_title(newest)}, "
                f"began {run_time(newest.begin_time)})"
            )
        baseline += ":"
    else:
        head = f"Updated the watch of {runs_text(record.kind)} in {where} ({filters})."
        baseline = (
            f"Runs that began before {date_token(record.created_at)}, when the watch was made, "
            "stay the baseline:"
        )
    return (
        f"{head} {baseline} each later run is followed from its first sight until it ends. "
        "This channel will hear which registries fail (new, or still failing since the "
        "previous run), and when they recover."
    )


class RunWatchChanges:
    """The changes, once the caller checked who asks."""

    def __init__(
        self,
        store: RunWatchStore,
        *,
        check_channel: ChannelCheck,
        clock: Callable[[], float] = time.time,
        on_watch: Callable[[str], Awaitable[None]] | None = None,
        newest: NewestRun | None = None,
    ) -> None:
        self._store = store
        self._check_channel = check_channel
        self._clock = clock
        self._on_watch = on_watch
        self._newest = newest

    async def change(self, cmd: RunWatchCommand, *, user: str, channel: str) -> Message:
        """Apply ``cmd`` in ``channel`` on behalf of ``user``; the reply."""
        if isinstance(cmd, AddRunWatch):
            return await self._watch(cmd, user=user, channel=channel)
        runs, where = runs_text(cmd.kind), channel_mention(channel)
        if isinstance(cmd, UnwatchRuns):
            done = await self._store.remove(channel=channel, kind=cmd.kind) is not None
            said = f"Stopped following {runs} in {where}."
        elif isinstance(cmd, MuteRuns):
            until = self._clock() + cmd.seconds
            muted = await self._store.mute(channel=channel, kind=cmd.kind, until=until)
            done = muted is not None
            said = f"Muted {runs} in {where} until {date_token(until)}."
        else:
            assert isinstance(cmd, UnmuteRuns)
            done = await self._store.unmute(channel=channel, kind=cmd.kind) is not None
            said = f"Alerts for {runs} in {where} are on again."
        if done:
            return section_message(said)
        return section_message(
            f"{runs.capitalize()} are not followed in {where}. "
            f"Start with `/hss-sync watch runs{_kind_suffix(cmd.kind)}`."
        )

    async def _watch(self, cmd: AddRunWatch, *, user: str, channel: str) -> Message:
        await self._check_channel(channel)
        given = RunWatch(
            channel=channel,
            kind=cmd.kind,
            types=cmd.types,
            name=cmd.name,
            created_by=user,
            created_at=self._clock(),
        )
        record, created = await self._store.add(given)
        if self._on_watch is not None:
            await self._on_watch(channel)
        newest = await self._newest(cmd.kind) if self._newest is not None else None
        return section_message(watching_text(record, created=created, newest=newest))


def _kind_suffix(kind: RunKind | None) -> str:
    return f" {kind_word(kind)}" if kind is not None else ""
