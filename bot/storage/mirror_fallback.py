"""The mirror store's stand-ins: the same contract in one process's memory, and the
failover that uses Redis when it answers and memory while it does not."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from bot.mirror import Change, Snapshot
from bot.models import TaskRef
from bot.storage.mirror_store import (
    CHANGES_MAXLEN,
    MirrorStore,
    RedisMirrorStore,
    Updater,
)
from bot.storage.outage import REDIS_OUTAGE, RedisHealth

T = TypeVar("T")


class MemoryMirrorStore:
    """The same contract in one process: used while Redis is unreachable."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._snaps: dict[TaskRef, Snapshot] = {}
        self._changes: dict[TaskRef, list[tuple[str, Change]]] = {}
        self._locks: dict[tuple[TaskRef, str], tuple[str, float]] = {}
        self._auth: dict[str, dict[str, Any]] = {}
        self._clock = clock
        # One writer at a time: an update awaits its change between its read and its write.
        self._writing = asyncio.Lock()

    async def generation(self, ref: TaskRef) -> int:
        return self._snaps.get(ref, Snapshot()).generation

    def seed(self, ref: TaskRef, snap: Snapshot) -> None:
        """Start from ``snap`` unless this store already holds something for ``ref``."""
        self._snaps.setdefault(ref, snap)

    async def load(self, ref: TaskRef) -> Snapshot:
        return self._snaps.get(ref, Snapshot())

    async def save(
        self, ref: TaskRef, snap: Snapshot, changes: Sequence[Change], *, expected: int
    ) -> bool:
        async with self._writing:
            if await self.generation(ref) != expected:
                return False
            self._store(ref, snap, changes)
            return True

    async def update(self, ref: TaskRef, change: Updater) -> tuple[Snapshot, Sequence[Change]]:
        async with self._writing:
            new, changes = await change(await self.load(ref))
            self._store(ref, new, changes)
            return new, changes

    def _store(self, ref: TaskRef, snap: Snapshot, changes: Sequence[Change]) -> None:
        self._snaps[ref] = snap
        log = self._changes.setdefault(ref, [])
        log.extend((f"{snap.generation}-{i}", c) for i, c in enumerate(changes))
        del log[:-CHANGES_MAXLEN]

    async def lock(self, ref: TaskRef, view: str, owner: str, ttl: float) -> bool:
        held = self._locks.get((ref, view))
        if held is not None and held[1] > self._clock():
            return False
        self._locks[(ref, view)] = (owner, self._clock() + ttl)
        return True

    async def extend_lock(self, ref: TaskRef, view: str, owner: str, ttl: float) -> bool:
        if not self._holds(ref, view, owner):
            return False
        self._locks[(ref, view)] = (owner, self._clock() + ttl)
        return True

    async def unlock(self, ref: TaskRef, view: str, owner: str) -> bool:
        if not self._holds(ref, view, owner):
            return False
        del self._locks[(ref, view)]
        return True

    async def locked(self, ref: TaskRef, view: str) -> bool:
        held = self._locks.get((ref, view))
        return held is not None and held[1] > self._clock()

    def _holds(self, ref: TaskRef, view: str, owner: str) -> bool:
        held = self._locks.get((ref, view))
        return held is not None and held[0] == owner and held[1] > self._clock()

    async def changes(self, ref: TaskRef, after: str = "0") -> list[tuple[str, Change]]:
        log = self._changes.get(ref, [])
        if after == "0":
            return list(log)
        ids = [eid for eid, _ in log]
        return log[ids.index(after) + 1 :] if after in ids else list(log)

    async def get_auth_lock(self, scope: str) -> dict[str, Any] | None:
        return self._auth.get(scope)

    async def set_auth_lock(self, scope: str, info: dict[str, Any] | None) -> None:
        if info is None:
            self._auth.pop(scope, None)
        else:
            self._auth[scope] = info


class FailoverMirrorStore:
    """Redis when it answers, memory while it does not: lookups keep working through an
    outage and go back to the shared mirror by themselves. ``health`` is shared with the
    call budget, so an outage is logged once and probed once per interval."""

    def __init__(
        self,
        primary: RedisMirrorStore,
        fallback: MemoryMirrorStore,
        *,
        health: RedisHealth | None = None,
    ) -> None:
        self._primary = primary
        self._fallback = fallback
        self._health = health or RedisHealth()

    async def _call(self, use: Callable[[MirrorStore], Awaitable[T]]) -> T:
        if self._health.should_try():
            try:
                result = await use(self._primary)
            except REDIS_OUTAGE as exc:
                self._health.failed(exc)
            else:
                self._health.succeeded()
                return result
        return await use(self._fallback)

    async def generation(self, ref: TaskRef) -> int:
        return await self._call(lambda s: s.generation(ref))

    async def load(self, ref: TaskRef) -> Snapshot:
        return await self._call(lambda s: self._seeded(s, ref).load(ref))

    def _seeded(self, store: MirrorStore, ref: TaskRef) -> MirrorStore:
        # An outage should not forget what this process already knew about the task.
        if store is self._fallback:
            known = self._primary.last_known(ref)
            if known is not None:
                self._fallback.seed(ref, known)
        return store

    async def save(
        self, ref: TaskRef, snap: Snapshot, changes: Sequence[Change], *, expected: int
    ) -> bool:
        return await self._call(lambda s: s.save(ref, snap, changes, expected=expected))

    async def update(self, ref: TaskRef, change: Updater) -> tuple[Snapshot, Sequence[Change]]:
        return await self._call(lambda s: self._seeded(s, ref).update(ref, change))

    async def lock(self, ref: TaskRef, view: str, owner: str, ttl: float) -> bool:
        return await self._call(lambda s: s.lock(ref, view, owner, ttl))

    async def extend_lock(self, ref: TaskRef, view: str, owner: str, ttl: float) -> bool:
        return await self._call(lambda s: s.extend_lock(ref, view, owner, ttl))

    async def unlock(self, ref: TaskRef, view: str, owner: str) -> bool:
        return await self._call(lambda s: s.unlock(ref, view, owner))

    async def locked(self, ref: TaskRef, view: str) -> bool:
        return await self._call(lambda s: s.locked(ref, view))

    async def changes(self, ref: TaskRef, after: str = "0") -> list[tuple[str, Change]]:
        return await self._call(lambda s: s.changes(ref, after))

    async def get_auth_lock(self, scope: str) -> dict[str, Any] | None:
        return await self._call(lambda s: s.get_auth_lock(scope))

    async def set_auth_lock(self, scope: str, info: dict[str, Any] | None) -> None:
        await self._call(lambda s: s.set_auth_lock(scope, info))
