"""A week of sync runs followed, time-compressed: run watches against a task watch per run
typed by hand as each run appears (the old way), in the same run.

The week: HSS (the simulator) makes a scheduled run of 500 registries every simulated day,
the first half a day in (7 in 7 days), and the bench starts 3 manual runs (days 2.1, 3.9,
5.2). Each run goes through its registries in 30 simulated minutes and fails 2% of them as
it reaches them, half failing in the previous run of its kind too (still failing), half
new. Three scheduled runs began before the week: the baseline. Two channels follow:
#runs-auto the scheduled runs, #runs-all every run.

* ours: the real bot (``bot.sandbox.localstack``: scheduler, run follower, alert pipeline
  and outbox in one process, embedded Redis, the simulator, the Slack stand-in) with
  ``watch runs auto #runs-auto`` and ``watch runs #runs-all`` typed at the start.
* peer: the same bot followed the old way. A person sees each new run in the HSS console
  ``--human-delay`` simulated seconds after it began (default 600: someone on duty, who
  acts at once) and types ``/hss-sync watch <task id> #channel`` in each channel that
  follows runs of its kind. Nobody removes a watch. A failure the run had reached before
  the watch's first refresh is that watch's baseline: never alerted.

Time runs ``--factor`` times faster (default 1440: a simulated day is 60 s). The simulator
and both budgets allow 5 calls per 60/F s per API, and every period of the bot is divided by
F (TASKS_POLL_SECONDS 300, POLL_INTERVAL_SECONDS 60, HSS_FRESH_SECONDS 60, STUCK_AFTER_SECONDS,
MISSED_RUN_AFTER_SECONDS, the outbox's 1 message per second and channel and its look for
messages due every 0.25 s, the alert pipeline's look for new watches every 5 s), below the
settings' 1 s minimums where need be (``local_stack(tune=...)``). One distortion remains:
the budget pads its window by max(20 ms, 5%) against arrival jitter, so at F=1440 it allows
5 calls per 89 simulated s (63 s at the real rate); a side that is budget-bound (the peer)
is slowed by that. And 1 ms of real time is 1.44 simulated s: a busy event loop shows.

Ground truth, from the simulator: for each channel and each run it follows, the *new*
failures (failing in the run, not in the previous run of its kind; a kind's first run: all)
and the moment each happened (the run reached it). What Slack got, from the stand-in: every
message the bot posted or updated, timestamped as it landed; a top-level message is about
the run whose task id it names, an update or thread reply about its parent's. A new
failure is *alerted* when its name (in code) first shows in a line of that run's message
or thread in that channel; *lost* when it never does; *duplicated* when more than one
top-level message of the channel names it for that run, or more than one thread line does.
Ours must mark it ``new``: ``misclassified`` counts those marked still failing. Latency =
alerted - happened, in simulated seconds (a lost one counts as infinitely late); ours is
split at the first ListImageScanTask call answered after the failure: ``to_list_call``
(simulated s, what P bounds) and ``list_call_to_slack`` (real ms: the fetches, the outbox
and the processing, which the compressed clock magnifies F times).

The bound (ours), as the README's "Following runs" gives it: a failure shows in the counts of
the next list call, every P = TASKS_POLL_SECONDS (one call on the tasks budget, which at one
call per P never waits); changed counts start the fetch of the run's failed view (f pages:
1 for up to 200 failures, 1 more the first time for a run of over 200 registries, to learn
its size) and, once, the previous run's (p = 1), on the registries budget at background
priority, which leaves one call a window to people: one call per W / (C - 1) = 15 s at
worst; then the outbox, about 1 s. bound = P + (f + p) x W / (C - 1) + 1 s = 300 + 3 x 15 +
1 = 346 s for a run's first failures (316 s for later ones); a failure at a random moment
waits P/2 = 150 s for the list call on average. Task watches kept fresh by the scheduler can
add a slot each in front (none here).

Run: ``.venv/bin/python -m bench.week [--seed N] [--factor F] [--days D] [--side S]``; one
figure per line, times in simulated seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import dataclasses
import json
import math
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

from bench.common import INF, emit, ms, percentile, quiet, ratio
from bot.config import Settings
from bot.sandbox.localstack import Stack, local_stack
from bot.sandbox.simruns import AUTO, MANUAL, SimRun
from bot.sandbox.simulator import (
    _RUNS_ROUTE,
    REGISTRIES,
    TASKS,
    SimConfig,
    SimRequest,
    SimResponse,
    Simulator,
)
from bot.sandbox.slack_standin import Call, Channel, SlackStandIn

RATE_CALLS = 5
REAL_WINDOW = 60.0  # HSS: 5 calls per 60 s per API
REAL_DAY = 86_400.0
REAL_RUN = 1_800.0  # a run goes through its registries in 30 minutes
REAL_TASKS_POLL = 300.0  # TASKS_POLL_SECONDS default
REAL_POLL = 60.0  # POLL_INTERVAL_SECONDS default
REAL_FRESH = 60.0  # HSS_FRESH_SECONDS default
REAL_STUCK = 7_200.0  # STUCK_AFTER_SECONDS default
REAL_MISSED = 93_600.0  # MISSED_RUN_AFTER_SECONDS default
REAL_SEND = 1.0  # the outbox: 1 message per second and channel
REAL_TASKS_EVERY = 5.0  # the alert pipeline looks for new watches this often
REAL_OUTBOX_POLL = 0.25  # the outbox looks for messages due this often (OutboxSender)
REGISTRIES_PER_RUN = 500
FAILURE_RATE = 0.02
HISTORY = 3
MANUAL_DAYS = (2.1, 3.9, 5.2)
RESERVE = 1  # budget slots background work leaves to people
#: Pages fetched for a run's first failures: its failed view, one more to learn the size of
#: a run of over 200 registries, and the previous run's failed view.
FIRST_PAGES = 1 + 1 + 1

AUTO_CHANNEL = Channel("C0WEEKAUTO", "runs-auto")
ALL_CHANNEL = Channel("C0WEEKALL1", "runs-all")
#: Which run kinds each channel follows.
FOLLOWS = {AUTO_CHANNEL.id: {AUTO}, ALL_CHANNEL.id: {AUTO, MANUAL}}
OURS_WATCHES = (f"watch runs auto #{AUTO_CHANNEL.name}", f"watch runs #{ALL_CHANNEL.name}")


def sim_config(seed: int, factor: float) -> SimConfig:
    return SimConfig(
        seed=seed,
        rate_limit=RATE_CALLS,
        window=REAL_WINDOW / factor,
        run_every=REAL_DAY / factor,
        run_duration=REAL_RUN / factor,
        run_history=HISTORY,
        run_registries=REGISTRIES_PER_RUN,
        run_failure_rate=FAILURE_RATE,
    )


def bot_env(factor: float) -> dict[str, str]:
    window = f"{RATE_CALLS}/{REAL_WINDOW / factor:.6f}s"
    return {"HSS_RATE_LIMIT": window, "HSS_TASKS_RATE_LIMIT": window}


def tuned(factor: float) -> Callable[[Settings], Settings]:
    """Every period of the bot divided by ``factor``, past the settings' minimums. Names the
    settings do not have (yet) are left out."""
    wanted: dict[str, Any] = {
        "poll_interval_seconds": REAL_POLL / factor,
        "fresh_seconds": REAL_FRESH / factor,
        "tasks_poll_seconds": REAL_TASKS_POLL / factor,
        "stuck_after_seconds": REAL_STUCK / factor,
        "missed_run_after_seconds": REAL_MISSED / factor,
    }

    def tune(settings: Settings) -> Settings:
        names = {f.name for f in dataclasses.fields(settings)}
        return dataclasses.replace(settings, **{k: v for k, v in wanted.items() if k in names})

    return tune


# --- what Slack got ----------------------------------------------------------------------------


class SlackLog:
    """Every Web API call the bot makes to the stand-in, timestamped (``time.time``) as it
    lands: one waiter on the stand-in, whatever the number of calls."""

    def __init__(self, standin: SlackStandIn) -> None:
        self._standin = standin
        self.calls: list[tuple[float, Call]] = []
        self._seen = 0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> SlackLog:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await self._standin.wait_for(lambda cs: len(cs) > self._seen, timeout=3600.0)
            now = time.time()
            calls = self._standin.calls
            self.calls += [(now, c) for c in calls[self._seen :] if c.kind == "api"]
            self._seen = len(calls)


def block_text(body: dict[str, Any]) -> str:
    """Every text of a message's blocks, one after another (the fallback ``text`` is left
    out: it is truncated and unmarked)."""
    found: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "text" and isinstance(value, str):
                    found.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(body.get("blocks") or [])
    return "\n".join(found)


@dataclass
class Thread:
    """One top-level message of a channel: every version of it, and its thread's replies."""

    channel: str
    task_id: str | None
    versions: list[tuple[float, str]] = field(default_factory=list)
    replies: list[tuple[float, str]] = field(default_factory=list)


def threads_of(calls: Sequence[tuple[float, Call]], run_ids: Sequence[str]) -> list[Thread]:
    by_ts: dict[tuple[str, str], Thread] = {}
    for at, call in calls:
        channel = str(call.body.get("channel", ""))
        text = block_text(call.body)
        if call.name == "chat.postMessage":
            parent = call.body.get("thread_ts")
            if parent is not None:
                if (thread := by_ts.get((channel, str(parent)))) is not None:
                    thread.replies.append((at, text))
                continue
            task_id = next((rid for rid in run_ids if rid in text), None)
            thread = Thread(channel, task_id, [(at, text)])
            by_ts[(channel, str(call.answer.get("ts", "")))] = thread
        elif call.name == "chat.update" and (
            thread := by_ts.get((channel, str(call.body.get("ts", ""))))
        ):
            thread.versions.append((at, text))
    return list(by_ts.values())


class ListLog:
    """When each ListImageScanTask call was answered 200 (wraps the simulator's
    ``_handle``, as ``bench.workload``'s ``CallLog`` does)."""

    def __init__(self, sim: Simulator) -> None:
        self.times: list[float] = []
        handle = sim._handle

        def logged(request: SimRequest, request_id: str) -> SimResponse:
            response = handle(request, request_id)
            if response.status == 200 and _RUNS_ROUTE.fullmatch(request.raw_path):
                self.times.append(time.time())
            return response

        sim._handle = logged  # type: ignore[method-assign]

    def first_after(self, moment: float) -> float | None:
        at = bisect.bisect_left(self.times, moment)
        return self.times[at] if at < len(self.times) else None


# --- ground truth ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    """A new failure a channel should hear of: in ``task_id``, at ``at`` (epoch s)."""

    channel: str
    task_id: str
    name: str
    at: float


def ground_truth(
    week: Sequence[SimRun], previous: Callable[[SimRun], SimRun | None]
) -> list[Failure]:
    truth = []
    for run in week:
        before = previous(run)
        old = set(before.failing_names()) if before is not None else set()
        for channel, kinds in FOLLOWS.items():
            if run.task_type in kinds:
                truth += [
                    Failure(channel, run.task_id, name, at)
                    for name, at in run.failures()
                    if name not in old
                ]
    return truth


@dataclass
class Verdict:
    failure: Failure
    into_run: float  # simulated seconds from the run's start to the failure
    latency: float = INF  # simulated seconds; INF: lost
    #: Simulated seconds to the first list call after the failure (ours: what P bounds).
    to_list: float = INF
    #: Real seconds from that list call to the alert: fetches, the outbox, processing.
    after_list: float = INF
    duplicated: bool = False
    misclassified: bool = False


def _lines_naming(text: str, name: str) -> Iterator[str]:
    token = f"`{name}`"
    return (line for line in text.split("\n") if token in line)


def judge(
    failure: Failure, begin: float, threads: Sequence[Thread], lists: ListLog, factor: float
) -> Verdict:
    ours = [t for t in threads if t.channel == failure.channel and t.task_id == failure.task_id]
    first: tuple[float, str] | None = None
    tops = replies = 0
    for thread in ours:
        named = [
            (at, line) for at, text in thread.versions for line in _lines_naming(text, failure.name)
        ]
        tops += bool(named)
        said = [
            (at, line) for at, text in thread.replies for line in _lines_naming(text, failure.name)
        ]
        replies += len({at for at, _ in said})
        for seen in named + said:
            if first is None or seen[0] < first[0]:
                first = seen
    into = (failure.at - begin) * factor
    if first is None:
        return Verdict(failure, into)
    listed = lists.first_after(failure.at)
    return Verdict(
        failure,
        into,
        latency=max(0.0, first[0] - failure.at) * factor,
        to_list=INF if listed is None else (listed - failure.at) * factor,
        after_list=INF if listed is None else first[0] - listed,
        duplicated=tops > 1 or replies > 1,
        misclassified="still failing" in first[1],
    )


# --- the two sides -----------------------------------------------------------------------------


@dataclass
class Side:
    name: str
    verdicts: list[Verdict]
    calls: dict[str, int]  # per API
    throttled: dict[str, int]
    max_in_window: dict[str, int]
    days: float
    top_messages: int
    runs_followed: int
    notices: Counter[str]
    watches_typed: int
    acks: list[str]


class Week:
    """One side's week on its own stack: the clock, the manual runs, the human (peer)."""

    def __init__(self, stack: Stack, factor: float, days: int) -> None:
        self.stack = stack
        self.factor = factor
        self.days = days
        runs = stack.sim.runs
        first = runs.next_scheduled_at()
        assert first is not None
        self.day = REAL_DAY / factor
        self.start = first - 0.5 * self.day  # the simulator's start: the week's
        self.end = self.start + days * self.day
        self.history = {r.task_id for r in runs.newest_first(time.time())}
        self.watches_typed = 0
        self.acks: list[str] = []

    async def until(self, moment: float) -> None:
        await asyncio.sleep(max(0.0, moment - time.time()))

    async def manual_runs(self) -> None:
        for day in MANUAL_DAYS:
            if day >= self.days:
                return
            await self.until(self.start + day * self.day)
            self.stack.sim.start_run("manual")

    async def type(self, text: str) -> None:
        reply = await self.stack.user.command_text(text)
        self.watches_typed += 1
        self.acks.append(block_text(reply.body) or json.dumps(reply.body)[:200])

    async def human(self, delay: float) -> None:
        """The old way: each new run gets a task watch in every channel that follows its
        kind, ``delay`` simulated seconds after it began."""
        watched: set[str] = set()
        while time.time() < self.end:
            now = time.time()
            for run in self.stack.sim.runs.newest_first(now):
                fresh = run.task_id not in self.history and run.task_id not in watched
                if fresh and now >= run.begin + delay / self.factor:
                    watched.add(run.task_id)
                    for channel in (AUTO_CHANNEL, ALL_CHANNEL):
                        if run.task_type in FOLLOWS[channel.id]:
                            await self.type(f"watch {run.task_id} #{channel.name}")
            await asyncio.sleep(REAL_WINDOW / self.factor)

    def week_runs(self) -> list[SimRun]:
        runs = self.stack.sim.runs.newest_first(self.end)[::-1]
        return [r for r in runs if r.task_id not in self.history and r.begin < self.end]


async def run_side(name: str, args: argparse.Namespace) -> Side:
    factor = args.factor
    config = sim_config(args.seed, factor)
    async with AsyncExitStack() as exits:
        stack = await exits.enter_async_context(
            local_stack(
                sim_config=config,
                env=bot_env(factor),
                watches=True,
                send_interval=REAL_SEND / factor,
                tasks_every=REAL_TASKS_EVERY / factor,
                channels=(AUTO_CHANNEL, ALL_CHANNEL),
                tune=tuned(factor),
            )
        )
        assert stack.workers is not None
        # The outbox looks for due messages every 0.25 s of real time, which the compressed
        # clock would stretch to 6 simulated minutes: it is divided by F like the rest.
        stack.workers.sender._poll = REAL_OUTBOX_POLL / factor
        log = await exits.enter_async_context(SlackLog(stack.standin))
        lists = ListLog(stack.sim)
        week = Week(stack, factor, args.days)
        jobs = [asyncio.create_task(week.manual_runs())]
        if name == "ours":
            for text in OURS_WATCHES:
                await week.type(text)
        else:
            jobs.append(asyncio.create_task(week.human(args.human_delay)))
        await week.until(week.end)
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)
        sim = stack.sim
        runs = week.week_runs()
        truth = ground_truth(runs, sim.runs.previous)
        threads = threads_of(log.calls, [r.task_id for r in runs])
        begins = {r.task_id: r.begin for r in runs}
        verdicts = [judge(f, begins[f.task_id], threads, lists, factor) for f in truth]
        notices = Counter(
            word for t in threads for word in ("stuck", "missed") if f"*{word}*" in t.versions[0][1]
        )
        return Side(
            name=name,
            verdicts=verdicts,
            calls={api: sum(sim.apis[api].calls.values()) for api in (TASKS, REGISTRIES)},
            throttled={api: sim.apis[api].throttled for api in (TASKS, REGISTRIES)},
            max_in_window={
                api: max(sim.apis[api].max_in_window.values(), default=0)
                for api in (TASKS, REGISTRIES)
            },
            days=args.days,
            top_messages=sum(t.task_id is not None for t in threads),
            runs_followed=len({(t.channel, t.task_id) for t in threads if t.task_id}),
            notices=notices,
            watches_typed=week.watches_typed,
            acks=week.acks,
        )


# --- report ------------------------------------------------------------------------------------


def latencies(side: Side) -> list[float]:
    return [v.latency for v in side.verdicts]


def report_side(side: Side) -> None:
    p = f"week.{side.name}"
    lat = latencies(side)
    alerted = [x for x in lat if x < INF]
    emit(f"{p}.new_failures", len(side.verdicts))
    emit(f"{p}.alerted", len(alerted))
    emit(f"{p}.lost", len(lat) - len(alerted))
    emit(f"{p}.duplicated", sum(v.duplicated for v in side.verdicts))
    emit(f"{p}.misclassified", sum(v.misclassified for v in side.verdicts))
    emit(f"{p}.latency_p50_s", percentile(lat, 50))
    emit(f"{p}.latency_p99_s", percentile(lat, 99))
    emit(f"{p}.latency_alerted_p50_s", percentile(alerted, 50) if alerted else math.nan)
    emit(f"{p}.latency_alerted_p99_s", percentile(alerted, 99) if alerted else math.nan)
    if side.name == "ours":
        to_list = [v.to_list for v in side.verdicts if v.latency < INF]
        after = [v.after_list for v in side.verdicts if v.latency < INF]
        emit(f"{p}.to_list_call_p50_s", percentile(to_list, 50) if to_list else math.nan)
        emit(f"{p}.to_list_call_p99_s", percentile(to_list, 99) if to_list else math.nan)
        emit(
            f"{p}.list_call_to_slack_p50_real_ms", ms(percentile(after, 50)) if after else math.nan
        )
        emit(
            f"{p}.list_call_to_slack_p99_real_ms", ms(percentile(after, 99)) if after else math.nan
        )
    for api in (TASKS, REGISTRIES):
        emit(f"{p}.calls_per_day_{api}", side.calls[api] / side.days)
        emit(f"{p}.throttled_429_{api}", side.throttled[api])
        emit(f"{p}.max_calls_in_window_{api}", side.max_in_window[api])
    emit(f"{p}.run_messages", side.top_messages)
    emit(f"{p}.runs_with_a_message", side.runs_followed)
    emit(f"{p}.stuck_notices", side.notices["stuck"])
    emit(f"{p}.missed_notices", side.notices["missed"])
    emit(f"{p}.commands_typed", side.watches_typed)


def report(sides: dict[str, Side], args: argparse.Namespace) -> None:
    factor = args.factor
    bound = REAL_TASKS_POLL + FIRST_PAGES * REAL_WINDOW / (RATE_CALLS - RESERVE) + REAL_SEND
    print(
        f"# days={args.days} factor={factor:g} (a simulated day = {REAL_DAY / factor:g} s)"
        f" rate={RATE_CALLS}/{REAL_WINDOW / factor:.4f}s per API"
        f" human_delay={args.human_delay:g}s seed={args.seed}",
        flush=True,
    )
    for side in sides.values():
        report_side(side)
        if args.verbose:
            for v in side.verdicts:
                f = v.failure
                print(
                    f"# {side.name} {f.channel} {f.task_id[:8]} {f.name} +{v.into_run:.0f}s"
                    f" latency={v.latency:.0f}s to_list={v.to_list:.0f}s"
                    f" after_list={ms(v.after_list):.0f}ms{' dup' if v.duplicated else ''}"
                    f"{' misclassified' if v.misclassified else ''}"
                )
        for ack in side.acks[: 2 if side.name == "ours" else 1]:
            print(f"# {side.name} ack: {' '.join(ack.split())[:160]}", flush=True)
    if "ours" in sides:
        emit("week.ours.latency_bound_s", bound)
        emit(
            "week.ours.latency_p99_over_bound",
            ratio(percentile(latencies(sides["ours"]), 99), bound),
        )
    if len(sides) == 2:
        ours, peer = sides["ours"], sides["peer"]
        emit(
            "week.calls_ratio_peer_over_ours",
            ratio(sum(peer.calls.values()), sum(ours.calls.values())),
        )
        emit(
            "week.registries_calls_ratio_peer_over_ours",
            ratio(peer.calls[REGISTRIES], ours.calls[REGISTRIES]),
        )
        for q in (50, 99):
            emit(
                f"week.latency_p{q}_ratio_peer_over_ours",
                ratio(percentile(latencies(peer), q), percentile(latencies(ours), q)),
            )
            peer_alerted = [x for x in latencies(peer) if x < INF]
            ours_alerted = [x for x in latencies(ours) if x < INF]
            if peer_alerted and ours_alerted:
                emit(
                    f"week.latency_alerted_p{q}_ratio_peer_over_ours",
                    ratio(percentile(peer_alerted, q), percentile(ours_alerted, q)),
                )


async def main_async(args: argparse.Namespace) -> None:
    names = ("peer", "ours") if args.side == "both" else (args.side,)
    sides = {name: await run_side(name, args) for name in names}
    report(sides, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--factor", type=float, default=1440.0, help="time compression")
    parser.add_argument("--days", type=int, default=7, help="simulated days (runs: one a day)")
    parser.add_argument(
        "--human-delay",
        type=float,
        default=600.0,
        help="peer: simulated seconds from a run's start to its watch being typed",
    )
    parser.add_argument("--side", choices=("both", "ours", "peer"), default="both")
    parser.add_argument("--verbose", action="store_true", help="one line per new failure, as #")
    args = parser.parse_args()
    quiet()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
