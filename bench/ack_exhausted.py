"""The slowest ack of any registered command, button or event while the HSS call budget is
spent: the pre-fix bot against this one, in the same run.

    .venv/bin/python bench/ack_exhausted.py [--before /work/before9/.venv/bin/hss-sync-bot]
        [--after .venv/bin/hss-sync-bot] [--rate 5/20s] [--rounds 3] [--timeout 120]

Both bots run as real ``hss-sync-bot run`` processes (HTTP mode, each with its own embedded
Redis and its own HSS simulator from this tree, both with the same rate limit as the bot's
budget), and one Slack stand-in. The requests come from this tree's app as served: every
listener it registers (``ObservedApp.routes``), every action id its constraint matches, with a
lookup's, an alert's and a Home button's value (and junk), the command with a dozen texts,
App Home opened. Each round first spends the budget (one cold lookup per call, answered),
then sends every request at once, signed, and times each HTTP answer (the ack). The old bot
has no Retry now or "Refresh (N calls)" listener: it answers those 404 at once, which counts
like any other ack.

The rate window is scaled down from HSS's 60 s (5 calls per 20 s by default) so that a
round takes seconds: the old bot's Show details holds its ack until a call slot frees, so
its slowest ack scales with the window (82.7 s was measured at 5/60 s with a queue).

One line per figure: the slowest ack of each bot (ms, over all rounds), the ratio, and the
slowest request of each as a comment.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import emit, ms, quiet, ratio  # noqa: E402
from bot.config import RateLimit  # noqa: E402
from bot.sandbox.localstack import SIGNING_SECRET, local_stack  # noqa: E402
from bot.sandbox.sim_server import start_simulator  # noqa: E402
from bot.sandbox.simulator import DEMO_AK, DEMO_PROJECT_ID, DEMO_SK, SimConfig, Simulator  # noqa: E402
from bot.sandbox.slack_requests import Probe, SlackUser, probe_values, probes, send_probe  # noqa: E402
from bot.sandbox.slack_standin import SlackStandIn  # noqa: E402

TASK = "bench-task"
COMMANDS = [
    f"{TASK} failed",
    TASK,
    "cold-task running",
    "help",
    "",
    "x" * 70,
    f"watch {TASK}",
    "watches all",
    f"mute {TASK} 1h",
    f"unmute {TASK}",
    f"unwatch {TASK}",
]
_spent = iter(range(1, 1_000_000))


@dataclass
class Bot:
    name: str
    port: int
    proc: asyncio.subprocess.Process
    sim: Simulator
    stop_sim: Callable[[], Awaitable[None]]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def our_routes() -> list[tuple[str, object]]:
    """Every listener this tree's app registers, read from the app as a local stack serves it."""
    config = SimConfig(ak=DEMO_AK, sk=DEMO_SK, project_id=DEMO_PROJECT_ID)
    async with local_stack(sim_config=config, watches=True) as stack:
        assert stack.slack is not None
        return [(r.kind, r.matches) for r in stack.slack.app.routes]


async def start_bot(
    name: str, command: list[str], standin: SlackStandIn, rate: RateLimit, data_dir: Path
) -> Bot:
    sim = Simulator(
        SimConfig(
            ak=DEMO_AK,
            sk=DEMO_SK,
            project_id=DEMO_PROJECT_ID,
            rate_limit=rate.calls,
            window=rate.window,
            task_sizes={TASK: 120},
        )
    )
    runner, sim_url = await start_simulator(sim, shutdown_timeout=0.1)
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", ""),
        "SLACK_BOT_TOKEN": "xoxb-demo",
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": f"{standin.url}/api/",
        "CLOUD_SDK_AK": DEMO_AK,
        "CLOUD_SDK_SK": DEMO_SK,
        "HSS_PROJECT_ID": DEMO_PROJECT_ID,
        "HSS_ENDPOINT": sim_url,
        "HSS_RATE_LIMIT": str(rate),
        "HSS_FRESH_SECONDS": "1",
        "HSS_DATA_DIR": str(data_dir),
        "PORT": str(port),
        "LOG_LEVEL": "WARNING",
    }
    proc = await asyncio.create_subprocess_exec(
        *command,
        "run",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    bot = Bot(name, port, proc, sim, runner.cleanup)
    await wait_healthy(bot)
    return bot


async def wait_healthy(bot: Bot, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as http:
        while time.monotonic() < deadline:
            if bot.proc.returncode is not None:
                raise RuntimeError(f"{bot.name} exited with {bot.proc.returncode}")
            try:
                if (await http.get(f"{bot.url}/healthz", timeout=1.0)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{bot.name} never became healthy")


async def spend_budget(user: SlackUser, standin: SlackStandIn, calls: int) -> None:
    """One cold lookup per call of the window, each answered: the budget is spent."""
    replies = [await user.command_text(f"spend-{next(_spent)} failed") for _ in range(calls)]
    ids = {r.response_id for r in replies}
    await standin.wait_for(lambda cs: ids <= {c.name for c in cs if c.kind == "response"}, 120.0)


async def burst(
    user: SlackUser, requests: list[Probe], timeout: float
) -> list[tuple[float, Probe]]:
    async def one(probe: Probe) -> tuple[float, Probe]:
        started = time.perf_counter()
        try:
            await asyncio.wait_for(send_probe(user, probe), timeout)
        except TimeoutError:
            return float("inf"), probe
        return time.perf_counter() - started, probe

    return list(await asyncio.gather(*(one(p) for p in requests)))


async def run(args: argparse.Namespace) -> tuple[dict[str, tuple[float, Probe]], int]:
    rate = RateLimit.parse(args.rate)
    routes = await our_routes()
    requests = probes(
        routes,  # type: ignore[arg-type]
        commands=COMMANDS,
        values=lambda action: probe_values(action, TASK, DEMO_PROJECT_ID, "C0BENCH001"),
    )
    requests.append(Probe("event", "app_home_opened"))
    slowest: dict[str, tuple[float, Probe]] = {}
    async with AsyncExitStack() as exits:
        standin = SlackStandIn()
        await standin.start()
        exits.push_async_callback(standin.stop)
        tmp = Path(tempfile.mkdtemp(prefix="ack-exhausted-"))
        exits.callback(shutil.rmtree, tmp, True)
        http = await exits.enter_async_context(
            httpx.AsyncClient(timeout=args.timeout, limits=httpx.Limits(max_connections=500))
        )
        bots = []
        for name, command in (("before", [args.before]), ("after", [args.after])):
            bot = await start_bot(name, command, standin, rate, tmp / name)
            exits.push_async_callback(stop_bot, bot)
            bots.append(bot)
        for round_no in range(args.rounds):
            # Interleaved, the order turned each round: machine noise hits both alike.
            for bot in bots if round_no % 2 == 0 else bots[::-1]:
                user = SlackUser(
                    bot_url=bot.url,
                    signing_secret=SIGNING_SECRET,
                    response_base=f"{standin.url}/response",
                    http=http,
                    channel_id="C0BENCH001",
                )
                await spend_budget(user, standin, rate.calls)
                for taken in await burst(user, requests, args.timeout):
                    if bot.name not in slowest or taken[0] > slowest[bot.name][0]:
                        slowest[bot.name] = taken
    return slowest, len(requests)


async def stop_bot(bot: Bot) -> None:
    if bot.proc.returncode is None:
        bot.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(bot.proc.wait(), 20)
        except TimeoutError:
            bot.proc.kill()
            await bot.proc.wait()
    await bot.stop_sim()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else "")
    parser.add_argument("--before", default="/work/before9/.venv/bin/hss-sync-bot")
    parser.add_argument("--after", default=str(Path(sys.executable).parent / "hss-sync-bot"))
    parser.add_argument("--rate", default="5/20s", help="HSS_RATE_LIMIT of both bots and sims")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=120.0, help="give up on an ack (s)")
    args = parser.parse_args()
    quiet()
    slowest, count = asyncio.run(run(args))
    before, after = slowest["before"], slowest["after"]
    print(f"# rate={args.rate} rounds={args.rounds} requests_per_round={count}")
    emit("ack_exhausted.before.slowest_ms", ms(before[0]))
    emit("ack_exhausted.after.slowest_ms", ms(after[0]))
    emit("ack_exhausted.slowest_ratio_before_over_after", ratio(before[0], after[0]))
    print(f"# before slowest: {before[1]}")
    print(f"# after slowest: {after[1]}")


if __name__ == "__main__":
    main()
