"""The mirror in Redis (its stand-ins for an outage are ``mirror_fallback``).

A task's snapshot is one Redis hash: ``meta`` (JSON: generation, views) and ``c0..cN``
(zlib-compressed JSON chunks of rows). It is replaced whole inside ``WATCH``/``MULTI``
(:func:`bot.storage.transact.transact`) so a reader never sees half a refresh and two
replicas never overwrite each other's refresh: :meth:`MirrorStore.update` re-merges the
loser's fetch onto the winner's snapshot. Compressed chunks keep Redis memory near 40
bytes per registry, and each process keeps the decoded snapshot of the current generation,
so a lookup usually costs one small ``HGET``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from bot.mirror import LARGE_SNAPSHOT, Change, Snapshot
from bot.models import TaskRef
from bot.storage import keys
from bot.storage.mirror_codec import (
    change_fields,
    change_of,
    decode_meta,
    decode_snapshot,
    encode_snapshot,
)
from bot.storage.transact import transact

logger = logging.getLogger(__name__)

#: A backstop on every task's change stream (XADD MAXLEN ~): what bounds a task nobody
#: watches, or a stream the alert pipeline stopped reading; the pipeline trims to its cursor.
CHANGES_MAXLEN = 10_000
CACHE_TASKS = 64
#: Decoded rows take about 400 bytes each in Python: bound the cache by rows, not tasks,
#: so a few 100,000-registry tasks cannot grow a replica by gigabytes.
CACHE_ROWS = 400_000

T = TypeVar("T")
#: What :meth:`MirrorStore.update` does to a snapshot: the new one and its status changes.
Updater = Callable[[Snapshot], Awaitable[tuple[Snapshot, Sequence[Change]]]]

# KEYS[1] = lock key; ARGV[1] = owner id; ARGV[2] = new TTL in ms
_EXTEND_SCRIPT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""
# KEYS[1] = lock key; ARGV[1] = owner id
_RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
"""


class MirrorStore(Protocol):
    async def load(self, ref: TaskRef) -> Snapshot: ...

    async def save(
        self, ref: TaskRef, snap: Snapshot, changes: Sequence[Change], *, expected: int
    ) -> bool:
        """Store ``snap`` if the stored generation is still ``expected``; False otherwise."""
        ...

    async def update(self, ref: TaskRef, change: Updater) -> tuple[Snapshot, Sequence[Change]]:
        """Store ``change(stored snapshot)``, read again and re-changed if another writer
        saved first; the snapshot stored and its changes. ``Contended`` if that never ends."""
        ...

    async def generation(self, ref: TaskRef) -> int: ...

    async def lock(self, ref: TaskRef, view: str, owner: str, ttl: float) -> bool:
        """Take the view's refresh lock for ``ttl`` seconds, unless someone holds it."""
        ...

    async def extend_lock(self, ref: TaskRef, view: str, owner: str, ttl: float) -> bool:
        """Give the lock ``ttl`` seconds from now, if ``owner`` still holds it."""
        ...

    async def unlock(self, ref: TaskRef, view: str, owner: str) -> bool:
        """Release the lock, if ``owner`` still holds it."""
        ...

    async def locked(self, ref: TaskRef, view: str) -> bool:
        """Someone holds the view's refresh lock: a fetch of it is under way."""
        ...

    async def changes(self, ref: TaskRef, after: str = "0") -> list[tuple[str, Change]]: ...

    async def get_auth_lock(self, scope: str) -> dict[str, Any] | None: ...

    async def set_auth_lock(self, scope: str, info: dict[str, Any] | None) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class ViewLock:
    """One task view's refresh lock (``keys.refresh_lock``) for ``owner``, through whichever
    store (Redis, memory, or failover between them): a ``bot.storage.lease.Lease``."""

    store: MirrorStore
    ref: TaskRef
    view: str
    owner: str
    ttl: float

    @property
    def name(self) -> str:
        return keys.refresh_lock(self.ref, self.view)

    async def acquire(self) -> bool:
        return await self.store.lock(self.ref, self.view, self.owner, self.ttl)

    async def extend(self) -> bool:
        return await self.store.extend_lock(self.ref, self.view, self.owner, self.ttl)

    async def release(self) -> bool:
        return await self.store.unlock(self.ref, self.view, self.owner)


# --- Redis ---


class RedisMirrorStore:
    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        # key -> (raw meta, snapshot). The raw meta, not just the generation, identifies a
        # save: if the key is lost (flush, restart without persistence) generations restart
        # from 0, but a new save's views carry new fetch times.
        self._cache: OrderedDict[str, tuple[bytes | None, Snapshot]] = OrderedDict()
        self._extend_script = redis.register_script(_EXTEND_SCRIPT)
        self._release_script = redis.register_script(_RELEASE_SCRIPT)

    async def generation(self, ref: TaskRef) -> int:
        return int(decode_meta(await self._redis.hget(keys.mirror(ref), "meta"))["gen"])

    async def load(self, ref: TaskRef) -> Snapshot:
        return await self._read(self._redis, keys.mirror(ref))

    async def _read(self, redis: aioredis.Redis | Pipeline, key: str) -> Snapshot:
        """The stored snapshot: this process's copy while the meta field says it is current."""
        cached = self._cache.get(key)
        if cached is not None and cached[0] == await redis.hget(key, "meta"):
            # Another read may have evicted it while we awaited: the copy is still good.
            self._remember(key, cached[0], cached[1])
            return cached[1]
        fields = cast("dict[bytes, bytes]", await redis.hgetall(key))
        if sum(len(v) for v in fields.values()) > LARGE_SNAPSHOT * 40:  # ~40 B a row
            snap = await asyncio.to_thread(decode_snapshot, fields)
        else:
            snap = decode_snapshot(fields)
        self._remember(key, fields.get(b"meta"), snap)
        return snap

    def last_known(self, ref: TaskRef) -> Snapshot | None:
        """The snapshot this process last read or wrote for ``ref``, without asking Redis."""
        cached = self._cache.get(keys.mirror(ref))
        return cached[1] if cached is not None else None

    def _remember(self, key: str, meta: bytes | None, snap: Snapshot) -> None:
        self._cache[key] = (meta, snap)
        self._cache.move_to_end(key)
        while len(self._cache) > 1 and (
            len(self._cache) > CACHE_TASKS
            or sum(len(s.rows) for _, s in self._cache.values()) > CACHE_ROWS
        ):
            self._cache.popitem(last=False)

    async def save(
        self, ref: TaskRef, snap: Snapshot, changes: Sequence[Change], *, expected: int
    ) -> bool:
        key = keys.mirror(ref)
        fields = await _encoded(snap)

        async def body(pipe: Pipeline) -> bool:
            if int(decode_meta(await pipe.hget(key, "meta"))["gen"]) != expected:
                return False
            _replace(pipe, ref, fields, changes)
            return True

        # A lost race is retried, and then refused here if the generation moved.
        if not await transact(self._redis, body, watch=[key]):
            return False
        self._remember(key, fields["meta"], snap)
        return True

    async def update(self, ref: TaskRef, change: Updater) -> tuple[Snapshot, Sequence[Change]]:
        key = keys.mirror(ref)

        async def body(pipe: Pipeline) -> tuple[Snapshot, Sequence[Change], bytes]:
            new, changes = await change(await self._read(pipe, key))
            fields = await _encoded(new)
            _replace(pipe, ref, fields, changes)
            return new, changes, fields["meta"]

        # Another replica saving first makes ours re-read its snapshot and change that.
        new, changes, meta = await transact(self._redis, body, watch=[key])
        self._remember(key, meta, new)
        return new, changes

    async def lock(self, ref: TaskRef, view: str, owner: str, ttl: float) -> bool:
        ok = await self._redis.set(keys.refresh_lock(ref, view), owner, nx=True, px=_ms(ttl))
        return bool(ok)

    async def extend_lock(self, ref: TaskRef, view: str, owner: str, ttl: float) -> bool:
        key = keys.refresh_lock(ref, view)
        return bool(await self._extend_script(keys=[key], args=[owner, _ms(ttl)]))

    async def unlock(self, ref: TaskRef, view: str, owner: str) -> bool:
        return bool(await self._release_script(keys=[keys.refresh_lock(ref, view)], args=[owner]))

    async def locked(self, ref: TaskRef, view: str) -> bool:
        return bool(await self._redis.exists(keys.refresh_lock(ref, view)))

    async def changes(self, ref: TaskRef, after: str = "0") -> list[tuple[str, Change]]:
        entries: list[tuple[bytes, dict[bytes, bytes]]] = await self._redis.xrange(  # type: ignore[assignment]
            keys.mirror_changes(ref), min=f"({after}" if after != "0" else "-"
        )
        return [(eid.decode(), change_of(f)) for eid, f in entries]

    async def trim_changes(self, ref: TaskRef, *, before: str) -> int:
        """Drop the change-stream entries older than id ``before`` (kept itself); how many.

        For the alert pipeline, with its committed cursor: ids only grow, so nothing saved
        after that cursor, however late, is below it, and a stale caller's smaller id trims
        less, never more (XTRIM MINID, exact)."""
        removed = await self._redis.xtrim(keys.mirror_changes(ref), minid=before, approximate=False)
        return int(removed)

    async def get_auth_lock(self, scope: str) -> dict[str, Any] | None:
        raw = await self._redis.get(keys.auth_lock(scope))
        return json.loads(raw) if raw else None

    async def set_auth_lock(self, scope: str, info: dict[str, Any] | None) -> None:
        if info is None:
            await self._redis.delete(keys.auth_lock(scope))
        else:
            await self._redis.set(keys.auth_lock(scope), json.dumps(info))


async def _encoded(snap: Snapshot) -> dict[str, bytes]:
    if len(snap.rows) > LARGE_SNAPSHOT:
        return await asyncio.to_thread(encode_snapshot, snap)
    return encode_snapshot(snap)


def _replace(
    pipe: Pipeline, ref: TaskRef, fields: Mapping[str, bytes], changes: Sequence[Change]
) -> None:
    """Queue the whole snapshot's replacement and its changes, in the caller's MULTI."""
    key = keys.mirror(ref)
    pipe.multi()  # type: ignore[no-untyped-call]
    pipe.delete(key)
    pipe.hset(key, mapping=fields)  # type: ignore[arg-type]
    for change in changes:
        pipe.xadd(
            keys.mirror_changes(ref),
            change_fields(change),  # type: ignore[arg-type]
            maxlen=CHANGES_MAXLEN,
            approximate=True,
        )


def _ms(seconds: float) -> int:
    if not seconds > 0:
        raise ValueError("a lock needs a positive TTL")
    return max(1, int(seconds * 1000))
