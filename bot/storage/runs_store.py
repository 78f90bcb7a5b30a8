"""The sync runs' mirror in Redis: the newest runs one list call returned, and when it was sent.

One hash per project and enterprise project (``keys.runs``): ``at`` (the epoch second the
list call was sent) and ``runs``, compact JSON (one array per run, fields in the order of
:data:`FIELDS`, no names repeated: 200 runs take about 25 KB). :meth:`RunsStore.save` keeps
whichever snapshot is newer, inside ``WATCH``/``MULTI``: two replicas whose list calls
finish out of order never put the older answer back.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from bot.runs import RUN_FIELDS, SyncRun
from bot.storage import keys
from bot.storage.transact import transact

logger = logging.getLogger(__name__)

#: The encoding's version: a snapshot of another version is ignored (the next list replaces
#: it), never misread.
VERSION = 1
#: A run's fields in the order its array holds them.
FIELDS = RUN_FIELDS


@dataclass(frozen=True, slots=True, kw_only=True)
class RunsSnapshot:
    """What one list call said."""

    #: Newest first, the newest <= 200 runs of any kind.
    runs: tuple[SyncRun, ...]
    #: Epoch s the list call was sent: the data's age.
    fetched_at: float


def encode_runs(runs: tuple[SyncRun, ...]) -> str:
    rows = [[getattr(run, name) for name in FIELDS] for run in runs]
    return json.dumps({"v": VERSION, "runs": rows}, separators=(",", ":"), ensure_ascii=False)


def decode_runs(raw: str | bytes) -> tuple[SyncRun, ...] | None:
    """The runs ``encode_runs`` wrote; None for anything else (another version, damage)."""
    try:
        doc = json.loads(raw)
        if not isinstance(doc, dict) or doc.get("v") != VERSION:
            return None
        return tuple(_run(row) for row in doc["runs"])
    except (ValueError, TypeError, KeyError):
        return None


def _run(row: Any) -> SyncRun:
    if not isinstance(row, list) or len(row) != len(FIELDS):
        raise ValueError("a run is an array of its fields")
    run = SyncRun(**dict(zip(FIELDS, row, strict=True)))
    texts = (run.task_id, run.task_name, run.task_type, run.failed_reason)
    counts = (run.failed_num, run.success_num, run.total_num)
    optional = (run.begin_time, run.end_time, run.task_status)
    if not all(isinstance(t, str) for t in texts):
        raise TypeError("a run's text field is not text")
    if not all(type(n) is int for n in counts):
        raise TypeError("a run's count is not a whole number")
    if not all(n is None or type(n) is int for n in optional):
        raise TypeError("a run's time or status is not a whole number")
    return run


def _at(raw: bytes | str | None) -> float | None:
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError:
        return None


class RunsStore:
    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis

    async def load(self, project_id: str, ep: str | None) -> RunsSnapshot | None:
        """The stored snapshot; None when there is none (or it cannot be read: the next
        list call replaces it)."""
        key = keys.runs(project_id, ep)
        raw_at, raw_runs = await self._redis.hmget(key, ["at", "runs"])
        at = _at(raw_at)
        if at is None or raw_runs is None:
            return None
        runs = decode_runs(raw_runs)
        if runs is None:
            logger.warning("the stored run list of %s cannot be read; ignored", key)
            return None
        return RunsSnapshot(runs=runs, fetched_at=at)

    async def fetched_at(self, project_id: str, ep: str | None) -> float | None:
        """When the stored snapshot's list call was sent (one small read)."""
        return _at(await self._redis.hget(keys.runs(project_id, ep), "at"))

    async def save(self, project_id: str, ep: str | None, snap: RunsSnapshot) -> None:
        """Keeps whichever of the stored and given snapshot is newer (by ``fetched_at``)."""
        key = keys.runs(project_id, ep)

        async def body(pipe: Pipeline) -> None:
            stored = _at(await pipe.hget(key, "at"))
            if stored is not None and stored >= snap.fetched_at:
                return
            pipe.multi()  # type: ignore[no-untyped-call]
            pipe.hset(key, mapping={"at": repr(snap.fetched_at), "runs": encode_runs(snap.runs)})

        await transact(self._redis, body, watch=[key])
