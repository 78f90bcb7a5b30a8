"""What the follower keeps about each followed run, as stored: read and written here only.

Two hashes per run (``keys.run_follow``, ``keys.run_alert`` per channel, both with the TTL
``keys.RUN_STATE_TTL``):

- the run: its progress and counts as last listed, when they last moved (for "stuck"), the
  counts the channels were last told about (so a failed view is fetched only when they
  change), and ``done`` once it ended and every channel was told;
- each channel's :class:`~bot.alerting.run_flips.ChannelRun` (field ``state``), what its
  message shows (``view``: the run, its diff and the kind of the watch it came through, so
  the Acknowledge and Mute buttons can render it again), who acknowledged it (``acked_by``),
  and the ``parent_ts`` the outbox records when it posts the run's message.

Unreadable state is logged and read as new (the worst case is a repeated message, never a
lost one).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from bot.alerting.flips import Flip
from bot.alerting.run_flips import ChannelRun, RunDiff, failed_flip
from bot.models import LookupRequest
from bot.runs import RunKind, SyncRun
from bot.storage import keys
from bot.storage.replies import as_str

logger = logging.getLogger(__name__)

Progress = tuple[int | None, int, int, int]
#: What a failed view was fetched and told for: failed count, total, ended.
Told = tuple[int, int, bool]


@dataclass(frozen=True, slots=True)
class RunSeen:
    progress: Progress
    changed_at: float
    told: Told | None = None
    done: bool = False


def _fields(raw: Mapping[bytes, bytes] | Mapping[str, str]) -> dict[str, str]:
    return {as_str(k): as_str(v) for k, v in raw.items()}


def decode_seen(raw: Mapping[bytes, bytes] | Mapping[str, str]) -> RunSeen | None:
    d = _fields(raw)
    if "progress" not in d:
        return None
    try:
        status, failed, success, total = json.loads(d["progress"])
        told = json.loads(d["told"]) if "told" in d else None
        return RunSeen(
            progress=(
                None if status is None else int(status),
                int(failed),
                int(success),
                int(total),
            ),
            changed_at=float(d["changed_at"]),
            told=None if told is None else (int(told[0]), int(told[1]), bool(told[2])),
            done=d.get("done") == "1",
        )
    except (ValueError, KeyError, TypeError):
        logger.warning("unreadable run state; following the run afresh")
        return None


def encode_seen(seen: RunSeen) -> dict[str, str]:
    fields = {
        "progress": json.dumps(list(seen.progress)),
        "changed_at": repr(seen.changed_at),
        "done": "1" if seen.done else "0",
    }
    if seen.told is not None:
        fields["told"] = json.dumps(list(seen.told))
    return fields


async def read_seen(redis: aioredis.Redis, key: str) -> RunSeen | None:
    return decode_seen(cast("dict[bytes, bytes]", await redis.hgetall(key)))


async def write_seen(redis: aioredis.Redis, key: str, seen: RunSeen) -> None:
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(key, mapping={k: v for k, v in encode_seen(seen).items()})
        pipe.expire(key, keys.RUN_STATE_TTL)
        await pipe.execute()


def decode_channel(raw: str | bytes | None) -> ChannelRun:
    if raw is None:
        return ChannelRun()
    try:
        d: dict[str, Any] = json.loads(raw)
        return ChannelRun(
            posted=bool(d["posted"]),
            shown=str(d["shown"]),
            failing=frozenset(str(x) for x in d["failing"]),
            ended=bool(d["ended"]),
            stuck=bool(d["stuck"]),
            closed=bool(d["closed"]),
        )
    except (ValueError, KeyError, TypeError):
        logger.warning("unreadable run alert state; starting it afresh")
        return ChannelRun()


def encode_channel(state: ChannelRun) -> str:
    doc = {
        "posted": state.posted,
        "shown": state.shown,
        "failing": sorted(state.failing),
        "ended": state.ended,
        "stuck": state.stuck,
        "closed": state.closed,
    }
    return json.dumps(doc, separators=(",", ":"))


async def read_channel(redis: aioredis.Redis | Pipeline, key: str) -> ChannelRun:
    """The channel's state (through a WATCHing pipeline, under its ``WATCH``)."""
    return decode_channel(await redis.hget(key, "state"))


def queue_channel(pipe: Pipeline, key: str, state: ChannelRun) -> None:
    """Queue writing the channel's state (after ``multi()``); ``parent_ts`` stays."""
    pipe.hset(key, "state", encode_channel(state))
    pipe.expire(key, keys.RUN_STATE_TTL)


# --- what the message shows, for the buttons ------------------------------------------------

ACKED_BY = "acked_by"
_ALL_KINDS = "all"


@dataclass(frozen=True, slots=True)
class RunView:
    """What a channel's run message shows, and the kind of the watch it came through."""

    run: SyncRun
    diff: RunDiff
    kind: RunKind | None
    #: The watch's filters (the message shows them, and its buttons carry them).
    types: frozenset[str] = frozenset()
    name: str | None = None

    @property
    def scope(self) -> LookupRequest:
        return LookupRequest(task_id=self.run.task_id, types=self.types, name=self.name)


def _rows(flips: tuple[Flip, ...]) -> list[list[object]]:
    return [[f.registry_id, f.name, f.type, f.reason, f.at] for f in flips]


def _flips(rows: list[list[Any]]) -> tuple[Flip, ...]:
    return tuple(failed_flip(str(a), str(b), str(c), str(d), float(e)) for a, b, c, d, e in rows)


def encode_view(view: RunView) -> str:
    diff = view.diff
    doc = {
        "run": view.run.as_api_dict(),
        "new": _rows(diff.new),
        "still": _rows(diff.still),
        "recovered": _rows(diff.recovered),
        "previous": diff.previous_failed,
        "kind": view.kind.value if view.kind is not None else _ALL_KINDS,
        "types": sorted(view.types),
        "name": view.name,
    }
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)


def decode_view(raw: str | bytes | None) -> RunView | None:
    if raw is None:
        return None
    try:
        doc: dict[str, Any] = json.loads(raw)
        diff = RunDiff(
            new=_flips(doc["new"]),
            still=_flips(doc["still"]),
            recovered=_flips(doc["recovered"]),
            previous_failed=int(doc["previous"]),
        )
        kind = None if doc["kind"] == _ALL_KINDS else RunKind(doc["kind"])
        name = doc["name"]
        return RunView(
            run=SyncRun(**doc["run"]),
            diff=diff,
            kind=kind,
            types=frozenset(str(t) for t in doc["types"]),
            name=None if name is None else str(name),
        )
    except (ValueError, KeyError, TypeError):
        logger.warning("unreadable run message; its buttons cannot change it")
        return None


def queue_view(pipe: Pipeline, key: str, view: RunView) -> None:
    """Queue recording what the message shows (after ``multi()``)."""
    pipe.hset(key, "view", encode_view(view))


async def read_view(
    redis: aioredis.Redis | Pipeline, key: str
) -> tuple[RunView, str | None] | None:
    """What the channel's run message shows and who acknowledged it; None: no message."""
    view, acked = await redis.hmget(key, ["view", ACKED_BY])
    shown = decode_view(view)
    return None if shown is None else (shown, as_str(acked) if acked else None)


async def ack(redis: aioredis.Redis, key: str, user: str) -> None:
    await redis.hset(key, ACKED_BY, user)
