"""Keeping a lease while work runs: ``async with keep_alive(lease) as held:``.

A lease is a lock with a TTL that its user has just taken (each takes it its own way: the
scheduler and the outbox a redis-py ``Lock`` through :class:`RedisLease`, the lookup service
the mirror store's view lock). :func:`keep_alive` extends it back to its full TTL every third
of the TTL while the body runs, then releases it.

One rule for outages, whoever holds the lease:

- an extension that fails because Redis is unreachable (``REDIS_OUTAGE``) is retried at the
  next tick: a short outage costs nothing;
- the lease is *lost* once an extension is refused (it expired during a stall, or another
  owner holds it now), or once a whole TTL has passed since the last extension that went
  through (Redis stayed away: the lease has expired by itself, as a dead replica's would).
  Keeping then ends and ``held.lost`` turns True: a body whose work must be exclusive (the
  outbox, sending a channel's items in order) stops; one whose work is merely wasted if
  duplicated (a refresh) may finish;
- the release at the end is best effort: if the lease is lost or Redis is away, it expires
  by itself.

The keeper is told to stop (an ``asyncio.Event``), never cancelled: redis-py can swallow a
cancellation that lands inside a command, and the keeper would then extend the lease forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Protocol

from redis.asyncio.lock import Lock
from redis.exceptions import LockError

from bot.storage.outage import REDIS_OUTAGE

logger = logging.getLogger(__name__)


class Lease(Protocol):
    """A lock its holder has taken, with a TTL it can reset."""

    @property
    def name(self) -> str: ...

    @property
    def ttl(self) -> float:
        """Seconds the lease lives after each extension."""
        ...

    async def extend(self) -> bool:
        """Reset the TTL; False if the lease is not ours any more. Outages raise."""
        ...

    async def release(self) -> bool:
        """Give the lease up; False if it was not ours any more. Outages raise."""
        ...


class RedisLease:
    """A redis-py ``Lock`` (with a timeout, already acquired) as a :class:`Lease`."""

    def __init__(self, lock: Lock) -> None:
        if not lock.timeout:
            raise ValueError("a lease needs a timeout")
        self._lock = lock

    @property
    def name(self) -> str:
        return str(self._lock.name)

    @property
    def ttl(self) -> float:
        return float(self._lock.timeout or 0)

    async def extend(self) -> bool:
        try:
            await self._lock.reacquire()  # back to the full timeout, if the token is ours
        except LockError:
            return False
        return True

    async def release(self) -> bool:
        try:
            await self._lock.release()
        except LockError:
            return False
        return True


class Held:
    """What the body sees of its lease while it runs."""

    def __init__(self, name: str, ttl: float) -> None:
        self.name = name
        self._valid_until = time.monotonic() + ttl  # taken just before
        self._refused = False

    @property
    def lost(self) -> bool:
        """Refused by Redis, or one TTL past the last extension that went through."""
        return self._refused or time.monotonic() >= self._valid_until

    def note_extended(self, sent_at: float, ttl: float) -> None:
        # From when the extension was sent: Redis started the new TTL no earlier.
        self._valid_until = sent_at + ttl

    def note_refused(self) -> None:
        self._refused = True


@contextlib.asynccontextmanager
async def keep_alive(lease: Lease) -> AsyncIterator[Held]:
    """Keep ``lease`` (taken just before) while the body runs, then release it."""
    held = Held(lease.name, lease.ttl)
    stop = asyncio.Event()
    keeper = asyncio.create_task(_keep(lease, held, stop))
    try:
        yield held
    finally:
        stop.set()
        await asyncio.wait({keeper})
        with contextlib.suppress(*REDIS_OUTAGE):
            await lease.release()


async def _keep(lease: Lease, held: Held, stop: asyncio.Event) -> None:
    while not await _stopped(stop, lease.ttl / 3) and not held.lost:
        sent_at = time.monotonic()
        try:
            extended = await lease.extend()
        except REDIS_OUTAGE as exc:
            logger.debug("lease %s not extended (%s); next tick", lease.name, type(exc).__name__)
            continue
        except Exception:
            logger.exception("lease %s: extending failed; taken as lost", lease.name)
            extended = False
        if not extended:
            held.note_refused()
            return
        held.note_extended(sent_at, lease.ttl)


async def _stopped(stop: asyncio.Event, timeout: float) -> bool:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout)
    return stop.is_set()
