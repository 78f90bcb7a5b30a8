"""Prometheus metrics: their definitions, on a registry of our own, and the ``/metrics`` text.

Counters and histograms move where their events happen (the Slack ack, lookups, HSS calls,
the call budget, alerting, the outbox). Gauges describing shared state (calls left, the age
of each watched task's mirror, the outbox) are read from Redis at scrape time instead, so
every replica reports the same current values and none goes stale between scrapes.

Label values are bounded: fixed word lists, HTTP status codes, and the ``task`` label only
for tasks being watched right now (a task unwatched disappears at the next scrape).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import redis.asyncio as aioredis
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState

from bot.errors import StoreError
from bot.mirror import view_key
from bot.models import ApiFilter, TaskRef
from bot.storage import keys
from bot.storage.mirror_store import decode_meta
from bot.storage.outage import REDIS_OUTAGE
from bot.storage.watch_store import WatchStore

if TYPE_CHECKING:
    from bot.hss.budget import CallBudget

#: Not the client library's global registry: nothing another library registers leaks into
#: our output, and tests read exactly what the bot defines.
REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(namespace="hss_sync", registry=REGISTRY)

LOOKUP_OUTCOMES = ("fresh", "refreshed", "failed", "gave_up")
ACK_KINDS = ("command", "action", "event", "other")
PRIORITIES = ("interactive", "background")
FLIP_KINDS = ("failure", "recovery", "retry", "removed")
ALERT_RESULTS = ("sent", "retried", "failed")

LOOKUPS = Counter(
    "hss_sync_lookups",
    "Lookups answered (slash command, Refresh, Show details), by outcome: fresh (from the "
    "mirror, no call), refreshed (after fetching), failed (an error was shown), gave_up "
    "(no fresh data in time).",
    ["outcome"],
    registry=REGISTRY,
)
ACK_SECONDS = Histogram(
    "hss_sync_ack_seconds",
    "Time from a Slack request reaching the app to its ack being ready, by kind "
    "(command, action, event, other). Slack gives up after 3 s.",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0),
    registry=REGISTRY,
)
HSS_CALLS = Counter(
    "hss_sync_hss_calls",
    "HTTP attempts to HSS ListAssociateRegistries (retries included), by HTTP status code, "
    "or timeout / network / cancelled / error when no response came.",
    ["status"],
    registry=REGISTRY,
)
BUDGET_WAIT = Histogram(
    "hss_sync_budget_wait_seconds",
    "Time an HSS call waited for a slot of the shared call budget, by priority "
    "(interactive, background).",
    ["priority"],
    buckets=(0.01, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0),
    registry=REGISTRY,
)
FLIPS = Counter(
    "hss_sync_flips",
    "Registry status flips found in the refreshes of watched tasks, by kind "
    "(failure, recovery, retry, removed).",
    ["kind"],
    registry=REGISTRY,
)
ALERTS = Counter(
    "hss_sync_alerts",
    "Alert messages (posts, updates, thread lines) handed to Slack, by result: sent, "
    "retried (Slack was busy or unreachable; sent again later), failed (refused: dropped, "
    "or its channel parked).",
    ["result"],
    registry=REGISTRY,
)
SLACK_429 = Counter(
    "hss_sync_slack_429",
    "HTTP 429 (rate limited) answers from the Slack Web API.",
    registry=REGISTRY,
)

# Every known label value from the start: a rate over a series that appears only with its
# first event misses that event, and dashboards show 0 instead of nothing.
for _outcome in LOOKUP_OUTCOMES:
    LOOKUPS.labels(_outcome)
for _kind in ACK_KINDS:
    ACK_SECONDS.labels(_kind)
for _priority in PRIORITIES:
    BUDGET_WAIT.labels(_priority)
for _flip in FLIP_KINDS:
    FLIPS.labels(_flip)
for _result in ALERT_RESULTS:
    ALERTS.labels(_result)


def hss_status_label(status: int | None, error_code: str = "") -> str:
    """``hss_sync_hss_calls`` label: the HTTP status, else what kept the response away."""
    if status is not None:
        return str(status)
    if error_code == "TIMEOUT":
        return "timeout"
    if error_code == "NETWORK":
        return "network"
    if error_code == "CANCELLED":
        return "cancelled"
    return "error"


class CountSlack429(AsyncRetryHandler):
    """Counts the Slack Web API's 429s, retrying nothing itself. Put it first among a
    client's retry handlers: the client asks them in order and stops at the first taker."""

    async def can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        # With ``error`` set, ``response`` is the previous attempt's, already counted.
        if error is None and response is not None and response.status_code == 429:
            SLACK_429.inc()
        return False


# --- state read at scrape time -----------------------------------------------------------------

_FULL_VIEW = view_key(ApiFilter())
_UNREADABLE: tuple[type[BaseException], ...] = (StoreError, *REDIS_OUTAGE)


@dataclass(frozen=True, slots=True)
class Live:
    """What ``/metrics`` reads from Redis (None: could not be read this time)."""

    redis_up: bool
    calls_left: int | None = None
    outbox_depth: int | None = None
    parked_channels: int | None = None
    #: Task id -> seconds since its full view was fetched (``inf``: never fetched).
    mirror_ages: Mapping[str, float] = field(default_factory=dict)


def live_families(live: Live) -> list[Metric]:
    """The scrape-time gauges, pure."""
    up = GaugeMetricFamily(
        "hss_sync_redis_up", "1 if Redis answered this scrape, else 0.", value=int(live.redis_up)
    )
    out: list[Metric] = [up]
    for name, doc, value in (
        (
            "hss_sync_budget_calls_left",
            "HSS calls that could start now within the shared budget (all replicas).",
            live.calls_left,
        ),
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
    budget: CallBudget,
    watches: WatchStore,
    now: float | None = None,
) -> Live:
    """Read the scrape-time state. Calls left come from the budget, which falls back to its
    in-process count while Redis is down; the rest needs Redis."""
    now = time.time() if now is None else now
    calls_left = await budget.calls_left()
    try:
        ages = await mirror_ages(redis, await watches.watched_tasks(), now)
        depth, parked = await outbox_state(redis)
    except _UNREADABLE:
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
            pipe.xlen(keys.outbox(channel.decode() if isinstance(channel, bytes) else channel))
        pipe.hlen(keys.outbox_parked())
        *lengths, parked = await pipe.execute()
    return sum(int(n) for n in lengths), int(parked)
