"""HSS simulator fixtures: a real HTTP simulator per test on an ephemeral port.

async def test_x(hss_sim: RunningSim) -> None:          # generous limit: 10,000 calls/60 s
    client = httpx.AsyncClient(auth=hss_sim.auth())
    await client.get(hss_sim.registries_url("task-1", [("limit", "200")]))
    hss_sim.sim.queue(503)                             # in-process control

async def test_y(make_hss_sim: MakeSim) -> None:        # strict, compressed time
    running = await make_hss_sim(rate_limit=5, window=0.5, retry_after=True)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from aiohttp import web

from bot.hss import signer
from bot.sandbox.sim_server import start_simulator
from bot.sandbox.simulator import SimConfig, Simulator

TEST_AK = "AKTESTSIMULATOR00000"
TEST_SK = "SKtestsimulator00000000000000000000000000"
TEST_PROJECT_ID = "0123456789abcdef0123456789abcdef"
GENEROUS_LIMIT = 10_000
#: Seconds the teardown waits for answers in flight (aiohttp waits a minute by default).
SHUTDOWN_TIMEOUT = 0.1


@dataclass(frozen=True)
class RunningSim:
    """A served simulator: ``url`` is the HSS endpoint base, ``sim`` the in-process control."""

    url: str
    sim: Simulator

    @property
    def credentials(self) -> signer.Credentials:
        return signer.Credentials(
            self.sim.config.ak, self.sim.config.sk, self.sim.config.security_token
        )

    @property
    def project_id(self) -> str:
        return self.sim.config.project_id

    def auth(self, *, clock: Callable[[], datetime] | None = None) -> signer.HssAuth:
        if clock is None:
            return signer.HssAuth(self.credentials, project_id=self.project_id)
        return signer.HssAuth(self.credentials, project_id=self.project_id, clock=clock)

    def registries_url(self, task_id: str, params: Sequence[tuple[str, str]] = ()) -> str:
        """The full URL, encoded exactly as it must be signed."""
        path = signer.encoded_path(
            ["v5", self.project_id, "image", "image-sync", "tasks", task_id, "registries"]
        )
        query = signer.canonical_query(params)
        return f"{self.url}{path}?{query}" if query else f"{self.url}{path}"


MakeSim = Callable[..., Awaitable[RunningSim]]


@pytest.fixture
async def make_hss_sim() -> AsyncIterator[MakeSim]:
    """Factory: ``await make_hss_sim(**SimConfig fields)``; all are stopped after the test."""
    runners: list[web.AppRunner] = []

    async def make(**config: Any) -> RunningSim:
        settings: dict[str, Any] = {
            "ak": TEST_AK,
            "sk": TEST_SK,
            "project_id": TEST_PROJECT_ID,
            "rate_limit": GENEROUS_LIMIT,
        }
        settings.update(config)
        sim = Simulator(SimConfig(**settings))
        # An answer still in flight at teardown (a latency fault) has no one left to read it.
        runner, url = await start_simulator(sim, shutdown_timeout=SHUTDOWN_TIMEOUT)
        runners.append(runner)
        return RunningSim(url=url, sim=sim)

    yield make
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def hss_sim(make_hss_sim: MakeSim) -> RunningSim:
    """A simulator with test credentials, seed 0 and a generous rate limit."""
    return await make_hss_sim()
