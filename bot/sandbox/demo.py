"""``hss-sync-bot demo``: the whole bot on embedded defaults, no accounts needed.

It starts an embedded Redis, the HSS simulator (with the real 5 calls/minute rule), a local
stand-in for Slack's Web API and the bot in HTTP mode, then plays a short session through
real signed Slack requests (a lookup, paging, a watch, a registry failing, the alert, the
recovery in its thread; then ``tasks``, ``latest failed``, ``watch runs auto`` and the alert
for a new scheduled run with one new and one still-failing registry) and prints every
message the bot sends, as text or (``--json``) as JSON Lines with each message's Block Kit.
``--interactive`` gives a prompt instead (see ``bot.sandbox.demo_prompt``).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TextIO

from bot.models import Registry
from bot.sandbox.demo_view import Feed, OutputClosed, Printer, is_channel_post, message_of
from bot.sandbox.localstack import Stack, local_stack
from bot.sandbox.simulator import REGISTRIES, TASKS, SimConfig
from bot.sandbox.slack_requests import button_labelled
from bot.sandbox.slack_standin import Call, Channel

TASK, BIG_TASK = "daily-sync", "weekly-sync"
#: The two HSS APIs the bot calls, by the names HSS's documentation gives them.
API_NAMES = {REGISTRIES: "ListAssociateRegistries", TASKS: "ListImageScanTask"}
#: The demo's POLL_INTERVAL_SECONDS (60 by default): a flip shows up within seconds.
POLL_SECONDS = 5
#: Where the user types (SlackUser's default channel) and where the alerts go.
HERE = Channel("C0DEMO0001", "demo")
ALERTS = Channel("C0ALERTS01", "sync-alerts")
FLIP_REASON = "pull from the registry failed: 503 Service Unavailable"
#: Longest wait for any one thing the script expects but the run's alert.
STEP_TIMEOUT = 20.0
#: Tonight's run in the script: it goes through its registries in this many seconds.
DEMO_RUN_SECONDS = 20.0
#: Longest wait for the run's alert and end: the registries budget may be spent for a
#: minute by the session before it.
RUN_TIMEOUT = 90.0


#: The project's sync runs (ListImageScanTask): small and quick, so that each run fails two
#: registries, one of them failing in the previous run of its kind too (still failing) and
#: one new. Scheduled ones come once a real day: the demo starts its own.
RUN_REGISTRIES, RUN_FAILURE_RATE, RUN_SECONDS, RUN_HISTORY = 50, 0.04, 30.0, 2


def sim_config() -> SimConfig:
    return SimConfig(
        seed=7,
        task_sizes={TASK: 57, BIG_TASK: 1200},
        run_registries=RUN_REGISTRIES,
        run_failure_rate=RUN_FAILURE_RATE,
        run_duration=RUN_SECONDS,
        run_history=RUN_HISTORY,
    )


@asynccontextmanager
async def demo_stack() -> AsyncIterator[Stack]:
    """Everything the demo runs, with the simulator's real rate limit and the bot's default
    budget (5 calls per 60 s), watches on, and a short poll interval."""
    env = {"POLL_INTERVAL_SECONDS": str(POLL_SECONDS), "TASKS_POLL_SECONDS": str(POLL_SECONDS)}
    async with local_stack(
        sim_config=sim_config(), env=env, watches=True, channels=(HERE, ALERTS)
    ) as stack:
        yield stack


def intro(stack: Stack) -> str:
    limit, tasks = stack.runtime.settings.rate_limit, stack.runtime.settings.tasks_rate_limit
    return (
        "hss-sync-bot demo: everything runs here, no accounts needed.\n"
        "  - an embedded Redis, the HSS simulator (HSS's own rule: 5 calls per 60 s per API,\n"
        "    HTTP 429 beyond), a local stand-in of Slack's Web API, and the bot in HTTP mode,\n"
        "    sent real signed Slack requests.\n"
        f"  - the bot's call budgets: {limit} for registries, {tasks} for the sync runs (the\n"
        "    defaults); background work keeps 1 call of every window free for people.\n"
        f"  - demo settings: POLL_INTERVAL_SECONDS={POLL_SECONDS} (default 60): a watched task is\n"
        f"    refreshed every {POLL_SECONDS} s while the budget allows; TASKS_POLL_SECONDS="
        f"{POLL_SECONDS}\n    (default 300): followed runs are listed every {POLL_SECONDS} s.\n"
    )


class Script:
    """The scripted session: each step prints what the user does and what the bot sends."""

    def __init__(self, stack: Stack, printer: Printer, feed: Feed) -> None:
        self.stack = stack
        self.printer = printer
        self.feed = feed
        self.started = time.perf_counter()

    @property
    def hss_calls(self) -> int:
        return sum(self.stack.sim.calls.values())

    def api_calls(self, api: str = REGISTRIES) -> int:
        """Calls so far to one HSS API (each has its own 5 a minute)."""
        return sum(self.stack.sim.apis[api].calls.values())

    def calls_note(self, before: dict[str, int]) -> None:
        settings = self.stack.runtime.settings
        said = []
        for api, limit in ((REGISTRIES, settings.rate_limit), (TASKS, settings.tasks_rate_limit)):
            spent = self.api_calls(api) - before[api]
            if spent:
                noun = "call" if spent == 1 else "calls"
                said.append(
                    f"{spent} {API_NAMES[api]} {noun}; {self.api_calls(api)} of the "
                    f"{limit.calls} allowed per {limit.window:g} s used so far"
                )
        self.printer.note(" · ".join(said) or "no HSS call: answered from the mirror in Redis")

    def calls_now(self) -> dict[str, int]:
        return {api: self.api_calls(api) for api in (REGISTRIES, TASKS)}

    async def command(self, text: str, *, lookup: bool = True) -> dict[str, Any]:
        """Type a command; print the ack and the fresh answer when one follows."""
        before = self.calls_now()
        self.printer.step(f"{self.stack.user.command} {text}")
        reply = await self.stack.user.command_text(text)
        self.feed.ack(reply)
        message = reply.body
        if _followup_expected(reply.body):
            started = time.perf_counter()
            call = await self.feed.until(_response_to(reply.response_id), STEP_TIMEOUT)
            self.printer.note(f"the fresh answer came {time.perf_counter() - started:.1f} s later")
            message = message_of(call)
        if lookup:
            self.calls_note(before)
        return message

    async def click(self, message: dict[str, Any], text: str) -> None:
        """Click a button of the user's own answer and print the new answer."""
        before = self.calls_now()
        target = button_labelled(message, text)
        self.printer.step(f"click [{target['text']['text']}]")
        reply = await self.stack.user.click(target)
        await self.feed.until(_response_to(reply.response_id), STEP_TIMEOUT)
        self.calls_note(before)

    async def click_alert(self, alert: Call, text: str) -> None:
        """Click a button of a channel message; the bot updates that message in place."""
        ts = str(alert.answer["ts"])
        target = button_labelled(message_of(alert), text)
        self.printer.step(f"click [{target['text']['text']}] on the alert")
        await self.stack.user.click(target, channel_id=ALERTS.id, message_ts=ts)
        await self.feed.until(lambda c: c.name == "chat.update" and c.body.get("ts") == ts, 10.0)

    def flip(self, registry: Registry, status: str, reason: str | None = None) -> int:
        """Change a registry in HSS; returns the registries API's call count at that
        moment: every later call sees the change."""
        self.stack.sim.set_status(TASK, registry.registry_id, status, reason)
        why = f" ({reason})" if reason else ""
        self.printer.step(
            f"meanwhile in HSS (the simulator): {registry.registry_name} of {TASK} is now "
            f"{status}{why}"
        )
        return self.api_calls()

    def start_run(self) -> None:
        """Tonight's scheduled run begins in HSS; say what it will fail, against the
        previous scheduled run, and when the bot can fetch it."""
        sim = self.stack.sim
        run = sim.start_run("auto", duration=DEMO_RUN_SECONDS)
        new, still = sim.runs.new_and_still(run)
        self.printer.step(
            f"meanwhile in HSS (the simulator): a scheduled sync run begins, {run.task_name} "
            f"({run.size} registries in {DEMO_RUN_SECONDS:g} s); it will fail "
            f"{', '.join(new)} (new: it did not fail in the previous scheduled run) and "
            f"{', '.join(still)} (still failing)"
        )
        limit = self.stack.runtime.settings.rate_limit
        spent = self.api_calls()
        if spent >= limit.calls - 1:
            self.printer.note(
                f"{spent} ListAssociateRegistries calls went to the session above, and background "
                f"work leaves 1 of every {limit.calls} to people: the bot's fetch of the run's "
                f"failures waits until the first of them is {limit.window:g} s old"
            )

    async def refreshed(self, after: int) -> None:
        """Wait for the scheduler's first background fetch after call number ``after``."""
        deadline = time.monotonic() + STEP_TIMEOUT
        while self.api_calls() == after:
            if time.monotonic() > deadline:
                raise TimeoutError
            await asyncio.sleep(0.02)
        at = time.perf_counter() - self.started
        self.printer.note(
            f"the scheduler refreshed {TASK} in the background at +{at:.1f} s "
            f"(HSS call {self.api_calls()}); the alert pipeline reads what changed"
        )


async def play(script: Script) -> None:
    stack, feed = script.stack, script.feed
    await script.command(f"{TASK} failed")
    everything = await script.command(TASK)
    await script.click(everything, "Next")
    await script.command(f"{TASK} failed type=Harbor,Jfrog")
    await script.command(f"{TASK} broken", lookup=False)

    await script.command(f"watch {TASK} #{ALERTS.name}", lookup=False)
    script.printer.note(
        f"from now on the scheduler refreshes {TASK} every {POLL_SECONDS} s, at background priority"
    )
    victim = next(r for r in stack.sim.registries(TASK) if r.sync_status == "finished")
    await script.refreshed(script.flip(victim, "failed", FLIP_REASON))
    alert = await feed.until(lambda c: is_channel_post(c, ALERTS.id), STEP_TIMEOUT)

    await script.click_alert(alert, "Acknowledge")
    await script.refreshed(script.flip(victim, "finished"))
    ts = str(alert.answer["ts"])
    await _until_all(
        feed,
        [
            lambda c: is_channel_post(c, ALERTS.id, thread=ts),
            lambda c: c.name == "chat.update" and "recovered" in json.dumps(c.body).lower(),
        ],
    )
    await play_runs(script)


async def play_runs(script: Script) -> None:
    """Sync runs (ListImageScanTask): the runs HSS made, the newest one's failures by
    reference, then a channel following scheduled runs hears of tonight's."""
    feed = script.feed
    # Each night's run is a new task: a watch on one task id hears nothing of the next run.
    # The channel follows the runs instead, and the scheduler stops refreshing the task.
    await script.command(f"unwatch {TASK} #{ALERTS.name}", lookup=False)
    await script.command("tasks")
    await script.command("latest failed")
    await script.command(f"watch runs auto #{ALERTS.name}", lookup=False)
    script.printer.note(
        f"the runs that exist are the watch's baseline; from now on the bot lists the runs every "
        f"{POLL_SECONDS} s (one ListImageScanTask call) and fetches a run's failed registries "
        "when its counts move, at background priority"
    )
    script.start_run()
    alert = await feed.until(
        lambda c: is_channel_post(c, ALERTS.id) and "Sync run" in json.dumps(c.body), RUN_TIMEOUT
    )
    ts = str(alert.answer["ts"])
    await feed.until(
        lambda c: is_channel_post(c, ALERTS.id, thread=ts) and "Run ended" in json.dumps(c.body),
        RUN_TIMEOUT,
    )


async def _until_all(feed: Feed, predicates: list[Callable[[Call], bool]]) -> None:
    waiting = list(predicates)

    def done(call: Call) -> bool:
        waiting[:] = [p for p in waiting if not p(call)]
        return not waiting

    await feed.until(done, STEP_TIMEOUT)


def summary(stack: Stack, seconds: float) -> str:
    settings = stack.runtime.settings
    calls = []
    for api, limit in ((REGISTRIES, settings.rate_limit), (TASKS, settings.tasks_rate_limit)):
        spent = sum(stack.sim.apis[api].calls.values())
        calls.append(f"{spent} {API_NAMES[api]} calls (limit {limit.calls} per {limit.window:g} s)")
    posts = stack.standin.api("chat.postMessage")
    threaded = sum(1 for c in posts if c.body.get("thread_ts"))
    alerts = len(posts) - threaded
    updates = len(stack.standin.api("chat.update"))
    answers = sum(1 for c in stack.standin.calls if c.kind == "response")
    return (
        f"Summary: {', '.join(calls)} · 429s: {stack.sim.throttled} · Slack messages posted: "
        f"{len(posts)} ({alerts} alert{'' if alerts == 1 else 's'}, {threaded} thread "
        f"repl{'y' if threaded == 1 else 'ies'}), {updates} updated in place, {answers} "
        f"answers by response_url · {seconds:.1f} s"
    )


NAMES = {HERE.id: HERE.name, ALERTS.id: ALERTS.name, "U0DEMO0001": "demo.user"}


async def run_demo(out: TextIO, *, as_json: bool, interactive: bool = False) -> int:
    """Play the session (or the prompt) on ``out``; the exit status. When nobody reads
    ``out`` any more (``demo | head``), everything is torn down and the status is 0."""
    printer = Printer(out, as_json=as_json, names=NAMES)
    try:
        return await _run(printer, interactive=interactive)
    except OutputClosed:  # the stack is stopped by the time it gets here
        return 0


async def _run(printer: Printer, *, interactive: bool) -> int:
    started = time.perf_counter()
    async with demo_stack() as stack:
        printer.line(intro(stack))
        feed = Feed(stack.standin, printer)
        if interactive:
            from bot.sandbox.demo_prompt import Prompt

            prompt = Prompt(
                stack, printer, feed, poll_seconds=POLL_SECONDS, alerts=ALERTS.name, here=HERE.name
            )
            return await prompt.run()
        try:
            with _cancelled_by(signal.SIGTERM):
                await play(Script(stack, printer, feed))
        except TimeoutError:
            printer.line(f"\ndemo failed: a step did not finish within {STEP_TIMEOUT:g} s")
            return 1
        printer.line("\n" + summary(stack, time.perf_counter() - started))
        return 0 if stack.sim.throttled == 0 else 1


@contextmanager
def _cancelled_by(signum: signal.Signals) -> Iterator[None]:
    """Let ``signum`` cancel the running task, so that the stack is torn down (Redis
    stopped) rather than orphaned; asyncio already does this for Ctrl-C."""
    loop, task = asyncio.get_running_loop(), asyncio.current_task()
    if task is None:  # pragma: no cover (always called from a task)
        yield
        return
    loop.add_signal_handler(signum, task.cancel)
    try:
        yield
    finally:
        loop.remove_signal_handler(signum)


def _followup_expected(body: dict[str, Any]) -> bool:
    # The ack says so when the bot is fetching fresh data (or waiting for the budget).
    text = json.dumps(body)
    return "Fetching" in text or "budget is spent" in text


def _response_to(ident: str) -> Callable[[Call], bool]:
    return lambda c: c.kind == "response" and c.name == ident


_DESCRIPTION = """\
Play a short Slack session with the whole bot, no accounts needed: an embedded Redis, the
HSS simulator (5 calls per 60 s, as HSS), a local stand-in for Slack's Web API and the bot,
sent real signed Slack requests (a lookup, paging, a watch, a failure, its alert, the
recovery; then the sync runs, the newest one's failures, a watch on scheduled runs and the
alert for tonight's). Every message the bot sends is printed as a person would read it in
Slack."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hss-sync-bot demo", description=_DESCRIPTION)
    parser.add_argument(
        "--json",
        action="store_true",
        help="print JSON Lines instead of text: one object per line (kind text, step, note or "
        "message; a message with the Block Kit payload Slack got), for jq (default: text)",
    )
    parser.add_argument(
        "--interactive",
        action="store_true",
        help="type slash commands at a prompt instead of the scripted session; any channel "
        "name works (default: the script)",
    )
    return parser


def main(argv: list[str]) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if isinstance(sys.stdout, io.TextIOWrapper):
        # A terminal that cannot show "←" or "·" gets "?", not a UnicodeEncodeError.
        sys.stdout.reconfigure(errors="replace")
    try:
        return asyncio.run(run_demo(sys.stdout, as_json=args.json, interactive=args.interactive))
    except KeyboardInterrupt:
        return 130
    except asyncio.CancelledError:  # SIGTERM, after tearing everything down
        return 128 + signal.SIGTERM
