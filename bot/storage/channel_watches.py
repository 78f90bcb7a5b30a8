"""What every kind of watch shares: its channel, filters, creator, pause and mute, and the way
a channel's watches of one kind are kept in Redis (one HASH per channel, a JSON record per
field, changed under ``WATCH``/``MULTI``).

A watch is *paused* when its channel stopped taking messages (the reason is Slack's error
code, shown in ``watches``) and *muted* by people until a time. Both stop alerts; neither
stops the data behind the watch from being kept current, so alerts resume from the present
instead of replaying old changes. A mute expires by itself: ``muted_until`` is compared with
the clock, nothing has to clear it.

Task watches (:mod:`bot.storage.watch_store`) and run watches
(:mod:`bot.storage.run_watch_store`) are built on this.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any, Generic, Self, TypeVar, cast

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from bot.errors import StoreError
from bot.storage.outage import REDIS_OUTAGE
from bot.storage.transact import Contended, transact

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelWatch:
    """The fields and rules every kind of watch has."""

    channel: str
    types: frozenset[str] = frozenset()
    name: str | None = None
    created_by: str
    created_at: float
    #: Slack's error code that made the channel unusable; None while the watch is active.
    paused_reason: str | None = None
    paused_at: float | None = None
    muted_until: float | None = None

    @property
    def paused(self) -> bool:
        return self.paused_reason is not None

    def muted(self, now: float) -> bool:
        return self.muted_until is not None and now < self.muted_until

    def alerts(self, now: float) -> bool:
        """Whether a change seen at ``now`` should be posted to the channel."""
        return not self.paused and not self.muted(now)

    def pausing(self, reason: str, now: float) -> Self:
        """Paused for ``reason``; a watch already paused keeps the time it was first paused."""
        return replace(self, paused_reason=reason, paused_at=self.paused_at or now)

    def resuming(self) -> Self:
        return replace(self, paused_reason=None, paused_at=None)


W = TypeVar("W", bound=ChannelWatch)

#: The shared fields stored as they are (the channel is the key, the types are a list).
_PLAIN = ("name", "created_by", "created_at", "paused_reason", "paused_at", "muted_until")


@contextlib.contextmanager
def outage() -> Iterator[None]:
    """Redis down is a :class:`StoreError` with a sentence for people."""
    # No in-memory fallback: a watch that only one process remembered would be lost on
    # restart and unknown to the other replicas. Tell the user instead.
    try:
        yield
    except REDIS_OUTAGE as exc:
        raise StoreError(
            "Watches are kept in Redis, which is not answering right now; try again shortly."
        ) from exc


class ChannelRecords(Generic[W]):
    """One kind of watch: a HASH per channel (``key(channel)``), field -> JSON record.

    A record holds the shared fields plus ``fields(watch)``; ``arguments(record)`` turns
    those back into ``kind``'s constructor arguments (raising KeyError, ValueError or
    TypeError when it cannot). ``order`` sorts a channel's watches."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        kind: type[W],
        key: Callable[[str], str],
        fields: Callable[[W], dict[str, Any]],
        arguments: Callable[[dict[str, Any]], dict[str, Any]],
        order: Callable[[W], Any],
    ) -> None:
        self.redis = redis
        self.key = key
        self._kind = kind
        self._fields = fields
        self._arguments = arguments
        self._order = order

    def encode(self, watch: W) -> str:
        record: dict[str, Any] = {f: getattr(watch, f) for f in _PLAIN}
        record.update(v=1, types=sorted(watch.types), **self._fields(watch))
        return json.dumps(record, separators=(",", ":"))

    def decode(self, channel: str, raw: bytes | str) -> W | None:
        """The watch, or None (logged) if its record cannot be read: one bad record must not
        hide the channel's other watches."""
        try:
            d: dict[str, Any] = json.loads(raw)
            shared = {f: d[f] for f in _PLAIN}
            types = frozenset(d["types"])
            return self._kind(channel=channel, types=types, **shared, **self._arguments(d))
        except (ValueError, KeyError, TypeError):
            logger.warning("unreadable %s record in channel %s", self._kind.__name__, channel)
            return None

    def sorted(self, watches: Iterable[W]) -> list[W]:
        return sorted(watches, key=self._order)

    async def transact(self, watched: list[str], body: Callable[[Pipeline], Awaitable[T]]) -> T:
        """:func:`~bot.storage.transact.transact`, in the watch stores' words."""
        with outage():
            try:
                return await transact(self.redis, body, watch=watched)
            except Contended:
                raise StoreError("Watches are changing too fast to update; try again.") from None

    async def read(self, pipe: Pipeline, channel: str, field: str) -> W | None:
        raw = await pipe.hget(self.key(channel), field)
        return self.decode(channel, raw) if raw is not None else None

    async def modify(self, channel: str, field: str, change: Callable[[W], W]) -> W | None:
        """Change one watch; None (and nothing written) if there is none."""
        chan_key = self.key(channel)

        async def body(pipe: Pipeline) -> W | None:
            old = await self.read(pipe, channel, field)
            if old is None:
                return None
            new = change(old)
            pipe.multi()  # type: ignore[no-untyped-call]
            pipe.hset(chan_key, field, self.encode(new))
            return new

        return await self.transact([chan_key], body)

    async def rewrite(self, channel: str, change: Callable[[W], W]) -> list[W]:
        """Change every readable watch of ``channel`` in one MULTI; the changed watches."""
        chan_key = self.key(channel)

        async def body(pipe: Pipeline) -> list[W]:
            raw = cast("dict[bytes, bytes]", await pipe.hgetall(chan_key))
            pairs = [(f, self.decode(channel, v)) for f, v in raw.items()]
            new = {f: change(w) for f, w in pairs if w is not None}
            if new:
                pipe.multi()  # type: ignore[no-untyped-call]
                pipe.hset(chan_key, mapping={f: self.encode(w) for f, w in new.items()})
            return self.sorted(new.values())

        return await self.transact([chan_key], body)

    async def pause(self, channel: str, reason: str, now: float) -> list[W]:
        if not reason:
            raise ValueError("a pause needs Slack's reason")
        return await self.rewrite(channel, lambda w: w.pausing(reason, now))

    async def resume(self, channel: str) -> list[W]:
        return await self.rewrite(channel, lambda w: w.resuming())

    async def get(self, channel: str, field: str) -> W | None:
        with outage():
            raw = await self.redis.hget(self.key(channel), field)
        return self.decode(channel, raw) if raw is not None else None

    async def of_channel(self, channel: str) -> list[W]:
        with outage():
            raw = await self.redis.hgetall(self.key(channel))
        found = (self.decode(channel, v) for v in raw.values())
        return self.sorted(w for w in found if w is not None)

    async def of_channels(self, channels: list[str]) -> list[W]:
        """The watches of ``channels``, by channel then ``order``, in one round trip."""
        with outage():
            async with self.redis.pipeline(transaction=False) as pipe:
                for channel in channels:
                    pipe.hgetall(self.key(channel))
                raws: list[dict[bytes, bytes]] = await pipe.execute()
        found = (
            self.decode(c, v) for c, raw in zip(channels, raws, strict=True) for v in raw.values()
        )
        readable = (w for w in found if w is not None)
        return sorted(readable, key=lambda w: (w.channel, self._order(w)))
