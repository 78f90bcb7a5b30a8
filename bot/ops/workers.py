"""What a replica runs besides answering Slack: the scheduler (refreshes watched tasks), the
alert pipeline (mirror changes -> alerts), the run follower (sync runs -> run alerts) and the
outbox sender (alerts -> Slack), plus the Slack handlers that need them. Every replica runs
all four; Redis leases and transactions keep them from doing the same work twice."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from bot.alerting.outbox import OutboxSender, web_client
from bot.alerting.pipeline import TASKS_EVERY, AlertPipeline
from bot.alerting.run_follower import Pace, RunFollower
from bot.alerting.scheduler import Scheduler
from bot.config import Settings
from bot.runtime import Runtime
from bot.slack.alert_buttons import AlertButtons
from bot.slack.watch_handlers import WatchCommands
from bot.storage.run_watch_store import RunWatchStore
from bot.storage.watch_store import WatchStore

logger = logging.getLogger(__name__)

#: How long shutdown waits for in-flight refreshes and deliveries.
STOP_GRACE = 10.0


@dataclass
class Workers:
    watches: WatchStore
    run_watches: RunWatchStore
    commands: WatchCommands
    buttons: AlertButtons
    scheduler: Scheduler
    pipeline: AlertPipeline
    follower: RunFollower
    sender: OutboxSender
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        for name, worker in (
            ("scheduler", self.scheduler),
            ("alerts", self.pipeline),
            ("runs", self.follower),
            ("outbox", self.sender),
        ):
            self._tasks.append(asyncio.create_task(worker.run(self._stop), name=name))

    def stop(self) -> None:
        """Take no new work: the scheduler starts no refresh, the outbox no new round."""
        self._stop.set()

    async def aclose(self, timeout: float = STOP_GRACE) -> None:
        """``stop``, and wait up to ``timeout`` s for the work in hand (a round of deliveries,
        an alert transaction) to finish; leases are released on the way out."""
        self.stop()
        if not self._tasks:
            return
        _, pending = await asyncio.wait(self._tasks, timeout=max(0.0, timeout))
        for task in pending:
            logger.warning("%s did not stop in time; cancelling it", task.get_name())
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*pending, return_exceptions=True)


def build_workers(
    runtime: Runtime,
    settings: Settings,
    *,
    min_interval: float = 1.0,
    tasks_every: float = TASKS_EVERY,
) -> Workers:
    """``min_interval``: seconds between two messages to one channel (Slack allows ~1);
    ``tasks_every``: how often the alert pipeline looks for newly watched tasks."""
    assert settings.slack_bot_token is not None
    watches = WatchStore(runtime.redis)
    run_watches = RunWatchStore(runtime.redis)
    slack = web_client(token=settings.slack_bot_token.reveal(), base_url=settings.slack_api_url)

    async def on_permanent(channel: str, reason: str) -> None:
        # A revoked token is the whole workspace's problem, not one channel's.
        if reason == "token_revoked":
            channels = sorted({*await watches.channels(), *await run_watches.channels()})
        else:
            channels = [channel]
        for each in channels:
            await watches.pause(each, reason)
            await run_watches.pause(each, reason)
        logger.warning("paused the watches of %d channel(s): %s", len(channels), reason)

    sender = OutboxSender(
        runtime.redis, slack=slack, on_permanent=on_permanent, min_interval=min_interval
    )

    async def resume(channel: str) -> None:
        await sender.resume(channel)

    commands = WatchCommands(
        watches=watches,
        run_watches=run_watches,
        lookups=runtime.lookups,
        client=slack,
        admins=settings.watch_admins,
        on_watch=resume,
        runs=runtime.runs,
    )
    return Workers(
        watches=watches,
        run_watches=run_watches,
        commands=commands,
        buttons=AlertButtons(
            redis=runtime.redis,
            watches=watches,
            lookups=runtime.lookups,
            commands=commands,
            run_watches=run_watches,
        ),
        scheduler=Scheduler(
            lookups=runtime.lookups,
            watches=watches,
            redis=runtime.redis,
            poll_interval=settings.poll_interval_seconds,
        ),
        pipeline=AlertPipeline(runtime.redis, watches=watches, tasks_every=tasks_every),
        follower=RunFollower(
            runtime.redis,
            runs=runtime.runs,
            watches=run_watches,
            lookups=runtime.lookups,
            pace=Pace(
                poll=settings.tasks_poll_seconds,
                stuck_after=settings.stuck_after_seconds,
                missed_after=settings.missed_run_after_seconds,
            ),
        ),
        sender=sender,
    )
