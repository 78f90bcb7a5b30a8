"""A real ``hss-sync-bot run`` process (HTTP mode) for the before/after benchmarks, with the
parts it talks to in the benchmark's own process: an embedded Redis of its own, the HSS
simulator of this tree, and the Slack stand-in. It only uses the command line, environment
variables and HTTP, so the same harness drives the pre-fix tree's console script and this
tree's."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from bot.sandbox.sim_server import start_simulator
from bot.sandbox.simulator import SimConfig, Simulator
from bot.sandbox.slack_requests import SlackUser
from bot.sandbox.slack_standin import SlackStandIn
from bot.storage.embedded import EmbeddedRedis

SIGNING_SECRET = "bench-signing-secret"
#: The pre-fix tree of issue 9 (commit 60323a7) with its own venv.
BEFORE = "/work/before9/.venv/bin/hss-sync-bot"
#: This tree's console script, next to the interpreter running the benchmark.
AFTER = str(Path(sys.executable).parent / "hss-sync-bot")


@dataclass
class RunningBot:
    """One bot process and its peers: ``user(user_id)`` sends signed requests as a person."""

    name: str
    sim: Simulator
    standin: SlackStandIn
    url: str
    http: httpx.AsyncClient

    def user(self, user_id: str) -> SlackUser:
        return SlackUser(
            bot_url=self.url,
            signing_secret=SIGNING_SECRET,
            response_base=f"{self.standin.url}/response",
            http=self.http,
            user_id=user_id,
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def running_bot(
    name: str, executable: str, *, sim_config: SimConfig, env: dict[str, str]
) -> AsyncIterator[RunningBot]:
    """``executable run`` against its own Redis, simulator and stand-in; SIGTERM at the end.
    ``env`` adds to (or overrides) the bot's settings."""
    async with contextlib.AsyncExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"bench-{name}-")))
        redis = EmbeddedRedis(data_dir=tmp / "redis", persistent=False)
        await asyncio.to_thread(redis.start)
        stack.push_async_callback(asyncio.to_thread, redis.stop)
        sim = Simulator(sim_config)
        runner, sim_url = await start_simulator(sim, shutdown_timeout=0.1)
        stack.push_async_callback(runner.cleanup)
        standin = SlackStandIn()
        await standin.start()
        stack.push_async_callback(standin.stop)
        port = _free_port()
        bot_env = {
            **{k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")},
            "SLACK_BOT_TOKEN": "xoxb-bench",
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": f"{standin.url}/api/",
            "CLOUD_SDK_AK": sim_config.ak,
            "CLOUD_SDK_SK": sim_config.sk,
            "HSS_PROJECT_ID": sim_config.project_id,
            "HSS_ENDPOINT": sim_url,
            "REDIS_URL": redis.url,
            "HSS_DATA_DIR": str(tmp / "data"),
            "PORT": str(port),
            "LOG_LEVEL": "ERROR",
            **env,
        }
        proc = await asyncio.create_subprocess_exec(
            executable, "run", env=bot_env, stdout=asyncio.subprocess.DEVNULL
        )
        stack.push_async_callback(_stop, proc)
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=30.0))
        url = f"http://127.0.0.1:{port}"
        await _healthy(http, f"{url}/healthz", proc)
        yield RunningBot(name=name, sim=sim, standin=standin, url=url, http=http)


async def _healthy(http: httpx.AsyncClient, url: str, proc: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + 30.0
    while proc.returncode is None and time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            if (await http.get(url, timeout=1.0)).status_code == 200:
                return
        await asyncio.sleep(0.05)
    raise SystemExit(f"the bot at {url} never became healthy")


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 15.0)
        except TimeoutError:
            proc.kill()
            await proc.wait()
