"""Telling a channel about a run: plan its step, and queue the step's messages through the
outbox with the channel's new state, in one ``MULTI`` under ``WATCH`` of that state.

A second replica (or a round that lost its lease and goes on) reads the state the first one
wrote and finds nothing left to say; every item also carries a dedup id made of what it
shows, so an item queued twice is sent once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from bot.alerting import outbox
from bot.alerting.run_flips import (
    ChannelRun,
    Missed,
    RunDiff,
    Say,
    Send,
    plan_channel,
)
from bot.alerting.run_message import (
    render_all_recovered,
    render_changes_line,
    render_end_line,
    render_missed,
    render_run_alert,
    render_stuck,
)
from bot.alerting.run_state import RunView, queue_channel, queue_view, read_channel, read_view
from bot.models import LookupRequest, TaskRef
from bot.runs import SyncRun
from bot.slack.render import Message
from bot.storage import keys
from bot.storage.replies import as_str
from bot.storage.run_watch_store import RunWatch, RunWatchStore
from bot.storage.transact import Contended, transact

logger = logging.getLogger(__name__)


class Teller:
    def __init__(self, redis: aioredis.Redis, *, clock: Callable[[], float]) -> None:
        self._redis = redis
        self._clock = clock

    async def tell(
        self,
        watch: RunWatch,
        scope: LookupRequest,
        ref: TaskRef,
        run: SyncRun,
        diff: RunDiff | None,
        *,
        watches: RunWatchStore,
        stuck: bool,
        since: float,
    ) -> tuple[int, ChannelRun] | None:
        """Plan and queue what ``watch``'s channel hears about ``run`` (``scope``: the run's
        task id and the watch's filters; ``stuck`` since ``since``): the items queued and the
        channel's state, or None when it could not be written (told again next round).

        The watch is read again in the transaction, under ``WATCH``: a round can wait
        minutes for call slots, and a channel that unwatched, muted or was paused meanwhile
        must hear nothing (a watch removed is told nothing; muted or paused, as
        :func:`plan_channel` says)."""
        channel, kind = watch.channel, watch.kind
        key = keys.run_alert(channel, ref)
        now = self._clock()
        shown = diff or RunDiff()

        async def body(pipe: Pipeline) -> tuple[tuple[Send, ...], ChannelRun]:
            current = await watches.read(pipe, channel=channel, kind=kind)
            state = await read_channel(pipe, key)
            if current is None or current.created_at != watch.created_at:
                return (), state
            muted_until = current.muted_until
            step = plan_channel(state, run, diff, loud=current.alerts(now), stuck=stuck)
            if step.state == state:
                return (), state
            before = await read_view(pipe, key)
            acked_by = before[1] if before is not None else None
            pipe.multi()  # type: ignore[no-untyped-call]
            queue_channel(pipe, key, step.state)
            for send in step.sends:
                if send.say == Say.ALERT:
                    message = render_run_alert(
                        scope, run, shown, now=now, acked_by=acked_by, muted_until=muted_until
                    )
                    queue_view(
                        pipe,
                        key,
                        RunView(run=run, diff=shown, kind=kind, types=scope.types, name=scope.name),
                    )
                else:
                    message = _render(send, run, shown, scope, since=since, now=now)
                await _queue(pipe, channel, ref, run, send, message, diff)
            return step.sends, step.state

        try:
            sends, state = await transact(self._redis, body, watch=[key, watches.key(channel)])
        except Contended:
            logger.warning("run %s: channel %s kept changing; next round", run.task_id, channel)
            return None
        if sends:
            _note_sends(channel, run, sends, diff)
        return len(sends), state

    async def rerender(
        self, channel: str, ref: TaskRef, *, muted_until: float | None, reason: str
    ) -> bool:
        """Queue an update of the channel's run message from what it shows (after a button
        changed who acknowledged it or its watch's mute); False when there is no message."""
        key = keys.run_alert(channel, ref)
        found = await read_view(self._redis, key)
        if found is None:
            return False
        view, acked_by = found
        now = self._clock()
        message = render_run_alert(
            view.scope, view.run, view.diff, now=now, acked_by=acked_by, muted_until=muted_until
        )
        await outbox.enqueue(
            self._redis,
            channel=channel,
            kind="update",
            alert_key=key,
            text=message.text,
            blocks=message.blocks,
            dedup=f"{key}:{reason}:{now!r}",
            task=view.run.task_id,
        )
        return True

    async def missed(self, channel: str, ref: TaskRef, missed: Missed, *, after: float) -> int:
        """One "missed" notice per absence (``missed.mark``; ``ref`` names it)."""
        alert_key = keys.run_notice(channel, ref, "missed")
        message = render_missed(missed, after=after)

        async def body(pipe: Pipeline) -> int:
            told = await pipe.hget(keys.runs_missed(), channel)
            if told is not None and as_str(told) == missed.mark:
                return 0
            pipe.multi()  # type: ignore[no-untyped-call]
            pipe.hset(keys.runs_missed(), channel, missed.mark)
            pipe.hset(alert_key, "queued", "1")
            pipe.expire(alert_key, keys.RUN_STATE_TTL)
            await outbox.enqueue(
                pipe,
                channel=channel,
                kind="post",
                alert_key=alert_key,
                text=message.text,
                blocks=message.blocks,
                dedup=f"{alert_key}:missed",
            )
            return 1

        try:
            return await transact(self._redis, body, watch=[keys.runs_missed()])
        except Contended:
            return 0


def _note_sends(channel: str, run: SyncRun, sends: tuple[Send, ...], diff: RunDiff | None) -> None:
    """One log line per channel and round that queued something about a run."""
    said = ", ".join(f"{s.kind} {s.say}" for s in sends)
    counts = diff or RunDiff()
    logger.info(
        "run %s (%s): %s queued for %s (%d new, %d still failing, %d recovered)",
        run.task_id,
        run.outcome,
        said,
        channel,
        len(counts.new),
        len(counts.still),
        len(counts.recovered),
        extra={
            "event": "run_alert",
            "task": run.task_id,
            "channel": channel,
            "queued": said,
            "new": len(counts.new),
            "still_failing": len(counts.still),
            "recovered": len(counts.recovered),
        },
    )


async def _queue(
    pipe: Pipeline,
    channel: str,
    ref: TaskRef,
    run: SyncRun,
    send: Send,
    message: Message,
    diff: RunDiff | None,
) -> None:
    shown = diff if diff is not None else RunDiff()
    alert_key = keys.run_alert(channel, ref)
    if send.say == Say.STUCK and send.kind == "post":
        alert_key = keys.run_notice(channel, ref, "stuck")
        pipe.hset(alert_key, "queued", "1")
        pipe.expire(alert_key, keys.RUN_STATE_TTL)
    await outbox.enqueue(
        pipe,
        channel=channel,
        kind=send.kind,
        alert_key=alert_key,
        text=message.text,
        blocks=message.blocks,
        dedup=f"{alert_key}:{send.kind}:{send.say}:{shown.digest()}:{run.task_status}",
        task=run.task_id,
    )


def _render(
    send: Send,
    run: SyncRun,
    diff: RunDiff,
    scope: LookupRequest,
    *,
    since: float,
    now: float,
) -> Message:
    if send.say == Say.ALERT:
        return render_run_alert(scope, run, diff, now=now)
    if send.say == Say.CHANGES:
        return render_changes_line(send.added, send.gone, diff, now=now)
    if send.say == Say.END:
        return render_end_line(run, diff)
    if send.say == Say.ALL_RECOVERED:
        return render_all_recovered(scope, run, diff)
    return render_stuck(run, since=since)
