"""``hss-sync-bot demo --interactive``: type slash commands at a prompt on the local stack.

Lines go to the bot as ``/hss-sync`` commands (with or without the command's name), except
the demo's own commands: ``flip`` changes a registry in the simulator, ``run`` starts a
sync run in it (scheduled or manual), ``sim`` lists what the simulator holds, ``click``
presses a button of the last message that has some, ``wait``, ``help`` and ``quit``.
Whatever the bot sends (answers, alerts, thread replies, updates) is printed as it
arrives by a ``Feed`` following the Slack stand-in.

Any ``#name`` typed in a command is a channel of the demo's workspace: the first use makes
it up (an id in the Slack stand-in, which tells the bot it is a member), and it is sent as
Slack sends a channel picked from the ``#`` autocomplete.

Standard input is read by a daemon thread, so the event loop (the bot, its workers, the
feed) never waits on the keyboard, and a pending read does not hold up the exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import shlex
import signal
import sys
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TextIO

import httpx

from bot.models import LookupRequest, Registry
from bot.sandbox.demo_view import Feed, Printer
from bot.sandbox.localstack import Stack
from bot.sandbox.simdata import STATUSES
from bot.sandbox.slack_requests import button_labelled, channel_names
from bot.sandbox.slack_standin import Channel

#: Names shown per status by ``sim``.
_NAMES_SHOWN = 8
#: The longest ``wait``, in seconds.
_WAIT_MAX = 120.0
#: How long after a ``watch`` the prompt looks out for the first fetch of the task.
_BASELINE_WAIT = 180.0
_FLIP_USAGE = "flip <task> <registry> failed [reason]  or  flip <task> <registry> finished|running"
#: The longest run ``run`` starts, in seconds.
_RUN_MAX = 3600.0
_RUN_USAGE = f"run auto|manual [seconds, up to {_RUN_MAX:g}]"
#: The run kinds ``run`` takes, as ``Simulator.start_run`` takes them, and their HSS names.
_RUN_KINDS = {"auto": "scheduled (autoSync)", "manual": "manual (manualSync)"}


class InputError(ValueError):
    """A line the prompt cannot act on; the message says what is accepted."""


@dataclass(frozen=True, slots=True)
class SlashCommand:
    text: str


@dataclass(frozen=True, slots=True)
class Flip:
    task_id: str
    registry: str
    status: str
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class StartRun:
    kind: str  # auto | manual
    seconds: float | None = None  # None: the simulator's run duration


@dataclass(frozen=True, slots=True)
class Click:
    label: str


@dataclass(frozen=True, slots=True)
class Wait:
    seconds: float


@dataclass(frozen=True, slots=True)
class Plain:
    """``help``, ``sim`` or ``quit``."""

    name: str


Action = SlashCommand | Flip | StartRun | Click | Wait | Plain

#: Signals that end the prompt like ``quit`` (Ctrl-C, and a polite kill).
_QUIT_SIGNALS = (signal.SIGINT, signal.SIGTERM)

#: ``sim``, not ``tasks``: that is the bot's own command (the sync runs it knows).
_PLAIN = {"help": "help", "?": "help", "sim": "sim", "quit": "quit", "exit": "quit"}


def parse_line(line: str, command: str) -> Action | None:
    """What a typed line asks for; None for a blank line. Raises InputError."""
    text = line.strip()
    if not text:
        return None
    first, _, rest = text.partition(" ")
    if first.startswith("/"):
        if first != command:
            raise InputError(f"unknown command {first}: the bot answers {command}; type help")
        return SlashCommand(rest.strip())
    word = first.lower()
    if word in _PLAIN:
        if rest.strip():
            raise InputError(f"{word} takes nothing after it")
        return Plain(_PLAIN[word])
    if word == "flip":
        return _flip(rest)
    if word == "run":
        return _run(rest)
    if word == "click":
        if not rest.strip():
            raise InputError("click which button? e.g. click next (see the last message)")
        return Click(rest.strip())
    if word == "wait":
        return _wait(rest.strip())
    return SlashCommand(text)


def _flip(rest: str) -> Flip:
    try:
        words = shlex.split(rest)
    except ValueError as exc:
        raise InputError(f"cannot read that ({exc}); use {_FLIP_USAGE}") from None
    if len(words) < 3:
        raise InputError(f"flip needs a task, a registry and a status: {_FLIP_USAGE}")
    task_id, registry, status, *why = words
    status = status.lower()
    if status not in STATUSES:
        raise InputError(f'unknown status "{status}": {_FLIP_USAGE}')
    if why and status != "failed":
        raise InputError(f"only a failure has a reason: {_FLIP_USAGE}")
    return Flip(task_id, registry, status, " ".join(why) or None)


def _run(rest: str) -> StartRun:
    words = rest.lower().split()
    if not words or words[0] not in _RUN_KINDS or len(words) > 2:
        raise InputError(f"start a sync run in HSS with {_RUN_USAGE}")
    if len(words) == 1:
        return StartRun(words[0])
    try:
        seconds = float(words[1])
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= _RUN_MAX:
        raise InputError(f"a run takes from 0 to {_RUN_MAX:g} seconds: {_RUN_USAGE}")
    return StartRun(words[0], seconds)


def _wait(rest: str) -> Wait:
    try:
        seconds = float(rest) if rest else 5.0
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= _WAIT_MAX:
        raise InputError(f"wait takes a number of seconds from 0 to {_WAIT_MAX:g}, e.g. wait 10")
    return Wait(seconds)


def help_text(command: str, poll_seconds: float, alerts_channel: str, here: str) -> str:
    rows = [
        ("Type a slash command, or just the text after it:", ""),
        (f"{command} daily-sync failed", "look up a task (any task id works: the simulator"),
        ("", "makes its registries up; each new task costs a call)"),
        (f"watch daily-sync #{alerts_channel}", f"alerts for daily-sync in #{alerts_channel}"),
        ("", "(any #channel name works: the demo makes the channel up)"),
        ("watches all", f"every channel's watches (plain `watches`: only #{here}'s)"),
        ("tasks", "the sync runs HSS made, newest first (auto, manual, failed)"),
        ("latest failed", "what the newest run failed (latest-auto, latest-manual too)"),
        (
            f"watch runs auto #{alerts_channel}",
            "alerts for each new scheduled run (runs: every run)",
        ),
        (f"{command} help", "the bot's own help"),
        ("The demo's own commands:", ""),
        ("flip <task> <registry> failed [reason]", "make a registry fail in HSS (the simulator)"),
        ("flip <task> <registry> finished", "...or recover (running: retry)"),
        ("run auto|manual [seconds]", "start a sync run in HSS (a new task, like tonight's)"),
        ("sim", "the simulator's tasks and their registries"),
        ("click <button>", "press a button of the last message that has some"),
        ("wait [seconds]", "just print what the bot sends (default 5 s)"),
        ("help, quit", "this text; stop everything (also Ctrl-D, Ctrl-C)"),
    ]
    width = max(len(left) for left, right in rows if right) + 2
    lines = [f"  {left:<{width}}{right}" if right else left for left, right in rows]
    return "\n".join(lines) + (
        f"\nWatched tasks are refreshed every {poll_seconds:g} s at most, and only while the "
        "budget allows\n(5 HSS calls per 60 s, one kept free for people): an alert can take "
        "up to a minute."
    )


class Prompt:
    def __init__(
        self,
        stack: Stack,
        printer: Printer,
        feed: Feed,
        *,
        poll_seconds: float,
        alerts: str,
        here: str,
    ) -> None:
        self.stack = stack
        self.printer = printer
        self.feed = feed
        self.poll_seconds = poll_seconds
        #: The channel the demo's watch posts to, and the one the user types in (names).
        self.alerts = alerts
        self.here = here
        self._tty = False
        self._interrupted = asyncio.Event()
        self._lines: asyncio.Queue[str | None] = asyncio.Queue()
        #: Tasks printing on their own (the feed, baseline notices); cancelled at the end.
        self._background: set[asyncio.Task[None]] = set()
        self._started = time.monotonic()

    def help(self) -> str:
        return help_text(self.stack.user.command, self.poll_seconds, self.alerts, self.here)

    async def run(self, stdin: TextIO | None = None) -> int:
        """Read and act on lines until quit, end of input or Ctrl-C; always 0. Raises
        ``OutputClosed`` when the output's reader went away."""
        loop = asyncio.get_running_loop()
        lines = self._lines
        stream = stdin or sys.stdin
        # A prompt only for a person: piped input is echoed instead, as a transcript.
        self._tty = self.printer.is_tty and stream.isatty()
        _start_reader(loop, lines, stream)

        def interrupt() -> None:
            self._interrupted.set()
            lines.put_nowait(None)

        for signum in _QUIT_SIGNALS:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, interrupt)
        self.printer.line(self.help())
        self._spawn(self.feed.follow())
        try:
            while True:
                self.printer.prompt("hss> " if self._tty else None)
                line = await lines.get()
                self.printer.prompt(None)
                if line is None or not await self.handle(line):
                    break
        finally:
            self.printer.prompt(None)
            for task in self._background:
                task.cancel()
            outcomes = await asyncio.gather(*self._background, return_exceptions=True)
            for signum in _QUIT_SIGNALS:
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(signum)
        for outcome in outcomes:
            if isinstance(outcome, Exception):  # OutputClosed, most likely
                raise outcome
        self.printer.line("\nbye: stopping the bot, the simulator and Redis")
        return 0

    def _spawn(self, job: Coroutine[Any, Any, None]) -> None:
        """Run ``job`` beside the prompt; if it fails (OutputClosed: nobody reads any more)
        the prompt ends, and ``run`` raises what it raised."""
        task = asyncio.create_task(job)
        self._background.add(task)

        def done(task: asyncio.Task[None]) -> None:
            if not task.cancelled() and task.exception() is not None:
                self._lines.put_nowait(None)
            elif not task.cancelled():
                self._background.discard(task)

        task.add_done_callback(done)

    async def handle(self, line: str) -> bool:
        """Act on one line; False when it asks to quit. Never raises for bad input."""
        if not self._tty and line.strip():
            self.printer.step(line.strip())
        try:
            action = parse_line(line, self.stack.user.command)
        except InputError as exc:
            self.printer.line(f"  ! {exc}")
            return True
        if action == Plain("quit"):
            return False
        try:
            await self._act(action)
        except httpx.HTTPError as exc:
            self.printer.line(f"  ! the bot did not answer: {type(exc).__name__} {exc}")
        return True

    async def _act(self, action: Action | None) -> None:
        if isinstance(action, SlashCommand):
            await self._command(action.text)
        elif isinstance(action, Flip):
            await self._flip(action)
        elif isinstance(action, StartRun):
            self._start_run(action)
        elif isinstance(action, Click):
            await self._click(action.label)
        elif isinstance(action, Wait):
            # Ctrl-C ends a wait at once, not after it.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._interrupted.wait(), action.seconds)
        elif action == Plain("sim"):
            await self._tasks()
        elif action == Plain("help"):
            self.printer.line(self.help())

    async def _command(self, text: str) -> None:
        for name in channel_names(text):
            self._make_channel(name)
        reply = await self.stack.user.command_text(text)
        if reply.status != 200:
            self.printer.line(f"  ! the bot answered HTTP {reply.status}")
            return
        self.feed.ack(reply)
        words = text.lower().split()
        if words[:2] == ["watch", "runs"]:
            await self._after_run_watch()
        elif words[:1] == ["watch"] and len(words) > 1:
            await self._after_watch(text.split()[1])
        elif words == ["watches"]:
            self.printer.note(
                f"`watches` lists #{self.here}'s watches; `watches all` lists every channel's "
                f"(the demo's alerts go to #{self.alerts})"
            )

    def _make_channel(self, name: str) -> None:
        """Make ``#name`` a channel of the workspace, the bot in it, unless it is one."""
        user = self.stack.user
        if name in user.channels:
            return
        ident = f"C0CHAN{len(user.channels):04d}"
        self.stack.standin.channels[ident] = Channel(ident, name)
        user.channels[name] = ident
        self.printer.names[ident] = name
        self.printer.note(f"#{name} is a new channel of the demo's workspace, with the bot in it")

    async def _after_watch(self, task_id: str) -> None:
        """Say when a flip will alert: only once the bot has fetched the task (its first
        background refresh after the watch is the baseline unless a lookup got there first)."""
        if task_id not in await self._watched():
            return  # the bot said no, and why
        if await self._has_baseline(task_id):
            self.printer.note(
                f"the bot already has every registry of {task_id}: a flip now shows up as an "
                f"alert after the next background refresh (every {self.poll_seconds:g} s, budget "
                "allowing)"
            )
        else:
            self.printer.note(
                f"the first background refresh of {task_id} takes the baseline, in seconds (up "
                "to a minute if the budget is spent): flip after it, or the flip is part of the "
                "baseline and no alert comes; a line here says when"
            )
            self._spawn(self._announce_baseline(task_id))
        self.printer.note(f"`watches all` lists the watch (plain `watches`: #{self.here}'s only)")

    async def _after_run_watch(self) -> None:
        """Say how a run watch plays out here: the runs that exist are its baseline, and
        ``run`` makes a new one."""
        workers = self.stack.workers
        if workers is None or not await workers.run_watches.all():
            return  # the bot said no, and why
        self.printer.note(
            f"the runs HSS has made so far are the baseline; the bot lists the runs every "
            f"{self.poll_seconds:g} s while a channel follows them: `run auto` (or `run manual`) "
            "starts one in HSS, and its failures come as one message, each marked new or still "
            "failing"
        )

    async def _has_baseline(self, task_id: str) -> bool:
        """Whether the bot's mirror holds every registry of the task (a full fetch)."""
        peek = await self.stack.runtime.lookups.peek(LookupRequest(task_id))
        return peek.answer.has_data

    async def _announce_baseline(self, task_id: str) -> None:
        deadline = time.monotonic() + _BASELINE_WAIT
        while time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            if await self._has_baseline(task_id):
                at = time.monotonic() - self._started
                self.printer.note(
                    f"the bot fetched {task_id} (at +{at:.0f} s): that is the watch's baseline; "
                    "a flip now shows up as an alert"
                )
                return

    async def _click(self, label: str) -> None:
        if self.feed.last_buttons is None:
            self.printer.line("  ! no message with buttons yet: look a task up first")
            return
        message, channel, ts = self.feed.last_buttons
        try:
            target = button_labelled(message, label)
        except LookupError as exc:
            self.printer.line(f"  ! {exc}")
            return
        reply = await self.stack.user.click(target, channel_id=channel, message_ts=ts)
        if reply.status != 200:
            self.printer.line(f"  ! the bot answered HTTP {reply.status}")

    async def _flip(self, flip: Flip) -> None:
        sim = self.stack.sim
        if flip.task_id not in sim.task_ids():
            known = ", ".join(sim.task_ids())
            self.printer.line(f"  ! the simulator has no task {flip.task_id!r} yet; it has {known}")
            return
        try:
            changed = sim.set_status(flip.task_id, flip.registry, flip.status, flip.reason)
        except KeyError as exc:  # UnknownRegistry, whose message names task and registry
            self.printer.line(f"  ! {exc}; `sim` lists them")
            return
        why = f" ({changed.failed_reason})" if changed.sync_status == "failed" else ""
        self.printer.note(
            f"in HSS, {changed.registry_name} of {flip.task_id} is now {changed.sync_status}{why}"
        )
        self.printer.note(await self._when_seen(flip.task_id, changed))

    def _start_run(self, start: StartRun) -> None:
        sim = self.stack.sim
        run = sim.start_run(start.kind, duration=start.seconds)
        previous = sim.runs.previous(run)
        new, still = sim.runs.new_and_still(run)
        failing = new + still
        self.printer.note(
            f"in HSS, a {_RUN_KINDS[start.kind]} sync run began: {run.task_name} "
            f"(task id {run.task_id}), {run.size} registries in {run.duration:g} s"
        )
        if previous is None:
            self.printer.note(
                f"it will fail {len(failing)} registries as it goes, all new (the first "
                f"{start.kind} run): {_shown(failing)}"
            )
        else:
            self.printer.note(
                f"it will fail {len(failing)} registries as it goes: {len(new)} new (not failing "
                f"in the previous {start.kind} run): {_shown(new)}; {len(still)} still failing: "
                f"{_shown(still)}"
            )
        self.printer.note(
            f"`latest failed` (or `latest-{start.kind} failed`, `{run.task_id} failed`) looks "
            "them up; `tasks` lists the runs"
        )

    async def _when_seen(self, task_id: str, changed: Registry) -> str:
        if task_id not in await self._watched():
            return f"nobody watches {task_id}: `watch {task_id} #{self.alerts}` to be alerted"
        peek = await self.stack.runtime.lookups.peek(LookupRequest(task_id))
        row = peek.source.rows.get(changed.registry_id)
        if row is None or not row.known_status:
            # A registry the mirror sees for the first time is a baseline, not a change.
            return (
                f"the bot has not fetched {changed.registry_name} yet: its next refresh takes "
                "this status as the baseline (no alert); flips after that refresh alert"
            )
        return "the bot sees it at its next background refresh of the task"

    async def _watched(self) -> set[str]:
        workers = self.stack.workers
        return {t.task_id for t in await workers.watches.watched_tasks()} if workers else set()

    async def _tasks(self) -> None:
        sim = self.stack.sim
        watched = await self._watched()
        calls = sum(sim.calls.values())
        self.printer.line(f"  HSS calls so far: {calls} · 429s: {sim.throttled}")
        for task_id in sim.task_ids():
            registries = sim.registries(task_id)
            mark = ", watched" if task_id in watched else ""
            self.printer.line(f"  {task_id} ({len(registries)} registries{mark})")
            for status in reversed(STATUSES):  # failed first: what people look for
                self.printer.line("    " + _names_line(status, registries))


def _shown(names: list[str]) -> str:
    more = f" … and {len(names) - _NAMES_SHOWN} more" if len(names) > _NAMES_SHOWN else ""
    return (", ".join(names[:_NAMES_SHOWN]) or "none") + more


def _names_line(status: str, registries: list[Registry]) -> str:
    names = [r.registry_name for r in registries if r.sync_status == status]
    return f"{len(names)} {status}: {_shown(names)}"


def _start_reader(
    loop: asyncio.AbstractEventLoop, lines: asyncio.Queue[str | None], stream: TextIO
) -> None:
    """Feed ``lines`` from ``stream`` in a daemon thread; None at the end of input."""

    def put(item: str | None) -> bool:
        try:
            loop.call_soon_threadsafe(lines.put_nowait, item)
        except RuntimeError:  # the loop has closed: the demo is over
            return False
        return True

    def read() -> None:
        with contextlib.suppress(OSError, ValueError):  # closed under us: end of input
            while (line := stream.readline()) and put(line):
                pass
        put(None)

    if isinstance(stream, io.TextIOWrapper):
        # A stray non-UTF-8 byte is a typo to answer, not the end of the demo.
        stream.reconfigure(errors="replace")

    threading.Thread(target=read, name="demo-stdin", daemon=True).start()
