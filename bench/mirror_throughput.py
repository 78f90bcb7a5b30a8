"""Mirror update throughput: registries diffed and stored per second on a real Redis, and
Redis memory per watched registry, ours against a naive one-field-per-registry hash.

    .venv/bin/python bench/mirror_throughput.py [--sizes 1000,10000,100000]
        [--flip-share 0.01] [--rounds N] [--naive-rows 200000] [--profile]

A private embedded Redis (non-persistent, unix socket, temp dir) and the bot's own client
settings (``runtime.redis_client``, 1 s socket timeout) for ours; the peers get a client with
redis-py's defaults (no timeout: their ``HGETALL`` of 100,000 fields takes longer). Rows come
from ``bot.sandbox.simdata.TaskData`` (32-hex ids, names like ``harbor-prod-00042``, six
types, about 80/10/10 % finished/running/failed with reasons). Each round flips
``--flip-share`` of the rows to another status, builds the fetched ``Registry`` list (not
timed: that is the fetch), then every side updates from it in turn:

* ``ours``: ``store.load`` -> ``mirror.merge`` (in a worker thread above ``LARGE_SNAPSHOT``,
  as ``LookupService._merge_save`` does) -> ``store.save`` (zlib-chunked snapshot in one hash,
  one XADD per change, one ``MULTI`` under ``WATCH``). The store is the one that saved last,
  so ``load`` is a cache hit checked with one ``HGET meta``: the replica that refreshes a task
  usually wrote it.
* ``ours_cold``: the same with a new ``RedisMirrorStore`` per round (another replica's save):
  ``HGETALL`` + decode every round.
* ``naive_pipelined``: one HASH field per registry (compact JSON row), ``HGETALL`` + JSON
  decode, diff in Python, every row ``HSET`` again (its ``seen_at`` moved) and one XADD per
  change, in non-transactional pipelines of ``PIPE_BATCH`` commands.
* ``naive``: the same, one command per round trip; it runs only while its rows so far are
  below ``--naive-rows`` (it is slow at 100,000).

Rates count fetched rows (or changes) per second of wall time of the update, Redis round
trips included. Memory is ``MEMORY USAGE key SAMPLES 0`` of the mirror and of the change
stream after the rounds. One line per figure on stdout: ``mirror_throughput.<size>.<name>``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import json
import pstats
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis.asyncio as aioredis  # noqa: E402

from bench.common import emit, ratio  # noqa: E402
from bot.mirror import LARGE_SNAPSHOT, Snapshot, merge  # noqa: E402
from bot.models import ApiFilter, Registry, TaskRef  # noqa: E402
from bot.sandbox.simdata import TaskData  # noqa: E402
from bot.storage import keys  # noqa: E402
from bot.storage.mirror_codec import decode_snapshot, encode_snapshot  # noqa: E402
from bot.storage.mirror_store import CHANGES_MAXLEN, RedisMirrorStore  # noqa: E402

TARGET_PER_S = 100_000
PIPE_BATCH = 5000
NAIVE_PREFIX = "bench:naive"
FULL = ApiFilter()
Command = tuple[str, tuple[Any, ...], dict[str, Any]]


@dataclass
class Tally:
    """What one side did over the rounds: update wall times, rows, changes, phase times."""

    seconds: list[float] = field(default_factory=list)
    rows: int = 0
    changes: int = 0
    phases: dict[str, float] = field(default_factory=dict)

    def add(self, seconds: float, rows: int, changes: int) -> None:
        self.seconds.append(seconds)
        self.rows += rows
        self.changes += changes

    def phase(self, name: str, seconds: float) -> None:
        self.phases[name] = self.phases.get(name, 0.0) + seconds


# --- ours: the bot's store ---------------------------------------------------------------------


class Ours:
    def __init__(self, redis: Any, ref: TaskRef, *, cold: bool) -> None:
        self.redis, self.ref, self.cold = redis, ref, cold
        self.store = RedisMirrorStore(redis)

    async def update(self, fetched: Sequence[Registry], tally: Tally) -> None:
        if self.cold:
            self.store = RedisMirrorStore(self.redis)
        started = time.perf_counter()
        snap = await self.store.load(self.ref)
        loaded = time.perf_counter()
        at = time.time()
        args = (snap, FULL, fetched)
        kw: dict[str, Any] = {"total": len(fetched), "started_at": at, "finished_at": at}
        if len(snap.rows) + len(fetched) > LARGE_SNAPSHOT:
            new, changes = await asyncio.to_thread(merge, *args, **kw)
        else:
            new, changes = merge(*args, **kw)
        merged = time.perf_counter()
        if not await self.store.save(self.ref, new, changes, expected=snap.generation):
            raise SystemExit("ours: save lost a race nobody else runs")
        done = time.perf_counter()
        tally.add(done - started, len(fetched), len(changes))
        tally.phase("load", loaded - started)
        tally.phase("merge", merged - loaded)
        tally.phase("save", done - merged)

    def keys(self) -> tuple[str, str]:
        return keys.mirror(self.ref), keys.mirror_changes(self.ref)


# --- the peer: one hash field per registry -----------------------------------------------------


def naive_diff(
    stored: dict[bytes, bytes], fetched: Sequence[Registry], at: float
) -> tuple[dict[str, str], list[str], list[dict[str, str]]]:
    """(rows to HSET, ids to HDEL, change entries) the obvious way."""
    old = {k.decode(): json.loads(v) for k, v in stored.items()}
    rows: dict[str, str] = {}
    changes: list[dict[str, str]] = []
    for reg in fetched:
        prev = old.pop(reg.registry_id, None)
        if prev is not None and prev[2] != reg.sync_status:
            changes.append(_naive_change(reg.registry_id, prev, reg.sync_status, reg, at))
        row = [reg.registry_name, reg.registry_type, reg.sync_status, reg.failed_reason, at]
        rows[reg.registry_id] = json.dumps(row, separators=(",", ":"))
    changes += [_naive_change(rid, prev, "removed", None, at) for rid, prev in old.items()]
    return rows, list(old), changes


def _naive_change(
    rid: str, prev: list[Any], new: str, reg: Registry | None, at: float
) -> dict[str, str]:
    reason = reg.failed_reason if reg is not None else ""
    return {"id": rid, "name": prev[0], "type": prev[1], "old": prev[2], "new": new,
            "reason": reason, "at": repr(at)}  # fmt: skip


class Naive:
    def __init__(self, redis: Any, task: str, *, pipelined: bool) -> None:
        self.redis, self.pipelined = redis, pipelined
        self.key = f"{NAIVE_PREFIX}:{task}"
        self.stream = f"{self.key}:changes"

    async def update(self, fetched: Sequence[Registry], tally: Tally) -> None:
        started = time.perf_counter()
        stored = await self.redis.hgetall(self.key)
        loaded = time.perf_counter()
        rows, gone, changes = naive_diff(stored, fetched, round(time.time(), 3))
        diffed = time.perf_counter()
        commands: list[Command] = [("hset", (self.key, k, v), {}) for k, v in rows.items()]
        commands += [("hdel", (self.key, rid), {}) for rid in gone]
        xadd = {"maxlen": CHANGES_MAXLEN, "approximate": True}
        commands += [("xadd", (self.stream, c), xadd) for c in changes]
        await (self._pipelined(commands) if self.pipelined else self._one_by_one(commands))
        done = time.perf_counter()
        tally.add(done - started, len(fetched), len(changes))
        tally.phase("load", loaded - started)
        tally.phase("merge", diffed - loaded)
        tally.phase("save", done - diffed)

    async def _one_by_one(self, commands: list[Command]) -> None:
        for name, args, kw in commands:
            await getattr(self.redis, name)(*args, **kw)

    async def _pipelined(self, commands: list[Command]) -> None:
        for i in range(0, len(commands), PIPE_BATCH):
            async with self.redis.pipeline(transaction=False) as pipe:
                for name, args, kw in commands[i : i + PIPE_BATCH]:
                    getattr(pipe, name)(*args, **kw)
                await pipe.execute()

    def keys(self) -> tuple[str, str]:
        return self.key, self.stream


# --- one size ----------------------------------------------------------------------------------


async def memory(redis: Any, key: str) -> int:
    return int(await redis.memory_usage(key, samples=0) or 0)


def default_rounds(size: int) -> int:
    return max(3, min(20, 200_000 // size))


async def run_size(redis: Any, plain: Any, size: int, args: argparse.Namespace) -> dict[str, Any]:
    task = f"throughput-{size}"
    data = TaskData(seed=1, task_id=task, size=size)
    rng = random.Random(size)
    sides: dict[str, Any] = {
        "ours": Ours(redis, TaskRef("bench", f"{task}-warm"), cold=False),
        "ours_cold": Ours(redis, TaskRef("bench", f"{task}-cold"), cold=True),
        "naive_pipelined": Naive(plain, f"{task}-pipe", pipelined=True),
        "naive": Naive(plain, task, pipelined=False),
    }
    baseline = data.registries()
    for side in sides.values():  # the first fetch: every row new, no changes
        await side.update(baseline, Tally())
    tallies = {name: Tally() for name in sides}
    flips = max(1, round(size * args.flip_share))
    for _ in range(args.rounds or default_rounds(size)):
        data.flip_random(flips, rng)
        fetched = data.registries()
        for name, side in sides.items():
            done = tallies[name].rows
            if name == "naive" and done and done + size > args.naive_rows:
                continue
            await side.update(fetched, tallies[name])
    sizes = {}
    for name, side in sides.items():
        mirror_key, stream = side.keys()
        sizes[name] = [await memory(redis, k) for k in (mirror_key, stream)]
        sizes[name].append(int(await redis.xlen(stream)))
    return {"tallies": tallies, "memory": sizes, "flips": flips}


def size_figures(size: int, result: dict[str, Any]) -> list[tuple[str, float | int]]:
    tallies: dict[str, Tally] = result["tallies"]
    out: list[tuple[str, float | int]] = [("flips_per_round", result["flips"])]
    rate = {n: ratio(t.rows, sum(t.seconds)) for n, t in tallies.items()}
    for name, t in tallies.items():
        total = sum(t.seconds)
        mirror_bytes, stream_bytes, stream_len = result["memory"][name]
        out += [
            (f"{name}.rounds", len(t.seconds)),
            (f"{name}.registries_per_s", round(rate[name])),
            (f"{name}.changes_per_s", round(ratio(t.changes, total))),
            (f"{name}.changes", t.changes),
            (f"{name}.round_ms_median", statistics.median(t.seconds) * 1000),
        ]
        per_round = {p: s / len(t.seconds) * 1000 for p, s in t.phases.items()}
        out += [(f"{name}.{p}_ms_per_round", ms) for p, ms in per_round.items()]
        out += [
            (f"{name}.mirror_bytes_per_registry", mirror_bytes / size),
            (f"{name}.changes_bytes_per_entry", ratio(stream_bytes, stream_len)),
            (f"{name}.bytes_per_registry_with_changes", (mirror_bytes + stream_bytes) / size),
            # The stream is capped per task, not per registry: its steady state at the cap.
            (
                f"{name}.bytes_per_registry_changes_at_cap",
                (mirror_bytes + ratio(stream_bytes, stream_len) * CHANGES_MAXLEN) / size,
            ),
        ]
    out += [
        ("ours.target_met", int(rate["ours"] > TARGET_PER_S)),
        ("ours_cold.target_met", int(rate["ours_cold"] > TARGET_PER_S)),
        ("ratio_ours_over_naive", rate["ours"] / rate["naive"]),
        ("ratio_ours_over_naive_pipelined", rate["ours"] / rate["naive_pipelined"]),
        ("ratio_ours_cold_over_naive_pipelined", rate["ours_cold"] / rate["naive_pipelined"]),
        (
            "memory_ratio_naive_over_ours",
            result["memory"]["naive_pipelined"][0] / result["memory"]["ours"][0],
        ),
    ]
    return out


# --- profile of ours' pure work at one size -----------------------------------------------------


def profile_pure(size: int, flip_share: float) -> None:
    """What runs in worker threads (cProfile sees only its own thread): merge, encode, and
    the cold load's decode, each timed with the garbage collector on and off, then profiled."""
    data = TaskData(seed=1, task_id="profile", size=size)
    snap, _ = merge(Snapshot(), FULL, data.registries(), total=size, started_at=1, finished_at=1)
    data.flip_random(max(1, round(size * flip_share)), random.Random(0))
    fetched = data.registries()

    def work() -> dict[str, float]:
        t0 = time.perf_counter()
        new, _ = merge(snap, FULL, fetched, total=size, started_at=2, finished_at=2)
        t1 = time.perf_counter()
        fields = encode_snapshot(new)
        t2 = time.perf_counter()
        decode_snapshot({k.encode(): v for k, v in fields.items()})
        t3 = time.perf_counter()
        return {"merge": t1 - t0, "encode": t2 - t1, "decode": t3 - t2}

    for label in ("gc on", "gc off", "gc on", "gc off"):
        if label == "gc off":
            gc.disable()
        times = work()
        gc.enable()
        text = " ".join(f"{k} {v * 1000:.0f} ms" for k, v in times.items())
        print(f"# {size} rows, {label}: {text}", file=sys.stderr)
    profile = cProfile.Profile()
    profile.runcall(work)
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(15)
    print(out.getvalue(), file=sys.stderr)


# --- main ----------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> None:
    from bot.runtime import redis_client
    from bot.storage.embedded import EmbeddedRedis

    with tempfile.TemporaryDirectory(prefix="mirror-tp-") as tmp:
        server = EmbeddedRedis(data_dir=Path(tmp) / "redis", persistent=False)
        await asyncio.to_thread(server.start)
        redis = redis_client(server.url)
        plain = aioredis.Redis.from_url(server.url)
        try:
            for size in args.sizes:
                result = await run_size(redis, plain, size, args)
                for name, value in size_figures(size, result):
                    emit(f"mirror_throughput.{size}.{name}", value)
                await redis.flushall()
        finally:
            await redis.aclose()
            await plain.aclose()
            await asyncio.to_thread(server.stop)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="1000,10000,100000",
                   type=lambda s: [int(x) for x in s.split(",")])  # fmt: skip
    p.add_argument("--flip-share", type=float, default=0.01, help="rows flipped per round")
    p.add_argument("--rounds", type=int, default=0, help="0: 200,000 rows' worth, 3 to 20")
    p.add_argument("--naive-rows", type=int, default=200_000,
                   help="stop the unpipelined peer once it has done this many rows")  # fmt: skip
    p.add_argument("--profile", action="store_true", help="cProfile the pure work (stderr)")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    print(f"# {' '.join(sys.argv)}", flush=True)
    asyncio.run(run(args))
    if args.profile:
        profile_pure(max(args.sizes), args.flip_share)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
