"""Flip-to-alert latency with 50 watched tasks under HSS's 5 calls / 60 s, time-compressed.

The real bot (``bot.sandbox.localstack`` with ``watches=True``: scheduler, alert pipeline and outbox
sender in one process, embedded Redis, the HSS simulator and the Slack stand-in) watches 50
tasks of mixed sizes (20 to 5,000 registries), each from its own channel, typed as
``/hss-sync watch <task>`` there. Time runs ``--factor`` times faster (default 60: the
simulator and ``HSS_RATE_LIMIT`` allow 5 calls per 1 s, ``POLL_INTERVAL_SECONDS=1`` is the
default 60 s, the outbox's 1 message per second per channel becomes ``send_interval=1/60``).

Lower bound. A watched task costs ``ceil(size / 200)`` calls per full refresh (a 5,000-registry
task 25), so refreshing every watched task once costs ``S = sum of those`` calls. Background
refreshes leave one slot a window to people, so the budget refreshes everything once in at
best ``bound = S / (5 - 1)`` windows; a flip at a random moment waits for the next refresh of
its task, so even a perfect round robin gives latencies spread over ``0..bound``: median about
0.5 x bound, p99 about 0.99 x bound (plus the rest of the fetch after the flip's page).
``*_over_bound_all_slots`` divides by ``S / 5`` windows instead (a bot that kept no reserve).

Phases: warm-up (every watch typed, every task fetched once: the baseline, no alerts), then
``--flip-cycles`` x bound of random flips (seeded): ``--failures`` registries go
``finished -> failed`` at Poisson times on uniformly chosen tasks; each alerted failure
recovers (``failed -> finished``) with chance ``--recover-share`` a uniform 0..bound after
its alert was seen, if still inside the flip phase. Each registry flips at most once each
way. Then the bench waits until every flip is alerted (at most ``--horizon`` x bound after
the last injection), and ``--tail`` x bound more to catch late duplicates.

An alert is a ``chat.postMessage`` to the task's channel: a new incident's message lists the
failure (``• `name` ...``), or a thread line says ``:x: `name` ... failed`` or
``:white_check_mark: `name` ... recovered`` (the ``chat.update`` of the parent goes out one
send interval before its thread line and is not counted). Latency = first alert after the
injection. Duplicate = the same flip alerted in more than one postMessage. Loss = a flip
never alerted by the end (counted as infinitely slow in the percentiles).
``detect`` = injection -> the refresh's save that recorded the change (the lookup service's
mirror update returning it); ``deliver`` = that save -> the Slack post (alert pipeline +
outbox). (Read as it happens: the alert pipeline trims the change stream once it has
handled an entry.)

Run: ``.venv/bin/python -m bench.flip_latency [--seed N] [--factor F]``; one figure per line,
times in simulated seconds unless named ``_over_*``.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import itertools
import json
import math
import random
import re
import statistics
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.common import INF, emit, percentile, quiet, ratio
from bot.mirror import Change, view_key
from bot.models import PAGE_LIMIT_MAX, ApiFilter, LookupRequest, TaskRef
from bot.sandbox.localstack import Stack, local_stack
from bot.sandbox.simulator import _ROUTE, SimConfig, SimRequest, SimResponse, Simulator
from bot.sandbox.slack_standin import Call
from bot.storage import keys
from bot.storage.mirror_codec import decode_meta

RATE_CALLS = 5
REAL_WINDOW = 60.0  # HSS: 5 calls per 60 s per IAM user
RESERVE = 1  # background refreshes leave this many slots a window to people
REAL_POLL = 60.0  # POLL_INTERVAL_SECONDS default
REAL_SEND_INTERVAL = 1.0  # Slack: about 1 message per second per channel
#: (tasks, smallest, largest registries): mostly small tasks, a few big ones.
TIERS = ((26, 20, 200), (12, 201, 1_000), (8, 1_001, 3_000), (4, 3_001, 5_000))
BIGGEST = 5_000
_FULL_VIEW = view_key(ApiFilter())
_NAME = re.compile(r"`([^`]+)`")


def pages(size: int) -> int:
    return max(1, math.ceil(size / PAGE_LIMIT_MAX))


def task_sizes(seed: int) -> dict[str, int]:
    rng = random.Random(f"flip-sizes:{seed}")
    sizes = [rng.randint(lo, hi) for n, lo, hi in TIERS for _ in range(n)]
    sizes[-1] = BIGGEST  # the largest the issue names: 25 calls per refresh
    rng.shuffle(sizes)
    return {f"flip-{i:02d}": n for i, n in enumerate(sizes)}


@dataclass
class Flip:
    index: int
    task: str
    channel: str
    registry_id: str
    name: str
    kind: str  # failure | recovery
    at_sim: float  # planned, simulated seconds after the flip phase starts (failures)
    recover_delay: float | None = None  # failures: simulated seconds after the alert
    injected: float = INF  # perf_counter
    alerts: list[float] = field(default_factory=list)  # perf_counter of each alerting post
    detected: float = INF  # perf_counter of the save that recorded the change
    seen: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def latency(self) -> float:
        return self.alerts[0] - self.injected if self.alerts else INF


@dataclass(frozen=True)
class SimCall:
    at: float  # perf_counter
    task: str
    query: str
    status: int


class CallLog:
    """Timestamps every API request the simulator handles (wraps its ``_handle``)."""

    def __init__(self, sim: Simulator) -> None:
        self.calls: list[SimCall] = []
        handle = sim._handle

        def logged(request: SimRequest, request_id: str) -> SimResponse:
            match = _ROUTE.fullmatch(request.raw_path)
            task = match[2] if match else request.raw_path
            try:
                response = handle(request, request_id)
            except Exception as exc:  # a rejection (429, 401...) carries its response
                status = getattr(getattr(exc, "response", None), "status", 0)
                self.calls.append(SimCall(time.perf_counter(), task, request.raw_query, status))
                raise
            self.calls.append(
                SimCall(time.perf_counter(), task, request.raw_query, response.status)
            )
            return response

        sim._handle = logged  # type: ignore[method-assign]


def _texts(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [
            t
            for k, v in node.items()
            for t in ([v] if k == "text" and isinstance(v, str) else _texts(v))
        ]
    if isinstance(node, list):
        return [t for v in node for t in _texts(v)]
    return []


def alert_lines(body: dict[str, Any]) -> list[str]:
    blocks = body.get("blocks")
    if isinstance(blocks, str):
        blocks = json.loads(blocks)
    return [line.strip() for text in _texts(blocks or []) for line in text.split("\n")]


def classify_line(line: str, *, thread: bool) -> tuple[str, str] | None:
    """(kind, registry name) that a line of an alert announces, or None. ``kind`` is
    failure, recovery, or other (retry, removal, flapping: none are expected here)."""
    match = _NAME.search(line)
    if match is None:
        return None
    name = match[1]
    if not thread:
        # A new incident's message lists only failures, as bullets under "*Failed*".
        return ("failure", name) if line.startswith("•") else None
    if line.startswith(":x:"):
        return "failure", name
    if line.startswith(":white_check_mark:") and line.endswith("recovered"):
        return "recovery", name
    return "other", name


class Bench:
    def __init__(self, stack: Stack, args: argparse.Namespace, sizes: dict[str, int]) -> None:
        self.stack = stack
        self.args = args
        self.factor = float(args.factor)
        self.sizes = sizes
        self.channels = {task: f"C0FLIP{i:04d}" for i, task in enumerate(sorted(sizes))}
        self.task_of = {c: t for t, c in self.channels.items()}
        self.flips: list[Flip] = []
        self.by_key: dict[tuple[str, str, str], Flip] = {}
        self.posts: list[tuple[float, Call]] = []
        self.updates = 0
        self.unexpected: list[str] = []
        self.hidden_more = 0
        self.log = CallLog(stack.sim)
        self.changed = asyncio.Event()
        record = stack.standin._record

        async def recorded(call: Call) -> None:
            self._on_call(time.perf_counter(), call)
            await record(call)

        stack.standin._record = recorded  # type: ignore[method-assign]
        self.by_change: dict[tuple[str, str, str], Flip] = {}
        store = stack.runtime.lookups._store
        update = store.update

        async def saved(ref: TaskRef, change: Any) -> Any:
            new, changes = await update(ref, change)
            self._on_saved(time.perf_counter(), ref, changes)
            return new, changes

        store.update = saved  # type: ignore[method-assign]

    # --- time ---

    def sim_s(self, real: float) -> float:
        return real * self.factor

    def real_s(self, sim: float) -> float:
        return sim / self.factor

    # --- the Slack side ---

    def _on_call(self, now: float, call: Call) -> None:
        if call.kind != "api" or call.name not in ("chat.postMessage", "chat.update"):
            return
        if call.name == "chat.update":
            self.updates += 1
            return
        self.posts.append((now, call))
        channel = str(call.body.get("channel", ""))
        task = self.task_of.get(channel)
        thread = bool(call.body.get("thread_ts"))
        for line in alert_lines(call.body):
            if line.startswith("_+"):
                self.hidden_more += 1  # "+N more": names not shown; a loss may be false
            found = classify_line(line, thread=thread)
            if found is None:
                continue
            kind, name = found
            flip = self.by_key.get((task or "", name, kind))
            if flip is None or flip.injected > now:
                self.unexpected.append(f"{channel} {kind} {name}")
                continue
            flip.alerts.append(now)
            flip.seen.set()
        self.changed.set()

    def _on_saved(self, now: float, ref: TaskRef, changes: Sequence[Change]) -> None:
        """When the mirror saw each flip: the save that recorded its change."""
        for change in changes:
            flip = self.by_change.get((ref.task_id, change.registry_id, change.new))
            if flip is not None and flip.injected <= now:
                flip.detected = min(flip.detected, now)

    # --- set-up ---

    def ref(self, task: str) -> TaskRef:
        return self.stack.runtime.lookups.ref(LookupRequest(task))

    async def watch_all(self) -> None:
        for task, channel in self.channels.items():
            user = copy.copy(self.stack.user)
            user.channel_id = channel
            reply = await user.command_text(f"watch {task}")
            if "Watching task" not in json.dumps(reply.body):
                raise RuntimeError(f"watch {task} failed: {reply.body}")

    async def fetched_at(self) -> dict[str, float | None]:
        redis = self.stack.runtime.redis
        async with redis.pipeline(transaction=False) as pipe:
            for task in self.sizes:
                pipe.hget(keys.mirror(self.ref(task)), "meta")
            metas = await pipe.execute()
        out: dict[str, float | None] = {}
        for task, meta in zip(self.sizes, metas, strict=True):
            view = decode_meta(meta)["views"].get(_FULL_VIEW)
            out[task] = float(view[0]) if view else None
        return out

    async def warm_up(self, limit: float) -> None:
        deadline = time.perf_counter() + limit
        while any(v is None for v in (await self.fetched_at()).values()):
            if time.perf_counter() > deadline:
                raise RuntimeError("warm-up: not every task was fetched in time")
            await asyncio.sleep(0.1)

    def plan(self, bound: float) -> None:
        """The failures: Poisson times over the flip phase, tasks uniform, victims among the
        finished registries, each registry once; recovery chance and delay per failure."""
        args = self.args
        rng = random.Random(f"flip-plan:{args.seed}")
        phase = args.flip_cycles * bound
        times = sorted(rng.uniform(0.0, phase) for _ in range(args.failures))
        used: set[str] = set()
        tasks = sorted(self.sizes)
        for at in times:
            task = rng.choice(tasks)
            finished = [
                r
                for r in self.stack.sim.registries(task)
                if r.sync_status == "finished" and r.registry_id not in used
            ]
            victim = rng.choice(finished)
            used.add(victim.registry_id)
            delay = rng.uniform(0.0, bound) if rng.random() < args.recover_share else None
            self.add(
                Flip(
                    len(self.flips),
                    task,
                    self.channels[task],
                    victim.registry_id,
                    victim.registry_name,
                    "failure",
                    at,
                    recover_delay=delay,
                )
            )

    def add(self, flip: Flip) -> None:
        self.flips.append(flip)
        self.by_key[(flip.task, flip.name, flip.kind)] = flip
        new = "failed" if flip.kind == "failure" else "finished"
        self.by_change[(flip.task, flip.registry_id, new)] = flip

    # --- flipping ---

    async def inject(self, start: float, phase_end: float, bound: float) -> None:
        sim = self.stack.sim

        async def fail(flip: Flip) -> None:
            await asyncio.sleep(max(0.0, start + self.real_s(flip.at_sim) - time.perf_counter()))
            sim.set_status(flip.task, flip.registry_id, "failed", f"bench flip {flip.index}")
            flip.injected = time.perf_counter()
            if flip.recover_delay is None:
                return
            await flip.seen.wait()
            at = flip.alerts[0] + self.real_s(flip.recover_delay)
            if at > phase_end:
                return
            await asyncio.sleep(max(0.0, at - time.perf_counter()))
            back = Flip(
                len(self.flips),
                flip.task,
                flip.channel,
                flip.registry_id,
                flip.name,
                "recovery",
                self.sim_s(at - start),
            )
            self.add(back)
            sim.set_status(flip.task, flip.registry_id, "finished")
            back.injected = time.perf_counter()

        failures = [f for f in self.flips if f.kind == "failure"]
        await asyncio.gather(*(fail(f) for f in failures))

    async def settle(self, last_injection: float, horizon: float, tail: float) -> float:
        """Wait until every flip is alerted, or ``horizon`` after the last injection; then
        ``tail`` more for late duplicates. Returns when the wait for alerts ended."""
        deadline = last_injection + horizon
        while any(not f.alerts for f in self.flips) and time.perf_counter() < deadline:
            self.changed.clear()
            try:
                await asyncio.wait_for(
                    self.changed.wait(), max(0.01, deadline - time.perf_counter())
                )
            except TimeoutError:
                break
        done = time.perf_counter()
        await asyncio.sleep(tail)
        return done


def refresh_intervals(calls: Sequence[SimCall], since: float) -> list[float]:
    """Seconds between consecutive refresh starts (offset 0, full view) of each task."""
    starts: dict[str, list[float]] = defaultdict(list)
    for call in calls:
        query = dict(p.split("=", 1) for p in call.query.split("&") if "=" in p)
        if query.get("offset", "0") == "0" and "sync_status" not in query and call.status == 200:
            starts[call.task].append(call.at)
    gaps: list[float] = []
    for times in starts.values():
        after = [t for t in times if t >= since]
        gaps += [b - a for a, b in itertools.pairwise(after)]
    return gaps


def report(bench: Bench, *, s_calls: int, start: float, end: float, warm_s: float) -> None:
    window = REAL_WINDOW
    bound = s_calls / (RATE_CALLS - RESERVE) * window
    bound_all = s_calls / RATE_CALLS * window
    flips = bench.flips
    lat = [bench.sim_s(f.latency) for f in flips]
    fails = [bench.sim_s(f.latency) for f in flips if f.kind == "failure"]
    recs = [bench.sim_s(f.latency) for f in flips if f.kind == "recovery"]
    detect = [bench.sim_s(f.detected - f.injected) for f in flips if f.detected < INF]
    deliver = [
        bench.sim_s(f.alerts[0] - f.detected) for f in flips if f.alerts and f.detected < INF
    ]
    calls = [c for c in bench.log.calls if start <= c.at <= end]
    minutes = bench.sim_s(end - start) / 60.0
    gaps = [bench.sim_s(g) for g in refresh_intervals(bench.log.calls, start)]
    sim = bench.stack.sim
    p = "flip"
    emit(f"{p}.tasks", len(bench.sizes))
    emit(f"{p}.registries", sum(bench.sizes.values()))
    emit(f"{p}.calls_per_cycle", s_calls)
    emit(f"{p}.bound_s", bound)
    emit(f"{p}.bound_all_slots_s", bound_all)
    emit(f"{p}.warmup_s", warm_s)
    emit(f"{p}.failures", len(fails))
    emit(f"{p}.recoveries", len(recs))
    emit(f"{p}.latency_p50_s", percentile(lat, 50))
    emit(f"{p}.latency_p99_s", percentile(lat, 99))
    emit(f"{p}.latency_max_s", max(lat, default=math.nan))
    emit(f"{p}.latency_p50_over_bound", percentile(lat, 50) / bound)
    emit(f"{p}.latency_p99_over_bound", percentile(lat, 99) / bound)
    emit(f"{p}.latency_max_over_bound", max(lat, default=math.nan) / bound)
    emit(f"{p}.latency_mean_over_bound", statistics.fmean(lat) / bound if lat else math.nan)
    emit(f"{p}.latency_p50_over_bound_all_slots", percentile(lat, 50) / bound_all)
    emit(f"{p}.latency_p99_over_bound_all_slots", percentile(lat, 99) / bound_all)
    emit(f"{p}.failure_latency_p50_over_bound", percentile(fails, 50) / bound)
    emit(f"{p}.failure_latency_p99_over_bound", percentile(fails, 99) / bound)
    emit(f"{p}.recovery_latency_p50_over_bound", percentile(recs, 50) / bound)
    emit(f"{p}.recovery_latency_p99_over_bound", percentile(recs, 99) / bound)
    emit(f"{p}.detect_p50_s", percentile(detect, 50))
    emit(f"{p}.detect_p99_s", percentile(detect, 99))
    emit(f"{p}.deliver_p50_s", percentile(deliver, 50))
    emit(f"{p}.deliver_p99_s", percentile(deliver, 99))
    emit(f"{p}.refresh_interval_p50_over_bound", percentile(gaps, 50) / bound)
    emit(f"{p}.refresh_interval_max_over_bound", max(gaps, default=math.nan) / bound)
    emit(f"{p}.calls", len(calls))
    emit(f"{p}.calls_per_sim_minute", ratio(len(calls), minutes))
    emit(f"{p}.calls_total", len(bench.log.calls))
    emit(f"{p}.throttled_429", sim.throttled)
    emit(f"{p}.max_calls_in_window", max(sim.stats()["max_in_window"].values(), default=0))
    emit(f"{p}.slack_posts", len(bench.posts))
    emit(f"{p}.slack_updates", bench.updates)
    emit(f"{p}.duplicates", sum(max(0, len(f.alerts) - 1) for f in flips))
    emit(f"{p}.losses", sum(not f.alerts for f in flips))
    emit(f"{p}.unexpected_alert_lines", len(bench.unexpected))
    emit(f"{p}.hidden_more_lines", bench.hidden_more)
    if bench.args.verbose:
        for f in flips:
            print(
                f"# {f.index:3d} {f.kind:8s} {f.task} {f.name:24s}"
                f" injected={bench.sim_s(f.injected - start):8.1f}s"
                f" latency={bench.sim_s(f.latency):8.1f}s"
                f" detect={bench.sim_s(f.detected - f.injected):8.1f}s"
                f" alerts={len(f.alerts)}"
            )
        for line in bench.unexpected:
            print(f"# unexpected {line}")


async def main_async(args: argparse.Namespace) -> None:
    factor = float(args.factor)
    sizes = task_sizes(args.seed)
    s_calls = sum(pages(n) for n in sizes.values())
    bound = s_calls / (RATE_CALLS - RESERVE) * REAL_WINDOW  # simulated seconds
    config = SimConfig(
        seed=args.seed, rate_limit=RATE_CALLS, window=REAL_WINDOW / factor, task_sizes=sizes
    )
    poll = max(1.0, REAL_POLL / factor)
    env = {
        "HSS_RATE_LIMIT": f"{RATE_CALLS}/{REAL_WINDOW / factor:g}s",
        "POLL_INTERVAL_SECONDS": f"{poll:g}",
    }
    print(
        f"# tasks={len(sizes)} registries={sum(sizes.values())} calls_per_cycle={s_calls}"
        f" factor={factor:g} HSS_RATE_LIMIT={env['HSS_RATE_LIMIT']}"
        f" POLL_INTERVAL_SECONDS={poll:g} (= {poll * factor:g} simulated s)"
        f" send_interval={REAL_SEND_INTERVAL / factor:.4f}s"
        f" bound={bound / 60:.1f} simulated min = {bound / factor:.1f} s real",
        flush=True,
    )
    async with local_stack(
        sim_config=config, env=env, watches=True, send_interval=REAL_SEND_INTERVAL / factor
    ) as stack:
        bench = Bench(stack, args, sizes)
        t0 = time.perf_counter()
        await bench.watch_all()
        await bench.warm_up(limit=3 * bound / factor + 30)
        warm_s = bench.sim_s(time.perf_counter() - t0)
        baseline_posts = len(bench.posts)
        bench.plan(bound)
        start = time.perf_counter()
        phase_end = start + args.flip_cycles * bound / factor
        await bench.inject(start, phase_end, bound)
        last = max(f.injected for f in bench.flips)
        await bench.settle(last, args.horizon * bound / factor, args.tail * bound / factor)
        end = time.perf_counter()
        if baseline_posts:
            print(f"# {baseline_posts} posts during the warm-up (baseline must be silent)")
        report(bench, s_calls=s_calls, start=start, end=end, warm_s=warm_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--factor", type=float, default=60.0, help="time compression")
    parser.add_argument("--failures", type=int, default=120, help="finished -> failed flips")
    parser.add_argument("--recover-share", type=float, default=0.6)
    parser.add_argument("--flip-cycles", type=float, default=3.0, help="flip phase, x bound")
    parser.add_argument("--horizon", type=float, default=2.5, help="x bound after the last flip")
    parser.add_argument("--tail", type=float, default=0.25, help="x bound, for late duplicates")
    parser.add_argument("--verbose", action="store_true", help="one line per flip, as #")
    args = parser.parse_args()
    quiet()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
