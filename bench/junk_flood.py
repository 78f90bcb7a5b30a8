"""A colleague's wait while another user floods junk task ids (issue 9, defect 1): the pre-fix
bot against this tree's, each a real ``hss-sync-bot run`` process in HTTP mode, in the same
run.

One person sends N commands with junk task ids spread over a few tenths of a second, through
signed slash commands; right after the last, a colleague asks about a real task. The figure
is the colleague's wait: from sending their command to the bot's post of their fresh answer
to the response_url. The junk ids are valid ids (random letters and digits, which task-id
validation keeps accepting) that HSS answers ``HSS.0011`` for; ``repeat`` sends one such id
N times. So the figure measures the budget's fair queuing, the per-person cap and the
negative cache, not validation.

Time is scaled down 30 times: the bot's budget and the simulator's limit are 5 calls per 2 s
(HSS: 5 per 60 s), so the issue's 304 s and 1,315 s would read about 10 s and 44 s here.

Run: ``.venv/bin/python -m bench.junk_flood [--before PATH] [--after PATH]
[--cases distinct25,repeat25,distinct106]``. One line per figure: ``name value``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import string
import time
from dataclasses import dataclass

from bench.bot_process import AFTER, BEFORE, RunningBot, running_bot
from bench.common import ResponseWatcher, emit, quiet, ratio
from bot.sandbox.simulator import SimConfig

RATE = "5/2s"
COLLEAGUE_TASK = "task-colleague"
FLOODER, COLLEAGUE = "U0FLOODER1", "U0COLLEAG1"
TIMEOUT = 240.0


@dataclass(frozen=True)
class Case:
    name: str
    ids: tuple[str, ...]
    span: float  # seconds over which the junk commands are sent

    @classmethod
    def parse(cls, name: str, rng: random.Random) -> Case:
        match = re.fullmatch(r"(distinct|repeat)(\d+)", name)
        if match is None:
            raise SystemExit(f"unknown case {name!r}: distinctN or repeatN")
        count = int(match[2])
        if match[1] == "distinct":
            ids = [junk_id(rng) for _ in range(count)]
        else:
            ids = [junk_id(rng)] * count
        return cls(name=name, ids=tuple(ids), span=0.5 if count <= 25 else 2.0)


def junk_id(rng: random.Random) -> str:
    """A task id any validation accepts (letters and digits) that HSS does not know."""
    return "".join(rng.choices(string.ascii_letters + string.digits, k=24))


async def colleague_wait(bot: RunningBot, case: Case) -> float:
    """Seconds from the colleague's command to their fresh answer, after ``case``'s flood."""
    flooder, colleague = bot.user(FLOODER), bot.user(COLLEAGUE)
    async with ResponseWatcher(bot.standin) as watcher:
        started = time.perf_counter()
        sends = []
        for i, task_id in enumerate(case.ids):
            at = started + i * case.span / len(case.ids)
            await asyncio.sleep(max(0.0, at - time.perf_counter()))
            sends.append(asyncio.create_task(flooder.command_text(task_id)))
        asked = time.perf_counter()
        reply = await colleague.command_text(COLLEAGUE_TASK)
        await asyncio.gather(*sends)
        got = await watcher.first(reply.response_id, deadline=asked + TIMEOUT)
        if got is None:
            return float("inf")
        return got[0] - asked


async def one_side(name: str, executable: str, case: Case) -> tuple[float, int]:
    config = SimConfig(
        rate_limit=5,
        window=2.0,
        task_sizes={COLLEAGUE_TASK: 30},
        missing_tasks=frozenset(case.ids),
    )
    env = {"HSS_RATE_LIMIT": RATE}
    async with running_bot(name, executable, sim_config=config, env=env) as bot:
        wait = await colleague_wait(bot, case)
        return wait, sum(bot.sim.calls.values())


async def main(args: argparse.Namespace) -> None:
    rng = random.Random(9)
    for name in args.cases.split(","):
        case = Case.parse(name, rng)
        before, before_calls = await one_side("before", args.before, case)
        after, after_calls = await one_side("after", args.after, case)
        emit(f"junk_flood.{case.name}.colleague_wait_before_s", before)
        emit(f"junk_flood.{case.name}.colleague_wait_after_s", after)
        emit(f"junk_flood.{case.name}.ratio_before_over_after", ratio(before, after))
        emit(f"junk_flood.{case.name}.hss_calls_before", before_calls)
        emit(f"junk_flood.{case.name}.hss_calls_after", after_calls)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--before", default=BEFORE, help=f"pre-fix console script ({BEFORE})")
    parser.add_argument("--after", default=AFTER, help=f"this tree's console script ({AFTER})")
    parser.add_argument(
        "--cases",
        default="distinct25,repeat25,distinct106",
        help="distinctN (N random unknown ids) or repeatN (one unknown id N times), "
        "comma-separated (default distinct25,repeat25,distinct106)",
    )
    return parser.parse_args()


if __name__ == "__main__":
    quiet()
    asyncio.run(main(parse_args()))
