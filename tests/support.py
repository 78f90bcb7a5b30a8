"""Small pieces several test modules share."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from bot.sandbox.localstack import Stack, local_stack
from bot.sandbox.simulator import SimConfig
from tests.plugins.hss_sim import TEST_AK, TEST_PROJECT_ID, TEST_SK


class Clock:
    """A ``time.time`` stand-in that moves only when a test sets ``now``."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def alerting_stack(redis_url: str, task: str) -> AsyncIterator[Stack]:
    """A local deployment with watches on, refreshing every second, no budget pressure and
    fast alert delivery; ``task`` has 30 registries."""
    config = SimConfig(
        ak=TEST_AK, sk=TEST_SK, project_id=TEST_PROJECT_ID, rate_limit=1000, task_sizes={task: 30}
    )
    env = {"POLL_INTERVAL_SECONDS": "1", "HSS_RATE_LIMIT": "1000/60s"}
    async with local_stack(
        sim_config=config, env=env, redis_url=redis_url, watches=True, send_interval=0.05
    ) as running:
        yield running
