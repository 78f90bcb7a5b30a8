"""401s HSS sees from a burst of distinct lookups with a wrong secret (issue 9, defect 2): the
pre-fix bot against this tree's, each a real ``hss-sync-bot run`` process in HTTP mode, in
the same run.

Ten people (or one, quickly) ask about ten different tasks at once through signed slash
commands while the bot's SK is wrong. HSS locks an AK/SK after more than 5 authentication
failures in a row, so the target is 1. The simulator counts every 401 it answers (its own
lock-out is off, so that none is hidden). Both bots run with a fresh Redis: nothing proven,
nothing locked. Time is scaled down 30 times (5 calls per 2 s), so a burst that waits for
slots ends in seconds.

Run: ``.venv/bin/python -m bench.auth_burst [--before PATH] [--after PATH] [--lookups 10]
[--rounds 3]``. One line per figure: ``name value``.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from bench.bot_process import AFTER, BEFORE, running_bot
from bench.common import ResponseWatcher, emit, quiet, ratio
from bot.sandbox.simulator import SimConfig

RATE = "5/2s"
WRONG_SK = "SK-wrong-secret-for-the-bench-00000000000"
TIMEOUT = 60.0


async def one_side(name: str, executable: str, lookups: int) -> int:
    """401s the simulator answered for ``lookups`` distinct lookups sent at once."""
    config = SimConfig(rate_limit=5, window=2.0, lockout_after=None)
    env = {"HSS_RATE_LIMIT": RATE, "CLOUD_SDK_SK": WRONG_SK}
    async with running_bot(name, executable, sim_config=config, env=env) as bot:
        users = [bot.user(f"U0PERSON{i:02d}") for i in range(lookups)]
        async with ResponseWatcher(bot.standin) as watcher:
            replies = await asyncio.gather(
                *(user.command_text(f"task-{i}") for i, user in enumerate(users))
            )
            deadline = time.perf_counter() + TIMEOUT
            answered = await asyncio.gather(
                *(watcher.first(r.response_id, deadline=deadline) for r in replies)
            )
        if any(a is None for a in answered):
            raise SystemExit(f"{name}: not every lookup was answered within {TIMEOUT:g} s")
        return sum(bot.sim.auth_failures.values())


async def main(args: argparse.Namespace) -> None:
    for round_no in range(1, args.rounds + 1):
        before = await one_side("before", args.before, args.lookups)
        after = await one_side("after", args.after, args.lookups)
        emit(f"auth_burst.round{round_no}.401s_before", before)
        emit(f"auth_burst.round{round_no}.401s_after", after)
        emit(f"auth_burst.round{round_no}.ratio_before_over_after", ratio(before, after))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--before", default=BEFORE, help=f"pre-fix console script ({BEFORE})")
    parser.add_argument("--after", default=AFTER, help=f"this tree's console script ({AFTER})")
    parser.add_argument("--lookups", type=int, default=10, help="distinct lookups (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each side (default 3)")
    return parser.parse_args()


if __name__ == "__main__":
    quiet()
    asyncio.run(main(parse_args()))
