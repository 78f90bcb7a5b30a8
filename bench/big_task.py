"""A 100,000-registry task: the bot's full mirror versus the official SDK paging it.

    .venv/bin/python bench/big_task.py [--registries 100000] [--latency-ms 20] [--runs 1]

The parent serves the HSS simulator over loopback HTTP (``latency_ms`` per call, a rate
limit nobody reaches) and runs each side in its own child process, so each peak RSS
(``ru_maxrss``) belongs to that side alone and the simulator's CPU is not theirs:

* ``ours``: ``Settings.from_env`` -> ``open_runtime`` on a private embedded Redis ->
  ``LookupService.refresh`` of an unfiltered lookup (the whole mirror), then warm and cold
  lookups (``peek``), ``MEMORY USAGE ... SAMPLES 0`` of the task's keys, a second refresh
  after some status flips (fetch + diff + store), and a Refresh-button refresh
  (``max_age=MIN_REFRESH_AGE``, the Slack handler's value).
* ``sdk``: ``huaweicloudsdkhss.v5.HssClient`` paging ``ListAssociateRegistries`` with
  ``limit=200``, ``offset += 200`` while ``offset < total_num``, rows de-duplicated by id.

Calls are the simulator's own count of API requests. One line per figure on stdout.
``ours.peak_rss_mb`` is the peak once the mirror is done (like for like with the SDK's
paging); later phases raise it (``peak_rss_after_*``, ``peak_rss_session_mb``), the cold
lookups most, since each opens a second runtime in this process. ``*_fetch_seconds`` is time
inside ``HssClient``; ``*_local_seconds`` the rest (planning, merge, encode, Redis).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import pstats
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.sandbox.sim_server import start_simulator  # noqa: E402
from bot.sandbox.simulator import (  # noqa: E402
    DEMO_AK,
    DEMO_PROJECT_ID,
    DEMO_SK,
    Faults,
    SimConfig,
    Simulator,
)
from bot.storage import keys  # noqa: E402

TASK_ID = "big-task"
RESULT_PREFIX = "RESULT "
PEEK_REPEATS = 5


# --- helpers shared by both children ---------------------------------------------------------


def sim_calls(url: str) -> int:
    with urllib.request.urlopen(f"{url}/_sim/stats") as resp:
        return sum(json.load(resp)["calls"].values())


def sim_post(url: str, path: str, payload: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{url}{path}",
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request) as resp:
        result: dict[str, Any] = json.load(resp)
        return result


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def emit(result: dict[str, Any]) -> None:
    print(RESULT_PREFIX + json.dumps(result), flush=True)


# --- the official SDK, as a user would script it ---------------------------------------------


def run_sdk(url: str) -> dict[str, Any]:
    from huaweicloudsdkcore.auth.credentials import BasicCredentials
    from huaweicloudsdkhss.v5 import HssClient, ListAssociateRegistriesRequest

    rss_before = peak_rss_mb()
    credentials = BasicCredentials(DEMO_AK, DEMO_SK, DEMO_PROJECT_ID)
    client = HssClient.new_builder().with_credentials(credentials).with_endpoints([url]).build()
    calls_before, cpu_before = sim_calls(url), cpu_seconds()
    started = time.perf_counter()
    rows: dict[str, Any] = {}
    offset, total = 0, 1
    while offset < total:
        request = ListAssociateRegistriesRequest(task_id=TASK_ID, limit=200, offset=offset)
        response = client.list_associate_registries(request)
        total = response.total_num or 0
        for row in response.data_list or []:
            rows[row.registry_id] = row
        offset += 200
    seconds = time.perf_counter() - started
    return {
        "page_seconds": seconds,
        "calls": sim_calls(url) - calls_before,
        "rows": len(rows),
        "cpu_seconds": cpu_seconds() - cpu_before,
        "rss_before_mb": rss_before,
        "peak_rss_mb": peak_rss_mb(),
    }


# --- the bot's own path ----------------------------------------------------------------------


class FetchTimer:
    """Wall time spent inside the HSS client (paging), so the rest of a refresh is local work
    (planning, merge, encode, Redis). Wraps the instance's methods; the bot is unchanged."""

    def __init__(self, client: Any) -> None:
        self.seconds = 0.0
        for name in ("list_page", "fetch_all"):
            setattr(client, name, self._timed(getattr(client, name)))

    def _timed(self, method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await method(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started

        return timed


async def timed_phase(
    url: str, timer: FetchTimer, work: Callable[[], Awaitable[Any]]
) -> tuple[Any, dict[str, float]]:
    calls, fetch = sim_calls(url), timer.seconds
    started = time.perf_counter()
    result = await work()
    seconds = time.perf_counter() - started
    fetch = timer.seconds - fetch
    return result, {
        "seconds": seconds,
        "fetch_seconds": fetch,
        "local_seconds": seconds - fetch,
        "calls": sim_calls(url) - calls,
    }


async def redis_bytes(redis: Any, ref: Any) -> dict[str, int]:
    pattern = f"{keys.PREFIX}:*{keys.task_part(ref)}*"
    sizes = {}
    async for key in redis.scan_iter(match=pattern):
        sizes[key.decode()] = await redis.memory_usage(key, samples=0) or 0
    return sizes


async def used_memory(redis: Any) -> int:
    return int((await redis.info("memory"))["used_memory"])


async def peek_ms(lookups: Any, request: Any, repeats: int) -> tuple[float, int]:
    times, shown = [], 0
    for _ in range(repeats):
        started = time.perf_counter()
        peek = await lookups.peek(request)
        times.append((time.perf_counter() - started) * 1000)
        shown = len(peek.answer.registries)
    return statistics.median(times), shown


def bot_settings(sim_url: str, redis_url: str, data_dir: Path) -> Any:
    from bot.config import Settings

    return Settings.from_env(
        {
            "CLOUD_SDK_AK": DEMO_AK,
            "CLOUD_SDK_SK": DEMO_SK,
            "HSS_PROJECT_ID": DEMO_PROJECT_ID,
            "HSS_ENDPOINT": sim_url,
            "HSS_RATE_LIMIT": "100000/1s",
            "REDIS_URL": redis_url,
            "HSS_DATA_DIR": str(data_dir),
        }
    )


async def run_ours(args: argparse.Namespace) -> dict[str, Any]:
    from bot.storage.embedded import EmbeddedRedis

    with tempfile.TemporaryDirectory(prefix="big-task-") as tmp:
        server = EmbeddedRedis(data_dir=Path(tmp) / "redis", persistent=False)
        await asyncio.to_thread(server.start)
        try:
            return await measure_ours(args, bot_settings(args.url, server.url, Path(tmp)))
        finally:
            await asyncio.to_thread(server.stop)


async def measure_ours(args: argparse.Namespace, settings: Any) -> dict[str, Any]:
    from bot.lookup import MIN_REFRESH_AGE
    from bot.models import LookupRequest, SyncStatus
    from bot.runtime import open_runtime

    out: dict[str, Any] = {"rss_before_mb": peak_rss_mb()}
    rt = await open_runtime(settings)
    used_before = await used_memory(rt.redis)
    try:
        timer = FetchTimer(rt.client)
        request = LookupRequest(task_id=TASK_ID)
        ref = rt.lookups.ref(request)
        cpu = cpu_seconds()
        answer, out["mirror"] = await profiled(
            args.profile, timed_phase(args.url, timer, lambda: rt.lookups.refresh(request))
        )
        out["mirror"]["cpu_seconds"] = cpu_seconds() - cpu
        out["mirror"]["rows"] = len(answer.registries)
        out["peak_rss_after_mirror_mb"] = peak_rss_mb()
        out["redis_keys"] = await redis_bytes(rt.redis, ref)
        out["redis_used_memory_delta"] = await used_memory(rt.redis) - used_before
        out["warm_lookup_ms"], _ = await peek_ms(rt.lookups, request, PEEK_REPEATS)
        failed = LookupRequest(task_id=TASK_ID, status=SyncStatus.FAILED)
        out["warm_failed_lookup_ms"], out["failed_rows"] = await peek_ms(
            rt.lookups, failed, PEEK_REPEATS
        )
        out["cold_lookup_ms"] = statistics.median(
            [await cold_peek_ms(settings, request) for _ in range(3)]
        )
        out["peak_rss_after_lookups_mb"] = peak_rss_mb()

        # A second refresh that fetches exactly once: the mirror must be older than max_age
        # and the fetch shorter than it (see the report: a fetch longer than max_age repeats).
        max_age = 2 * out["mirror"]["seconds"] + 1
        await asyncio.sleep(max(0.0, answer.fetched_at + max_age + 0.5 - time.time()))
        sim_post(args.url, "/_sim/flip", {"task_id": TASK_ID, "count": args.flips})
        rediff_started = time.time()
        _, out["rediff"] = await timed_phase(
            args.url, timer, lambda: rt.lookups.refresh(request, max_age=max_age)
        )
        out["rediff_started"] = rediff_started
        out["peak_rss_after_rediff_mb"] = peak_rss_mb()
        out["changes"] = await rt.redis.xlen(keys.mirror_changes(ref))
        out["redis_keys_after_rediff"] = await redis_bytes(rt.redis, ref)
        if args.button:
            # Clicked a little later: the mirror is older than MIN_REFRESH_AGE, so it fetches.
            await asyncio.sleep(max(0.0, MIN_REFRESH_AGE + 0.5 - rediff_age(out)))
            _, out["button"] = await timed_phase(
                args.url,
                timer,
                lambda: rt.lookups.refresh(request, max_age=MIN_REFRESH_AGE),
            )
        out["in_redis"] = bool(await rt.redis.exists(keys.mirror(ref)))
    finally:
        await rt.aclose()
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def rediff_age(out: dict[str, Any]) -> float:
    return time.time() - float(out["rediff_started"])


async def cold_peek_ms(settings: Any, request: Any) -> float:
    """A lookup from a process that has not decoded the snapshot yet (another replica, or
    this one after a restart): a second runtime on the same Redis."""
    from bot.runtime import open_runtime

    other = await open_runtime(settings)
    try:
        started = time.perf_counter()
        await other.lookups.peek(request)
        return (time.perf_counter() - started) * 1000
    finally:
        await other.aclose()


async def profiled(enabled: bool, work: Awaitable[Any]) -> Any:
    if not enabled:
        return await work
    profile = cProfile.Profile()
    profile.enable()
    try:
        return await work
    finally:
        profile.disable()
        text = io.StringIO()
        pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(25)
        print(text.getvalue(), file=sys.stderr)


# --- the parent: simulator, children, figures ------------------------------------------------


def child_command(side: str, url: str, args: argparse.Namespace) -> list[str]:
    cmd = [sys.executable, __file__, "--child", side, "--url", url, "--flips", str(args.flips)]
    if args.profile:
        cmd.append("--profile")
    if not args.button:
        cmd.append("--no-button")
    return cmd


async def run_child(side: str, url: str, args: argparse.Namespace) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        *child_command(side, url, args), stdout=subprocess.PIPE
    )
    stdout, _ = await proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"the {side} child failed with exit code {proc.returncode}")
    lines = [x for x in stdout.decode().splitlines() if x.startswith(RESULT_PREFIX)]
    result: dict[str, Any] = json.loads(lines[-1][len(RESULT_PREFIX) :])
    return result


async def one_run(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    sim = Simulator(
        SimConfig(
            task_sizes={TASK_ID: args.registries},
            rate_limit=10**9,
            window=1.0,
            faults=Faults(latency_ms=args.latency_ms),
        )
    )
    runner, url = await start_simulator(sim)
    results = {}
    try:
        for side in args.order.split(","):
            sim.reset()
            sim.task(TASK_ID)  # build the data before the clock starts
            results[side] = await run_child(side, url, args)
    finally:
        await runner.cleanup()
    return results


def figures(res: dict[str, dict[str, Any]], registries: int) -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    if "ours" in res:
        out += ours_figures(res["ours"], registries)
    if "sdk" in res:
        sdk = res["sdk"]
        out += [
            ("sdk.page_seconds", round(sdk["page_seconds"], 2)),
            ("sdk.calls", sdk["calls"]),
            ("sdk.rows", sdk["rows"]),
            ("sdk.cpu_seconds", round(sdk["cpu_seconds"], 2)),
            ("sdk.rss_before_mb", round(sdk["rss_before_mb"], 1)),
            ("sdk.peak_rss_mb", round(sdk["peak_rss_mb"], 1)),
        ]
    if "ours" in res and "sdk" in res:
        ours, sdk = res["ours"], res["sdk"]
        out += [
            ("time_ratio_sdk_over_ours", round(sdk["page_seconds"] / ours["mirror"]["seconds"], 2)),
            ("calls_ratio_sdk_over_ours", round(sdk["calls"] / ours["mirror"]["calls"], 3)),
            (
                "cpu_ratio_sdk_over_ours",
                round(sdk["cpu_seconds"] / ours["mirror"]["cpu_seconds"], 2),
            ),
            (
                "rss_ratio_sdk_over_ours",
                round(sdk["peak_rss_mb"] / ours["peak_rss_after_mirror_mb"], 2),
            ),
        ]
    return out


def ours_figures(ours: dict[str, Any], registries: int) -> list[tuple[str, object]]:
    mirror, rediff = ours["mirror"], ours["rediff"]
    redis_total = sum(ours["redis_keys"].values())
    out: list[tuple[str, object]] = [
        ("ours.mirror_seconds", round(mirror["seconds"], 2)),
        ("ours.mirror_fetch_seconds", round(mirror["fetch_seconds"], 2)),
        ("ours.mirror_local_seconds", round(mirror["local_seconds"], 2)),
        ("ours.calls", mirror["calls"]),
        ("ours.rows", mirror["rows"]),
        ("ours.cpu_seconds", round(mirror["cpu_seconds"], 2)),
        ("ours.rss_before_mb", round(ours["rss_before_mb"], 1)),
        ("ours.peak_rss_mb", round(ours["peak_rss_after_mirror_mb"], 1)),
        ("ours.peak_rss_after_lookups_mb", round(ours["peak_rss_after_lookups_mb"], 1)),
        ("ours.peak_rss_after_rediff_mb", round(ours["peak_rss_after_rediff_mb"], 1)),
        ("ours.peak_rss_session_mb", round(ours["peak_rss_mb"], 1)),
        ("ours.redis_bytes", redis_total),
        ("ours.redis_bytes_per_registry", round(redis_total / registries, 1)),
        ("ours.redis_keys", len(ours["redis_keys"])),
        (
            "ours.redis_used_memory_delta_per_registry",
            round(ours["redis_used_memory_delta"] / registries, 1),
        ),
        ("ours.warm_lookup_ms", round(ours["warm_lookup_ms"], 1)),
        ("ours.warm_failed_lookup_ms", round(ours["warm_failed_lookup_ms"], 1)),
        ("ours.failed_rows", ours["failed_rows"]),
        ("ours.cold_lookup_ms", round(ours["cold_lookup_ms"], 1)),
        ("ours.rediff_seconds", round(rediff["seconds"], 2)),
        ("ours.rediff_fetch_seconds", round(rediff["fetch_seconds"], 2)),
        ("ours.rediff_local_seconds", round(rediff["local_seconds"], 2)),
        ("ours.rediff_calls", rediff["calls"]),
        ("ours.rediff_changes", ours["changes"]),
        (
            "ours.redis_bytes_per_registry_after_rediff",
            round(sum(ours["redis_keys_after_rediff"].values()) / registries, 1),
        ),
        ("ours.mirror_in_redis", int(ours["in_redis"])),
    ]
    if "button" in ours:
        out += [
            ("ours.button_refresh_seconds", round(ours["button"]["seconds"], 2)),
            ("ours.button_refresh_calls", ours["button"]["calls"]),
        ]
    return out


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--registries", type=int, default=100_000)
    p.add_argument("--latency-ms", type=float, default=20.0)
    p.add_argument("--runs", type=int, default=1, help="repeat the whole comparison")
    p.add_argument("--order", default="ours,sdk", help="which sides, in order")
    p.add_argument("--flips", type=int, default=100, help="status flips before the rediff")
    p.add_argument("--no-button", dest="button", action="store_false",
                   help="skip the Refresh-button refresh (max_age=5 s)")  # fmt: skip
    p.add_argument("--profile", action="store_true", help="cProfile ours' mirror (stderr)")
    p.add_argument("--child", choices=("ours", "sdk"), help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.child == "sdk":
        emit(run_sdk(args.url))
        return 0
    if args.child == "ours":
        emit(asyncio.run(run_ours(args)))
        return 0
    print(f"# {' '.join(sys.argv)}", flush=True)
    for run in range(1, args.runs + 1):
        results = asyncio.run(one_run(args))
        for name, value in figures(results, args.registries):
            suffix = f" run={run}" if args.runs > 1 else ""
            print(f"big_task.{name} {value}{suffix}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
