"""Team workload, time-compressed: our bot against a naive per-lookup bot, in the same run.

20 people ask 300 lookups over 10 tasks (mixed filters, repeats, Next-page clicks) in 10
simulated minutes, under HSS's real rule of 5 calls per 60 s. Time runs ``--factor`` times
faster (default 60: 5 calls per 1 s, data fresh for 1 s, 10 minutes in 10 s).

* ours: the real bot (``bot.sandbox.localstack``) driven by signed slash commands and button clicks;
  first reply = the ack of a command whatever it says, or a click's first ``response_url``
  post; first answer = the ack when it shows data, else the first ``response_url`` post with
  data; fresh data = the ack when it carries no notice, else the replacement without one.
* naive: what the official SDK sample does, once per lookup: one synchronous
  ``HssClient.list_associate_registries`` (huaweicloudsdkhss) for the page asked, no cache,
  no retry, no budget, in threads, against a second simulator with the same config and seed.

Calls are timestamped as the simulator receives them: ``calls_in_window`` counts those in
the 10 simulated minutes (the budget allows at most 5 x minutes there), ``calls`` all of them
until the last answer landed; ``calls_first_sim_s``/``calls_last_sim_s`` give their span.

Questions are split by size: one-page when the cheapest server-side view that answers them
(the whole task, its status alone, or the query itself) fits one page of 200, multi-page
otherwise; a Next click counts as its question. The age of the data in an ack is taken when
the bot peeked the mirror for it (real seconds, reported simulated).

Run: ``.venv/bin/python -m bench.workload [--seed N] [--factor F] [--fresh-seconds S]``;
one figure per line. The 60-minute variant of the same team pattern (the same rate of
lookups), with its last 30 minutes reported apart as the steady state:
``--minutes 60 --lookups 1800 --steady-from 30``.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import dataclasses
import json
import random
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.exceptions import exceptions as sdk_errors
from huaweicloudsdkhss.v5 import HssClient, ListAssociateRegistriesRequest

from bench.common import INF, ResponseWatcher, emit, ms, percentile, quiet, ratio
from bot.hss.budget import asker
from bot.lookup import Question
from bot.models import PAGE_LIMIT_MAX, REGISTRY_TYPES, LookupRequest, Registry
from bot.sandbox.localstack import Stack, local_stack
from bot.sandbox.sim_server import start_simulator
from bot.sandbox.simulator import _ROUTE, SimConfig, SimRequest, SimResponse, Simulator
from bot.sandbox.slack_requests import SlackUser, button
from bot.slack.render import ACTION_PAGE_NEXT, PAGE_SIZE

RATE_CALLS = 5
REAL_WINDOW = 60.0  # HSS: 5 calls per 60 s per IAM user
REAL_FRESH = 60.0  # the bot's default HSS_FRESH_SECONDS (``--fresh-seconds``)
REAL_RESPONSE_URL_LIFE = 30 * 60.0  # Slack: a response_url works for 30 minutes
TASK_SIZES = (20, 45, 90, 150, 200, 350, 700, 1200, 2000, 3000)
TASK_WEIGHTS = (10, 8, 7, 6, 5, 4, 3, 3, 2, 2)
#: (filter kind, weight) for a new lookup: people mostly ask what failed.
FILTERS = (
    ("failed", 40),
    ("all", 14),
    ("running", 12),
    ("finished", 6),
    ("failed_type", 14),
    ("name", 14),
)
PAGE_CHANCE = 0.35  # when the person's last answer has a next page
REPEAT_CHANCE = 0.18  # someone asks again what was asked before
SLUGS = ("swr", "swr-shared", "swr-ee", "harbor", "jfrog", "registry")
ENVS = ("prod", "staging", "dev", "qa", "cn-east", "ap-sg")


@dataclass(frozen=True)
class Query:
    task: str
    status: str | None = None
    types: tuple[str, ...] = ()
    name: str | None = None

    def text(self) -> str:
        words = [self.task]
        if self.status:
            words.append(self.status)
        if self.types:
            words.append("type=" + ",".join(self.types))
        if self.name is not None:
            words.append(f"name={self.name}")
        return " ".join(words)

    def matches(self, reg: Registry) -> bool:
        return (
            (self.status is None or reg.sync_status == self.status)
            and (not self.types or reg.registry_type in self.types)
            and (self.name is None or self.name.casefold() in reg.registry_name.casefold())
        )


@dataclass(frozen=True)
class Event:
    index: int
    at: float  # simulated seconds after the start
    user: int
    kind: str  # new | repeat | page
    query: Query
    page: int = 0
    after: int | None = None  # page clicks: the lookup whose Next button is clicked
    matches: int = 0
    #: Calls the cheapest server-side view answering the question takes (whole task, its
    #: status, or the query itself, each 200 a page): 1 = a one-page question.
    calls: int = 1


# --- the workload ----------------------------------------------------------------------------


def sim_config(seed: int, factor: float) -> SimConfig:
    sizes = {f"sync-{chr(ord('a') + i)}": n for i, n in enumerate(TASK_SIZES)}
    return SimConfig(
        seed=seed, rate_limit=RATE_CALLS, window=REAL_WINDOW / factor, task_sizes=sizes
    )


def _new_query(rng: random.Random, task: str, regs: Sequence[Registry]) -> Query:
    kind = rng.choices([k for k, _ in FILTERS], [w for _, w in FILTERS])[0]
    if kind == "all":
        return Query(task)
    if kind == "failed_type":
        return Query(task, "failed", tuple(sorted(rng.sample(REGISTRY_TYPES, rng.choice((1, 2))))))
    if kind == "name":
        if rng.random() < 0.5:
            return Query(task, name=rng.choice(regs).registry_name)
        return Query(
            task, rng.choice((None, "failed")), name=f"{rng.choice(SLUGS)}-{rng.choice(ENVS)}"
        )
    return Query(task, kind)


def _pages(count: int) -> int:
    return max(1, -(-count // PAGE_LIMIT_MAX))


def view_calls(query: Query, regs: Sequence[Registry]) -> int:
    """Calls the cheapest view answering ``query`` takes: the whole task, its status alone,
    or the query itself (as ``bot.mirror.choose_view`` chooses)."""
    options = [len(regs)]
    if query.status is not None:
        options.append(sum(r.sync_status == query.status for r in regs))
    if query.types or query.name is not None:
        options.append(sum(map(query.matches, regs)))
    return _pages(min(options))


def make_workload(
    config: SimConfig, *, seed: int, users: int, lookups: int, minutes: float
) -> list[Event]:
    """Deterministic from ``seed``: arrival times of a Poisson process (sorted uniforms),
    popular tasks asked more, and each person's Next clicks on their own last answer."""
    rng = random.Random(seed)
    truth = Simulator(config)
    tasks = sorted(config.task_sizes)
    weights = list(TASK_WEIGHTS)
    rng.shuffle(weights)
    times = sorted(rng.uniform(0.0, minutes * 60.0) for _ in range(lookups))
    events: list[Event] = []
    last: dict[int, Event] = {}
    for index, at in enumerate(times):
        user = rng.randrange(users)
        prev = last.get(user)
        if prev and prev.matches > (prev.page + 1) * PAGE_SIZE and rng.random() < PAGE_CHANCE:
            ev = Event(
                index,
                at,
                user,
                "page",
                prev.query,
                prev.page + 1,
                prev.index,
                prev.matches,
                prev.calls,
            )
        elif events and rng.random() < REPEAT_CHANCE:
            query = rng.choice([e.query for e in events if e.kind != "page"])
            ev = Event(index, at, user, "repeat", query)
        else:
            task = rng.choices(tasks, weights)[0]
            ev = Event(index, at, user, "new", _new_query(rng, task, truth.registries(task)))
        if ev.kind != "page":
            regs = truth.registries(ev.query.task)
            ev = dataclasses.replace(
                ev, matches=sum(map(ev.query.matches, regs)), calls=view_calls(ev.query, regs)
            )
        events.append(ev)
        last[user] = ev
    return events


# --- measuring one side ------------------------------------------------------------------------


@dataclass
class Outcome:
    reply: float = INF  # seconds to the first reply of any kind (ack, or a click's first post)
    first: float = INF  # seconds to the first answer with data
    fresh: float = INF  # seconds to fresh data (commands only)
    in_ack: bool = False
    ack: str = ""  # commands: fresh | stale (data and a notice) | empty (no data)
    ack_age: float = INF  # real seconds: how old the data shown in the ack was
    final: dict[str, Any] | None = None
    problem: str = ""
    done: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(frozen=True)
class Call:
    at: float  # simulated seconds after the start of the workload
    task: str
    query: str
    status: int


@dataclass
class Side:
    outcomes: list[Outcome]
    calls: list[Call]  # until the last answer landed
    late_calls: int  # after the last answer landed, before shutdown
    throttled: int
    stats: dict[str, Any]


class CallLog:
    """Timestamps every API request the simulator handles (wraps its ``_handle``)."""

    def __init__(self, sim: Simulator, factor: float) -> None:
        self.calls: list[Call] = []
        self.start = INF
        self._factor = factor
        handle = sim._handle

        def logged(request: SimRequest, request_id: str) -> SimResponse:
            at = (time.perf_counter() - self.start) * self._factor
            match = _ROUTE.fullmatch(request.raw_path)
            task = match[2] if match else request.raw_path
            try:
                response = handle(request, request_id)
            except Exception as exc:  # a rejection (429, 401...) carries its response
                status = getattr(getattr(exc, "response", None), "status", 0)
                self.calls.append(Call(at, task, request.raw_query, status))
                raise
            self.calls.append(Call(at, task, request.raw_query, response.status))
            return response

        sim._handle = logged  # type: ignore[method-assign]

    def split(self, end: float) -> tuple[list[Call], int]:
        """Calls until ``end`` (perf_counter), and how many came after."""
        cut = (end - self.start) * self._factor
        before = [c for c in self.calls if c.at <= cut]
        return before, len(self.calls) - len(before)


def has_data(message: dict[str, Any]) -> bool:
    return any(
        str(e.get("text", "")).startswith("data from")
        for block in message.get("blocks") or []
        if block.get("type") == "context"
        for e in block["elements"]
    )


def has_notice(message: dict[str, Any]) -> bool:
    return any(
        str((b.get("text") or {}).get("text", "")).startswith(":information_source:")
        for b in message.get("blocks") or []
    )


class OurRun:
    def __init__(self, stack: Stack, watcher: ResponseWatcher, *, users: int, life: float) -> None:
        self.stack = stack
        self.watcher = watcher
        self.life = life
        self.users = [self._user(i) for i in range(users)]
        #: asker -> (perf_counter, age in s) of each answer with data the bot acked with
        self.asked: dict[str, list[tuple[float, float]]] = {}
        lookups = stack.runtime.lookups
        ask = lookups.ask

        async def noted(request: LookupRequest, *, started: float | None = None) -> Question:
            question = await ask(request, started=started)
            shown = question.peek.answer.fetched_at
            if shown is not None:
                entry = (time.perf_counter(), max(0.0, time.time() - shown))
                self.asked.setdefault(asker.get() or "", []).append(entry)
            return question

        lookups.ask = noted  # type: ignore[method-assign]

    def _ack_age(self, user: SlackUser, since: float) -> float:
        """The age of the data the bot acked ``user``'s command with, asked after ``since``."""
        ages = [age for at, age in self.asked.get(user.user_id, []) if at >= since]
        return ages[-1] if ages else INF

    def _user(self, i: int) -> SlackUser:
        # A copy of the stack's signed-request user, as another person in another channel.
        user = copy.copy(self.stack.user)
        user.user_id, user.channel_id = f"U0BENCH{i:04d}", f"C0BENCH{i:04d}"
        return user

    async def command(self, ev: Event, out: Outcome) -> None:
        t0 = time.perf_counter()
        reply = await self.users[ev.user].command_text(ev.query.text())
        t_ack = time.perf_counter()
        out.final = reply.body
        out.reply = t_ack - t0
        out.ack = "empty"
        if has_data(reply.body):
            out.first, out.in_ack = t_ack - t0, True
            out.ack_age = self._ack_age(self.users[ev.user], t0)
            out.ack = "stale" if has_notice(reply.body) else "fresh"
            if not has_notice(reply.body):
                out.fresh = t_ack - t0
                return
        post = await self.watcher.first(reply.response_id, deadline=t0 + self.life)
        if post is None:
            out.problem = out.problem or "no response_url post"
            return
        at, body = post
        out.final = body
        if has_data(body):
            out.first = min(out.first, at - t0)
            if not has_notice(body):
                out.fresh = at - t0
        if not has_data(body) or has_notice(body):
            out.problem = _notice_text(body)

    async def click(self, ev: Event, out: Outcome, base: Outcome) -> None:
        await base.done.wait()
        try:
            target = button(base.final or {}, ACTION_PAGE_NEXT)
        except LookupError:
            out.problem = "no Next button on the answer clicked"
            return
        t0 = time.perf_counter()
        reply = await self.users[ev.user].click(target)
        post = await self.watcher.first(reply.response_id, deadline=t0 + self.life)
        if post is None:
            out.problem = "no response_url post"
            return
        at, out.final = post
        out.reply = at - t0
        if has_data(out.final):
            out.first = at - t0


def _notice_text(message: dict[str, Any]) -> str:
    for block in message.get("blocks") or []:
        text = str((block.get("text") or {}).get("text", ""))
        if text.startswith(":information_source:"):
            return text[:120]
    return "no data"


async def run_ours(
    config: SimConfig, events: Sequence[Event], *, factor: float, users: int, fresh: float
) -> Side:
    env = {
        "HSS_RATE_LIMIT": f"{config.rate_limit}/{config.window:g}s",
        "HSS_FRESH_SECONDS": f"{fresh / factor:g}",
    }
    outcomes = [Outcome() for _ in events]
    async with AsyncExitStack() as exits:
        stack = await exits.enter_async_context(local_stack(sim_config=config, env=env))
        watcher = await exits.enter_async_context(ResponseWatcher(stack.standin))
        run = OurRun(stack, watcher, users=users, life=REAL_RESPONSE_URL_LIFE / factor)
        log = CallLog(stack.sim, factor)
        start = log.start = time.perf_counter() + 0.2

        async def one(ev: Event) -> None:
            await asyncio.sleep(max(0.0, start + ev.at / factor - time.perf_counter()))
            out = outcomes[ev.index]
            try:
                if ev.after is None:
                    await run.command(ev, out)
                else:
                    await run.click(ev, out, outcomes[ev.after])
            finally:
                out.done.set()

        await asyncio.gather(*(one(ev) for ev in events))
        end = time.perf_counter()
        await asyncio.sleep(0.1)  # refreshes still in flight show as late calls
        sim = stack.sim
        calls, late = log.split(end)
        return Side(outcomes, calls, late, sim.throttled, sim.stats())


# --- the naive bot -----------------------------------------------------------------------------


def _naive_call(client: HssClient, ev: Event) -> tuple[float, str]:
    """One SDK call as the official sample makes it; (seconds until it returned, status)."""
    q = ev.query
    request = ListAssociateRegistriesRequest(
        task_id=q.task,
        limit=PAGE_SIZE,
        offset=ev.page * PAGE_SIZE,
        sync_status=q.status,
        registry_type=",".join(q.types) if q.types else None,
        registry_name=q.name,
    )
    t0 = time.perf_counter()
    try:
        client.list_associate_registries(request)
    except sdk_errors.ClientRequestException as exc:
        return time.perf_counter() - t0, str(exc.status_code)
    except sdk_errors.SdkException as exc:
        return time.perf_counter() - t0, type(exc).__name__
    return time.perf_counter() - t0, "200"


async def run_naive(config: SimConfig, events: Sequence[Event], *, factor: float) -> Side:
    sim = Simulator(config)
    log = CallLog(sim, factor)
    runner, url = await start_simulator(sim)
    creds = BasicCredentials(config.ak, config.sk, config.project_id)
    client = HssClient.new_builder().with_credentials(creds).with_endpoints([url]).build()
    outcomes = [Outcome() for _ in events]
    loop = asyncio.get_running_loop()
    try:
        with ThreadPoolExecutor(max_workers=64) as pool:
            start = log.start = time.perf_counter() + 0.2

            async def one(ev: Event) -> None:
                await asyncio.sleep(max(0.0, start + ev.at / factor - time.perf_counter()))
                elapsed, status = await loop.run_in_executor(pool, _naive_call, client, ev)
                out = outcomes[ev.index]
                # An error could be shown at once (a reply); only a 200 is an answer.
                out.reply = elapsed
                if status == "200":
                    out.first = out.fresh = elapsed
                else:
                    out.problem = status

            await asyncio.gather(*(one(ev) for ev in events))
            end = time.perf_counter()
    finally:
        await runner.cleanup()
    calls, late = log.split(end)
    return Side(outcomes, calls, late, sim.throttled, sim.stats())


# --- report ------------------------------------------------------------------------------------


def report_side(
    name: str, side: Side, events: Sequence[Event], factor: float, minutes: float
) -> None:
    outs = side.outcomes
    commands = [o for o, e in zip(outs, events, strict=True) if e.after is None]
    replies = [o.reply for o in outs]
    firsts = [o.first for o in outs]
    fresh = [o.fresh for o in commands]
    in_window = [c for c in side.calls if c.at <= minutes * 60.0]
    p = f"workload.{name}"
    emit(f"{p}.answered_share", sum(f < INF for f in firsts) / len(outs))
    emit(f"{p}.first_reply_p50_ms", ms(percentile(replies, 50)))
    emit(f"{p}.first_reply_p99_ms", ms(percentile(replies, 99)))
    emit(f"{p}.first_answer_p50_ms", ms(percentile(firsts, 50)))
    emit(f"{p}.first_answer_p99_ms", ms(percentile(firsts, 99)))
    emit(f"{p}.first_answer_p99_sim_s", percentile(firsts, 99) * factor)
    emit(f"{p}.fresh_share", sum(f < INF for f in fresh) / len(fresh))
    emit(f"{p}.fresh_p50_ms", ms(percentile(fresh, 50)))
    emit(f"{p}.fresh_p99_ms", ms(percentile(fresh, 99)))
    emit(f"{p}.fresh_p99_sim_s", percentile(fresh, 99) * factor)
    emit(f"{p}.calls", len(side.calls))
    emit(f"{p}.calls_in_window", len(in_window))
    emit(f"{p}.calls_first_sim_s", min((c.at for c in side.calls), default=0.0))
    emit(f"{p}.calls_last_sim_s", max((c.at for c in side.calls), default=0.0))
    emit(f"{p}.calls_after_last_answer", side.late_calls)
    emit(f"{p}.throttled_429", side.throttled)
    for size, picked in (("one_page", True), ("multi_page", False)):
        sized = [o.first for o, e in zip(outs, events, strict=True) if (e.calls == 1) == picked]
        emit(f"{p}.{size}_questions", len(sized))
        emit(f"{p}.{size}_first_answer_p50_sim_s", percentile(sized, 50) * factor)
        emit(f"{p}.{size}_first_answer_p99_sim_s", percentile(sized, 99) * factor)
    if name.endswith("ours"):
        emit(f"{p}.first_answer_in_ack_share", sum(o.in_ack for o in outs) / len(outs))
        emit(f"{p}.commands_data_in_ack_share", sum(o.in_ack for o in commands) / len(commands))
        ages = [o.ack_age for o in commands if o.in_ack]
        emit(f"{p}.ack_age_p50_sim_s", percentile(ages, 50) * factor)
        emit(f"{p}.ack_age_p99_sim_s", percentile(ages, 99) * factor)
        for kind in ("fresh", "stale", "empty"):
            emit(f"{p}.acks_{kind}", sum(o.ack == kind for o in commands))
        emit(f"{p}.max_calls_in_window", max(side.stats["max_in_window"].values(), default=0))


def _tail(side: Side, events: Sequence[Event], start: float) -> tuple[Side, list[Event]]:
    """``side`` restricted to the lookups asked from ``start`` (simulated s) and the calls
    made from then on."""
    picked = [i for i, ev in enumerate(events) if ev.at >= start]
    calls = [c for c in side.calls if c.at >= start]
    tail = Side(
        outcomes=[side.outcomes[i] for i in picked],
        calls=calls,
        late_calls=side.late_calls,
        throttled=sum(c.status == 429 for c in calls),
        stats=side.stats,
    )
    return tail, [events[i] for i in picked]


def report(
    events: Sequence[Event],
    ours: Side,
    naive: Side,
    args: argparse.Namespace,
) -> None:
    factor, minutes = args.factor, args.minutes
    kinds = {k: sum(e.kind == k for e in events) for k in ("new", "repeat", "page")}
    ceiling = RATE_CALLS * minutes * 60.0 / REAL_WINDOW
    print(
        f"# lookups={len(events)} kinds={json.dumps(kinds)} factor={factor:g}"
        f" fresh_seconds={args.fresh_seconds:g} (HSS_FRESH_SECONDS={args.fresh_seconds / factor:g})"
        f" budget_ceiling_in_window={ceiling:g}",
        flush=True,
    )
    report_side("ours", ours, events, factor, minutes)
    report_side("naive", naive, events, factor, minutes)
    emit("workload.calls_ratio_naive_over_ours", ratio(len(naive.calls), len(ours.calls)))
    emit(
        "workload.calls_in_window_ratio_naive_over_ours",
        ratio(
            sum(c.at <= minutes * 60.0 for c in naive.calls),
            sum(c.at <= minutes * 60.0 for c in ours.calls),
        ),
    )
    if args.steady_from is not None:
        # The same figures for the lookups asked from that minute on, and the calls made
        # from then until the last answer (429s: those among them).
        tail, tail_events = _tail(ours, events, args.steady_from * 60.0)
        report_side("steady.ours", tail, tail_events, factor, minutes)
    by_task = Counter(c.task for c in ours.calls)
    print(f"# ours.calls_by_task {json.dumps(dict(sorted(by_task.items())))}", flush=True)
    if args.verbose:
        for call in ours.calls:
            print(f"# call t={call.at:6.1f}s {call.status} {call.task} {call.query}")
        for ev, out in zip(events, ours.outcomes, strict=True):
            print(
                f"# {ev.index:3d} t={ev.at:6.1f}s {ev.kind:6s} p{ev.page} {ev.query.text()!r:45s}"
                f" ack={out.ack or '-':5s} reply={ms(out.reply):8.1f}ms"
                f" first={ms(out.first):8.1f}ms fresh={ms(out.fresh):8.1f}ms {out.problem}"
            )


async def main_async(args: argparse.Namespace) -> None:
    config = sim_config(args.seed, args.factor)
    events = make_workload(
        config, seed=args.seed, users=args.users, lookups=args.lookups, minutes=args.minutes
    )
    naive = await run_naive(config, events, factor=args.factor)
    ours = await run_ours(
        config, events, factor=args.factor, users=args.users, fresh=args.fresh_seconds
    )
    report(events, ours, naive, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--factor", type=float, default=60.0, help="time compression")
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--lookups", type=int, default=300)
    parser.add_argument("--minutes", type=float, default=10.0, help="simulated minutes")
    parser.add_argument(
        "--fresh-seconds",
        type=float,
        default=REAL_FRESH,
        help="the bot's HSS_FRESH_SECONDS in real time (divided by --factor)",
    )
    parser.add_argument(
        "--steady-from",
        type=float,
        default=None,
        help="also report (as workload.steady.ours.*) the lookups asked from this simulated"
        " minute on: the steady state of a long run",
    )
    parser.add_argument("--verbose", action="store_true", help="one line per lookup, as #")
    args = parser.parse_args()
    quiet(["HuaweiCloud-SDK-HssClient"])
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
