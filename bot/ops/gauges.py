"""The scrape-time gauges of ``/metrics``, read from Redis, and the whole ``/metrics`` body.

Gauges describing shared state (calls left in each API's budget, the age of each watched
task's mirror, the outbox) are read from Redis at scrape time, so every replica reports the
same current values and none goes stale between scrapes. The ``task`` label is used only for
tasks being watched right now (a task unwatched disappears at the next scrape).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import redis.asyncio as aioredis
from prometheus_client import generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bot.mirror import view_key
from bot.models import ApiFilter, HssApi, TaskRef
from bot.ops.metrics import REGISTRY
from bot.storage import keys
from bot.storage.mirror_codec import decode_meta
from bot.storage.outage import STORE_UNAVAILABLE
from bot.storage.replies import as_str
from bot.storage.watch_store import WatchStore

if TYPE_CHECKING:
    from bot.hss.budget import CallBudget


_FULL_VIEW = view_key(ApiFilter())


@dataclass(frozen=True, slots=True)
class Live:
    """What ``/metrics`` reads from Redis (None: could not be read this time)."""

    redis_up: bool
    #: API (``registries``, ``tasks``) -> calls that could start now.
    calls_left: Mapping[str, int] = field(default_factory=dict)
    outbox_depth: int | None = None
    parked_channels: int | None = None
    #: Task id -> seconds since its full view was fetched (``inf``: never fetched).
    mirror_ages: Mapping[str, float] = field(default_factory=dict)


def live_families(live: Live) -> list[Metric]:
    """The scrape-time gauges, pure."""
    up = GaugeMetricFamily(
        "hss_sync_redis_up", "1 if Redis answered this scrape, else 0.", value=int(live.redis_up)
    )
    left = GaugeMetricFamily(
        "hss_sync_budget_calls_left",
        "HSS calls that could start now within each API's shared budget (all replicas).",
        labels=["api"],
    )
    for api, calls in sorted(live.calls_left.items()):
        left.add_metric([api], calls)
    out: list[Metric] = [up, left]
    for name, doc, value in (
        (
            "hss_sync_outbox_depth",
            "Alert messages waiting in the outbox (every channel, parked ones included).",
            live.outbox_depth,
        ),
        (
            "hss_sync_outbox_parked_channels",
            "Channels whose alerts are held after a permanent Slack error.",
            live.parked_channels,
        ),
    ):
        if value is not None:
            out.append(GaugeMetricFamily(name, doc, value=value))
    if live.redis_up:
        ages = GaugeMetricFamily(
            "hss_sync_mirror_age_seconds",
            "Seconds since each watched task's registries were last fetched whole "
            "(+Inf: never yet).",
            labels=["task"],
        )
        for task, age in sorted(live.mirror_ages.items()):
            ages.add_metric([task], age)
        out.append(ages)
    return out


class _Families(Collector):
    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def render(live: Live) -> bytes:
    """The whole ``/metrics`` body: the process's counters and this scrape's gauges.

    Built per scrape rather than stored in gauges: two apps in one process (tests) or two
    concurrent scrapes cannot see each other's values."""
    return generate_latest(REGISTRY) + generate_latest(_Families(live_families(live)))


async def read_live(
    *,
    redis: aioredis.Redis,
    budgets: Mapping[HssApi, CallBudget],
    watches: WatchStore,
    now: float | None = None,
) -> Live:
    """Read the scrape-time state. Calls left come from each API's budget (``budgets``: API
    -> budget), which falls back to its in-process count while Redis is down; the rest
    needs Redis."""
    now = time.time() if now is None else now
    calls_left = {api.value: await budget.calls_left() for api, budget in budgets.items()}
    try:
        ages = await mirror_ages(redis, await watches.watched_tasks(), now)
        depth, parked = await outbox_state(redis)
    except STORE_UNAVAILABLE:
        return Live(redis_up=False, calls_left=calls_left)
    return Live(
        redis_up=True,
        calls_left=calls_left,
        outbox_depth=depth,
        parked_channels=parked,
        mirror_ages=ages,
    )


async def mirror_ages(redis: aioredis.Redis, tasks: list[TaskRef], now: float) -> dict[str, float]:
    """Task id -> age of its full view; the oldest when one id is watched under several
    enterprise projects (the label is the task id alone)."""
    async with redis.pipeline(transaction=False) as pipe:
        for ref in tasks:
            pipe.hget(keys.mirror(ref), "meta")  # the small field only, not the rows
        metas = await pipe.execute()
    ages: dict[str, float] = {}
    for ref, meta in zip(tasks, metas, strict=True):
        view = decode_meta(meta)["views"].get(_FULL_VIEW)
        age = max(0.0, now - float(view[0])) if view else math.inf
        ages[ref.task_id] = max(age, ages.get(ref.task_id, 0.0))
    return ages


async def outbox_state(redis: aioredis.Redis) -> tuple[int, int]:
    """(items waiting in every channel's outbox stream, parked channels)."""
    channels = sorted(await redis.smembers(keys.outbox_channels()))
    async with redis.pipeline(transaction=False) as pipe:
        for channel in channels:
            pipe.xlen(keys.outbox(as_str(channel)))
        pipe.hlen(keys.outbox_parked())
        *lengths, parked = await pipe.execute()
    return sum(int(n) for n in lengths), int(parked)
