"""The outbox: alerts wait in Redis until Slack has taken them, then are deleted.

Alerting queues items with :func:`enqueue` inside its own ``MULTI``; :class:`OutboxSender`
(one per replica) delivers them at least once, in order per channel:

- one sender per channel across replicas: a ``redis.asyncio.lock.Lock`` lease, renewed while
  sending and expiring by itself when its replica dies (then another replica takes over);
- pace: at most one message per ``min_interval`` per channel; a 429's ``Retry-After`` and the
  back-off after transient errors (5xx, network) hold only that channel. The "not before"
  time lives in Redis so every replica keeps to it;
- an item is deleted only after Slack took it (``post`` records the parent ts in the same
  ``MULTI``), so a replica killed in between causes at most one duplicate, never a loss;
- ``update``/``thread`` items need their alert's ``parent_ts``: if it is missing the channel
  waits (never reordered); past ``orphan_after`` the item is posted as a new parent instead,
  since the parent cannot come any more (its post was rejected, or Redis lost it);
- permanent errors (``channel_not_found``, ``is_archived``, ``not_in_channel``, token
  revoked) park the channel with its items kept and call ``on_permanent`` (which pauses the
  watches); :meth:`OutboxSender.resume` lets it send again. Other errors about one item
  (``invalid_blocks``, ``message_not_found``...) drop that item, logged and counted.

Give the sender a Web API client without automatic retries (:func:`web_client`): a 429
retried inside the client sleeps ``Retry-After`` while holding the channel's lease (longer
than the lease: another replica would send the same item) and blind to the other replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, cast

import aiohttp
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.asyncio.lock import Lock
from redis.exceptions import LockError
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.alerting.state import parent_ts, queue_parent_ts
from bot.ops import metrics
from bot.retry_after import parse_retry_after
from bot.storage import keys
from bot.storage.lease import Held, RedisLease, keep_alive
from bot.storage.outage import REDIS_OUTAGE, OutageGate
from bot.storage.replies import as_str
from bot.storage.watch_store import PAUSE_REASONS

logger = logging.getLogger(__name__)

Kind = Literal["post", "update", "thread"]
KINDS: frozenset[str] = frozenset({"post", "update", "thread"})
#: Errors after which the channel cannot take messages until people fix something. The token
#: errors are the workspace's, but parking each channel keeps every item until it is fixed.
PERMANENT = PAUSE_REASONS | {"invalid_auth", "account_inactive", "not_authed"}
#: Slack's ``ok: false`` errors that are worth trying again.
TRANSIENT = frozenset({"internal_error", "fatal_error", "service_unavailable", "request_timeout"})
NETWORK_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)
_SENT_TTL = 86_400  # a day: far longer than any re-enqueue window
_NOT_BEFORE_MARGIN_MS = 3_600_000

#: KEYS[1] = the channel's stream, KEYS[2] = the outbox channels set; ARGV[1] = channel id.
#: Drops the channel from the set only if its stream is empty, atomically with any XADD+SADD.
FORGET_IF_EMPTY = """
if redis.call('XLEN', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[1])
  return redis.call('SREM', KEYS[2], ARGV[1])
end
return 0
"""


def web_client(*, token: str, base_url: str, timeout: int = 5) -> AsyncWebClient:
    """A client for the sender: no retry handlers (the sender retries, per channel; the one
    handler only counts 429s) and a timeout well inside the lease."""
    return AsyncWebClient(
        token=token, base_url=base_url, timeout=timeout, retry_handlers=[metrics.CountSlack429()]
    )


async def enqueue(
    target: aioredis.Redis | Pipeline,
    *,
    channel: str,
    kind: Kind,
    alert_key: str,
    text: str,
    blocks: list[dict[str, Any]] | None,
    dedup: str,
    task: str = "",
) -> str | None:
    """Queue an item for ``channel``. Given a pipeline (after ``multi()``), the commands join
    the caller's transaction and None is returned; given a client, they run in their own
    ``MULTI`` and the stream entry id is returned. ``task`` (the task id) is for logs."""
    if kind not in KINDS:
        raise ValueError(f"unknown outbox item kind {kind!r}")
    fields: dict[Any, Any] = {
        "kind": kind,
        "alert": alert_key,
        "text": text,
        "blocks": json.dumps(blocks or [], separators=(",", ":")),
        "dedup": dedup,
    }
    if task:
        fields["task"] = task
    if isinstance(target, Pipeline):
        if target.watching and not target.explicit_transaction:
            raise ValueError("enqueue into a WATCHing pipeline only after multi()")
        target.xadd(keys.outbox(channel), fields)
        target.sadd(keys.outbox_channels(), channel)
        return None
    async with target.pipeline(transaction=True) as pipe:
        pipe.xadd(keys.outbox(channel), fields)
        pipe.sadd(keys.outbox_channels(), channel)
        entry_id, _ = await pipe.execute()
    return as_str(entry_id)


@dataclass(frozen=True, slots=True)
class Item:
    id: str
    kind: str
    alert: str
    text: str
    blocks: list[dict[str, Any]]
    dedup: str
    task: str = ""

    @classmethod
    def decode(cls, entry: tuple[Any, Any]) -> Item:
        entry_id, raw = entry
        f = {as_str(k): as_str(v) for k, v in raw.items()}
        blocks = json.loads(f.get("blocks") or "[]")
        return cls(
            as_str(entry_id),
            f.get("kind", ""),
            f.get("alert", ""),
            f.get("text", ""),
            blocks,
            f.get("dedup", ""),
            f.get("task", ""),
        )


def _note_alert(
    level: int, channel: str, item: Item, result: str, what: str, **more: object
) -> None:
    """Count one delivery outcome (``result`` in metrics.ALERT_RESULTS) and log its line."""
    metrics.ALERTS.labels(result).inc()
    logger.log(
        level,
        "outbox: %s %s %s: %s",
        channel,
        item.kind,
        item.id,
        what,
        extra={
            "event": "alert",
            "channel": channel,
            "task": item.task or None,
            "kind": item.kind,
            "item": item.id,
            "result": result,
            **more,
        },
    )


@dataclass(slots=True)
class Stats:
    """This sender's counts: delivered, transient retries, dropped or parked, 429s
    (``bot.ops.metrics`` counts the same events for the whole process)."""

    sent: int = 0
    retried: int = 0
    failed: int = 0
    throttled: int = 0
    skipped: int = 0  # items queued twice, delivered once


class OutboxSender:
    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        slack: AsyncWebClient,
        on_permanent: Callable[[str, str], Awaitable[None]],
        clock: Callable[[], float] = time.time,
        min_interval: float = 1.0,
        lease_timeout: float = 10.0,
        poll_interval: float = 0.25,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        orphan_after: float = 300.0,
        after_send: Callable[[str, Item], Awaitable[None]] | None = None,
    ) -> None:
        self._redis = redis
        self._slack = slack
        self._on_permanent = on_permanent
        self._clock = clock
        self._min_interval = min_interval
        self._lease_timeout = lease_timeout
        self._poll = poll_interval
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._orphan_after = orphan_after
        self._after_send = after_send  # test hook: "killed" between Slack and the XDEL
        self._forget = redis.register_script(FORGET_IF_EMPTY)
        self._attempts: dict[str, int] = {}
        self._leases: dict[str, Lock] = {}
        self._outage = OutageGate(
            logger=logger,
            started="outbox: Redis unavailable (%s); items wait",
            ended="outbox: Redis is back; sending again",
        )
        self._waiting: dict[tuple[str, str], float] = {}  # (channel, item) -> since
        self._wake = math.inf
        self.stats = Stats()

    # --- loop ---

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.run_once()
                self._outage.succeeded()
            except* REDIS_OUTAGE as outage:
                self._outage.failed(outage.exceptions[0])
            except* Exception as failed:
                for exc in failed.exceptions:  # each channel's own, none hiding another's
                    logger.error("outbox: send round failed", exc_info=exc)
            delay = min(max(self._wake - self._clock(), 0.0), self._poll)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    async def run_once(self) -> int:
        """Send what is due on every unparked channel; the number of messages sent. A
        channel's failure stops neither the others nor their sending: once all are done,
        the failures are raised together, each noting its channel, in an ExceptionGroup."""
        self._wake = math.inf
        channels = sorted({as_str(c) for c in await self._redis.smembers(keys.outbox_channels())})
        parked = {as_str(c) for c in await self._redis.hkeys(keys.outbox_parked())}
        channels = [c for c in channels if c not in parked]
        if not channels:
            return 0
        times = await self._redis.mget([keys.outbox_not_before(c) for c in channels])
        now = self._clock()
        due = []
        for channel, raw in zip(channels, times, strict=True):
            at = float(raw) if raw else 0.0
            if at > now:
                self._wake = min(self._wake, at)
            else:
                due.append(channel)
        served = await asyncio.gather(*(self._serve(c) for c in due), return_exceptions=True)
        failed: list[BaseException] = []
        for channel, result in zip(due, served, strict=True):
            if isinstance(result, BaseException):
                result.add_note(f"outbox channel {channel}")
                failed.append(result)
        if failed:
            raise BaseExceptionGroup(f"outbox: {len(failed)} of {len(due)} channels failed", failed)
        return sum(cast("list[int]", served))

    async def resume(self, channel: str, *, discard: bool = False) -> None:
        """Unpark ``channel``; with ``discard``, its pending items are dropped first (stale
        alerts after a long pause)."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hdel(keys.outbox_parked(), channel)
            pipe.delete(keys.outbox_not_before(channel))
            if discard:
                pipe.delete(keys.outbox(channel))
                pipe.srem(keys.outbox_channels(), channel)
            await pipe.execute()
        self._attempts.pop(channel, None)

    async def parked(self) -> dict[str, str]:
        """Parked channels and the Slack error that parked them."""
        raw = await self._redis.hgetall(keys.outbox_parked())
        return {as_str(k): as_str(v) for k, v in raw.items()}

    # --- one channel ---

    async def _serve(self, channel: str) -> int:
        lease = self._lease(channel)
        if not await self._take(lease):
            return 0
        async with keep_alive(RedisLease(lease)) as held:
            return await self._drain(channel, held)

    def _lease(self, channel: str) -> Lock:
        # One Lock (one token) per channel for the sender's lifetime: a release lost in a
        # Redis outage leaves a lease this sender still recognises as its own afterwards.
        lease = self._leases.get(channel)
        if lease is None:
            lease = Lock(
                self._redis,
                keys.outbox_lease(channel),
                timeout=self._lease_timeout,
                thread_local=False,
            )
            self._leases[channel] = lease
        return lease

    @staticmethod
    async def _take(lease: Lock) -> bool:
        if lease.local.token is not None:
            with contextlib.suppress(LockError):
                return await lease.reacquire()
        return bool(await lease.acquire(blocking=False))

    async def _drain(self, channel: str, held: Held) -> int:
        """Send the channel's due items in order, until its lease is lost (another replica
        may then have it: going on could send an item twice, or out of order)."""
        sent = 0
        while not held.lost:
            raw = await self._redis.get(keys.outbox_not_before(channel))
            now = self._clock()
            if raw and float(raw) > now:
                self._wake = min(self._wake, float(raw))
                break
            entries = await self._redis.xrange(keys.outbox(channel), count=1)
            if not entries:
                await self._forget(
                    keys=[keys.outbox(channel), keys.outbox_channels()], args=[channel]
                )
                break
            item = Item.decode(entries[0])
            if await self._redis.exists(keys.outbox_sent(item.dedup)):
                await self._commit(channel, item, post_ts=None, pace=False)
                self.stats.skipped += 1
                logger.info("outbox: %s %s %s: skipped, already sent", channel, item.kind, item.id)
                continue
            kind, parent = await self._target(channel, item, now)
            if kind is None or not await self._deliver(channel, item, kind, parent):
                break
            sent += 1
        return sent

    async def _target(self, channel: str, item: Item, now: float) -> tuple[str | None, str | None]:
        """What to call for ``item``: its own kind, ``post`` for an orphan, or None to wait."""
        if item.kind == "post":
            return "post", None
        parent = await parent_ts(self._redis, item.alert)
        if parent is not None:
            self._waiting.pop((channel, item.id), None)
            return item.kind, parent
        since = self._waiting.setdefault((channel, item.id), now)
        if now - since >= self._orphan_after:
            logger.warning(
                "outbox: %s %s %s: parent never posted; posting it as a new parent",
                channel,
                item.kind,
                item.id,
            )
            self._waiting.pop((channel, item.id), None)
            return "post", None
        self._wake = min(self._wake, now + self._poll)
        return None, None

    async def _deliver(self, channel: str, item: Item, kind: str, parent: str | None) -> bool:
        """Send one item; True if the channel may go on to the next one."""
        try:
            ts = await self._call(channel, item, kind, parent)
        except SlackApiError as exc:
            return await self._failed(channel, item, exc)
        except NETWORK_ERRORS as exc:
            await self._retry_later(channel, item, type(exc).__name__)
            return False
        if self._after_send is not None:
            await self._after_send(channel, item)
        await self._commit(channel, item, post_ts=ts if kind == "post" else None, pace=True)
        self._attempts.pop(channel, None)
        self.stats.sent += 1
        _note_alert(logging.INFO, channel, item, "sent", f"sent (task {item.task or '-'})")
        return True

    async def _call(self, channel: str, item: Item, kind: str, parent: str | None) -> str:
        args: dict[str, Any] = {"channel": channel, "text": item.text}
        if item.blocks:
            args["blocks"] = item.blocks
        if kind == "update":
            response = await self._slack.chat_update(ts=cast(str, parent), **args)
        elif kind == "thread":
            response = await self._slack.chat_postMessage(thread_ts=parent, **args)
        else:
            response = await self._slack.chat_postMessage(**args)
        return str(response.get("ts", ""))

    async def _failed(self, channel: str, item: Item, exc: SlackApiError) -> bool:
        status = int(exc.response.status_code)
        error = str(exc.response.get("error") or "")
        if status == 429 or error == "ratelimited":
            wait = _retry_after(exc.response.headers, now=self._clock())
            await self._hold(channel, self._clock() + max(wait, self._min_interval))
            self.stats.throttled += 1
            _note_alert(
                logging.WARNING,
                channel,
                item,
                "retried",
                f"rate limited, channel waits {wait:.1f} s",
                error="ratelimited",
                wait_s=wait,
            )
            return False
        if error in PERMANENT:
            await self._park(channel, item, error)
            return False
        if status >= 500 or error in TRANSIENT or not error:
            await self._retry_later(channel, item, error or f"HTTP {status}")
            return False
        self.stats.failed += 1
        _note_alert(
            logging.ERROR,
            channel,
            item,
            "failed",
            f"dropped, Slack refused it: {error}",
            error=error,
        )
        await self._commit(channel, item, post_ts=None, pace=True)
        return True

    async def _park(self, channel: str, item: Item, error: str) -> None:
        await self._redis.hset(keys.outbox_parked(), channel, error)
        self.stats.failed += 1
        _note_alert(
            logging.WARNING,
            channel,
            item,
            "failed",
            f"{error}; channel parked",
            error=error,
            parked=True,
        )
        try:
            await self._on_permanent(channel, error)
        except Exception:
            logger.exception("outbox: pausing the watches of %s failed", channel)

    async def _retry_later(self, channel: str, item: Item, why: str) -> None:
        attempt = self._attempts.get(channel, 0) + 1
        self._attempts[channel] = attempt
        delay = min(self._backoff * 2 ** (attempt - 1), self._max_backoff)
        await self._hold(channel, self._clock() + delay)
        self.stats.retried += 1
        _note_alert(
            logging.WARNING,
            channel,
            item,
            "retried",
            f"{why}, retry {attempt} in {delay:.1f} s",
            error=why,
            wait_s=delay,
        )

    async def _hold(self, channel: str, until: float) -> None:
        await self._redis.set(keys.outbox_not_before(channel), repr(until), px=self._px(until))
        self._wake = min(self._wake, until)

    def _px(self, until: float) -> int:
        return max(int((until - self._clock()) * 1000), 0) + _NOT_BEFORE_MARGIN_MS

    async def _commit(self, channel: str, item: Item, *, post_ts: str | None, pace: bool) -> None:
        """Forget a delivered (or refused) item; a post's ts becomes its alert's parent."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xdel(keys.outbox(channel), item.id)
            if post_ts:
                queue_parent_ts(pipe, item.alert, post_ts)
            if item.dedup:
                pipe.set(keys.outbox_sent(item.dedup), "1", ex=_SENT_TTL)
            if pace:
                until = self._clock() + self._min_interval
                pipe.set(keys.outbox_not_before(channel), repr(until), px=self._px(until))
                self._wake = min(self._wake, until)
            await pipe.execute()


def _retry_after(headers: Any, *, now: float) -> float:
    """The wait a 429 asks for; a second when it names none that can be read."""
    raw = headers.get("Retry-After") or headers.get("retry-after")
    seconds = parse_retry_after(None if raw is None else str(raw), now=now)
    return 1.0 if seconds is None else seconds
