"""``hss-sync-bot demo``: the whole bot on embedded defaults, no accounts needed.

It starts an embedded Redis, the HSS simulator (with the real 5 calls/minute rule), a local
stand-in for Slack's Web API and the bot in HTTP mode, then plays a short session through
real signed Slack requests and prints every message the bot sends, as text or (``--json``)
as Block Kit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from typing import Any, TextIO

from bot.localstack import Stack, local_stack
from bot.render import ACTION_PAGE
from bot.simulator import SimConfig
from bot.slack_requests import Reply, button
from bot.textview import message_text

SMALL_TASK, BIG_TASK = "daily-sync", "weekly-sync"


class Printer:
    def __init__(self, out: TextIO, *, as_json: bool) -> None:
        self._out = out
        self._json = as_json

    def step(self, text: str) -> None:
        self._out.write(f"\n\033[1m» {text}\033[0m\n" if self._out.isatty() else f"\n» {text}\n")

    def message(self, label: str, payload: dict[str, Any]) -> None:
        self._out.write(f"  ← {label}\n")
        body = json.dumps(payload, indent=2, ensure_ascii=False) if self._json else None
        body = body or message_text(payload)
        self._out.write("".join(f"    {line}\n" for line in body.splitlines()))
        self._out.flush()


async def _command(stack: Stack, printer: Printer, text: str) -> dict[str, Any]:
    """Type a command; print the ack and, if one comes, the fresh answer. Returns the last."""
    printer.step(f"{stack.user.command} {text}")
    reply = await stack.user.command_text(text)
    printer.message(f"ack in {reply.elapsed * 1000:.0f} ms (only you see this)", reply.body)
    if "Fetching" not in json.dumps(reply.body) and "budget is spent" not in json.dumps(reply.body):
        return reply.body
    return await _followup(stack, printer, reply)


async def _followup(stack: Stack, printer: Printer, reply: Reply) -> dict[str, Any]:
    started = time.perf_counter()
    calls = await stack.standin.wait_for(
        lambda cs: any(c.kind == "response" and c.name == reply.response_id for c in cs),
        timeout=120.0,
    )
    body = next(c.body for c in calls if c.kind == "response" and c.name == reply.response_id)
    waited = time.perf_counter() - started
    printer.message(f"fresh answer {waited:.1f} s later, replacing the first one", body)
    return body


async def _click(stack: Stack, printer: Printer, message: dict[str, Any], prefix: str) -> None:
    target = button(message, prefix)
    printer.step(f"click [{target['text']['text']}]")
    reply = await stack.user.click(target)
    await _followup(stack, printer, reply)


async def play(stack: Stack, printer: Printer) -> None:
    first = await _command(stack, printer, f"{SMALL_TASK} failed")
    everything = await _command(stack, printer, SMALL_TASK)
    await _click(stack, printer, everything, f"{ACTION_PAGE}_next")
    await _command(stack, printer, f"{SMALL_TASK} failed type=Harbor,Jfrog")
    await _command(stack, printer, f"{BIG_TASK} failed")
    await _command(stack, printer, f"{SMALL_TASK} broken")
    del first


async def run_demo(out: TextIO, *, as_json: bool) -> int:
    config = SimConfig(seed=7, task_sizes={SMALL_TASK: 57, BIG_TASK: 1200})
    printer = Printer(out, as_json=as_json)
    out.write(
        "hss-sync-bot demo: embedded Redis, the HSS simulator (5 calls per 60 s, like HSS),\n"
        "a local Slack stand-in, and the bot, talking over real signed HTTP requests.\n"
    )
    async with local_stack(sim_config=config) as stack:
        await play(stack, printer)
        calls = sum(stack.sim.calls.values())
        out.write(
            f"\nDone: 6 commands and a click, {calls} HSS calls "
            f"(budget {stack.runtime.settings.rate_limit}), "
            f"{stack.sim.throttled} refused by HSS's rate limit.\n"
        )
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="hss-sync-bot demo", description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print Block Kit JSON")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return asyncio.run(run_demo(sys.stdout, as_json=args.json))
