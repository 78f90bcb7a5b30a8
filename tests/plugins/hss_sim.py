"""HSS simulator fixtures: a real HTTP simulator per test on an ephemeral port.

async def test_x(hss_sim: RunningSim) -> None:          # generous limit: 10,000 calls/60 s
    client = httpx.AsyncClient(auth=hss_sim.auth())
    await client.get(hss_sim.registries_url("task-1", [("limit", "200")]))
    hss_sim.sim.queue(503)                             # in-process control

async def test_y(make_hss_sim: MakeSim) -> None:        # strict, compressed time
    running = await make_hss_sim(rate_limit=5, window=0.5, retry_after=True)

async def test_z(make_hss_sim: MakeSim) -> None:        # the simulator's clock in the test's hand
    clock = SimClock()
    running = await make_hss_sim(clock=clock, run_every=60)
    clock.advance(90)                                  # a scheduled sync run has begun
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
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

    def runs_url(self, params: Sequence[tuple[str, str]] = ()) -> str:
        """ListImageScanTask's full URL, encoded exactly as it must be signed."""
        path = signer.encoded_path(["v5", self.project_id, "image", "tasks"])
        query = signer.canonical_query(params)
        return f"{self.url}{path}?{query}" if query else f"{self.url}{path}"


@dataclass
class SimClock:
    """A simulator clock that moves only when told. It starts at the real time: requests are
    signed with the real one, and the simulator refuses a date 15 minutes off its own."""

    now: float = field(default_factory=time.time)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


MakeSim = Callable[..., Awaitable[RunningSim]]


@pytest.fixture
async def make_hss_sim() -> AsyncIterator[MakeSim]:
    """Factory: ``await make_hss_sim(clock=..., **SimConfig fields)``; all are stopped after
    the test. ``clock``: the simulator's (default ``time.time``)."""
    runners: list[web.AppRunner] = []

    async def make(clock: Callable[[], float] = time.time, **config: Any) -> RunningSim:
        settings: dict[str, Any] = {
            "ak": TEST_AK,
            "sk": TEST_SK,
            "project_id": TEST_PROJECT_ID,
            "rate_limit": GENEROUS_LIMIT,
        }
        settings.update(config)
        sim = Simulator(SimConfig(**settings), clock=clock)
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
