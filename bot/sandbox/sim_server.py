"""Serving the HSS simulator over HTTP (aiohttp), and ``hss-sync-bot simulate``.

The API route and the ``/_sim/`` control endpoints described in ``bot.sandbox.simulator``; all
behaviour lives in ``Simulator``, this module only moves requests and JSON in and out.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from bot.sandbox.simulator import (
    DEMO_AK,
    DEMO_PROJECT_ID,
    DEMO_SK,
    Faults,
    SimConfig,
    SimRequest,
    Simulator,
)

logger = logging.getLogger(__name__)


# -- HTTP -------------------------------------------------------------------------------------


async def _api(request: web.Request) -> web.StreamResponse:
    sim: Simulator = request.app[SIM_KEY]
    raw_path, _, raw_query = request.raw_path.partition("?")
    body = await request.read()
    sim.started()
    try:
        answer = sim.handle(
            SimRequest(request.method, raw_path, raw_query, dict(request.headers), body)
        )
        if answer.delay:
            await asyncio.sleep(answer.delay)
    finally:
        sim.finished()
    return web.Response(status=answer.status, body=answer.body, headers=dict(answer.headers))


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        payload = await request.json() if request.can_read_body else {}
    except json.JSONDecodeError:
        raise web.HTTPBadRequest(text="expected a JSON object") from None
    if not isinstance(payload, dict):
        raise web.HTTPBadRequest(text="expected a JSON object")
    return payload


async def _stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[SIM_KEY].stats())


async def _reset(request: web.Request) -> web.Response:
    request.app[SIM_KEY].reset()
    return web.json_response({"ok": True})


async def _faults(request: web.Request) -> web.Response:
    sim: Simulator = request.app[SIM_KEY]
    payload = await _json_body(request)
    queue = payload.pop("queue", [])
    try:
        faults = sim.set_faults(**{k: float(v) for k, v in payload.items()})
        sim.queue(*queue)
    except (TypeError, ValueError) as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    return web.json_response(dataclasses.asdict(faults))


async def _limit(request: web.Request) -> web.Response:
    sim: Simulator = request.app[SIM_KEY]
    payload = await _json_body(request)
    sim.set_rate_limit(payload.get("rate_limit"), payload.get("window"), payload.get("retry_after"))
    return web.json_response(sim.stats()["rate_limit"])


async def _flip(request: web.Request) -> web.Response:
    sim: Simulator = request.app[SIM_KEY]
    payload = await _json_body(request)
    task_id = str(payload.get("task_id", ""))
    registry = payload.get("registry", payload.get("registry_id"))
    try:
        if registry is not None:
            reason = payload.get("reason")
            changed = [
                sim.set_status(
                    task_id,
                    str(registry),
                    str(payload.get("status", "")),
                    None if reason is None else str(reason),
                )
            ]
        else:
            changed = sim.flip(task_id, int(payload.get("count", 1)))
    except (KeyError, ValueError) as exc:
        raise web.HTTPBadRequest(text=f"cannot flip: {exc}") from None
    return web.json_response({"changed": [r.as_api_dict() for r in changed]})


async def _shift(request: web.Request) -> web.Response:
    sim: Simulator = request.app[SIM_KEY]
    payload = await _json_body(request)
    task_id, at = str(payload.get("task_id", "")), int(payload.get("at", 0))
    removed = sim.remove(task_id, int(payload.get("remove", 0)), at)
    inserted = sim.insert(task_id, int(payload.get("insert", 0)), at)
    return web.json_response(
        {
            "removed": [r.registry_id for r in removed],
            "inserted": [r.registry_id for r in inserted],
            "size": len(sim.task(task_id)),
        }
    )


async def _run(request: web.Request) -> web.Response:
    """Start a run (``{"kind", "duration"}``) or end one early (``{"task_id", "status"}``)."""
    sim: Simulator = request.app[SIM_KEY]
    payload = await _json_body(request)
    try:
        if "task_id" in payload:
            run = sim.end_run(str(payload["task_id"]), int(payload.get("status", 0)))
        else:
            duration = payload.get("duration")
            run = sim.start_run(
                str(payload.get("kind", "")),
                duration=None if duration is None else float(duration),
            )
    except (KeyError, TypeError, ValueError) as exc:
        raise web.HTTPBadRequest(text=f"cannot run: {exc}") from None
    return web.json_response({"run": sim.run_info(run)})


SIM_KEY = web.AppKey("simulator", Simulator)


def make_app(sim: Simulator) -> web.Application:
    app = web.Application()
    app[SIM_KEY] = sim
    app.router.add_get("/_sim/stats", _stats)
    app.router.add_post("/_sim/reset", _reset)
    app.router.add_post("/_sim/faults", _faults)
    app.router.add_post("/_sim/limit", _limit)
    app.router.add_post("/_sim/flip", _flip)
    app.router.add_post("/_sim/shift", _shift)
    app.router.add_post("/_sim/run", _run)
    app.router.add_route("*", "/{tail:.*}", _api)
    return app


async def start_simulator(
    sim: Simulator, host: str = "127.0.0.1", port: int = 0, *, shutdown_timeout: float = 60.0
) -> tuple[web.AppRunner, str]:
    """Serve ``sim``; returns the runner (``await runner.cleanup()`` to stop) and base URL.
    ``cleanup`` lets answers in flight (a latency fault) finish for ``shutdown_timeout`` s."""
    runner = web.AppRunner(make_app(sim), access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound_host, bound_port = runner.addresses[0][:2]
    return runner, f"http://{bound_host}:{bound_port}"


# -- CLI --------------------------------------------------------------------------------------


def _task_size(text: str) -> tuple[str, int]:
    task_id, sep, size = text.rpartition("=")
    if not sep or not task_id or not size.isdigit():
        raise argparse.ArgumentTypeError(f"expected TASK_ID=N, got {text!r}")
    return task_id, int(size)


def _share(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("expected a share from 0 to 1")
    return value


def _positive(kind: Callable[[str], float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError("expected a positive number")
        return value

    return parse


def _non_negative(kind: Callable[[str], float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = kind(text)
        if not 0 <= value < float("inf"):
            raise argparse.ArgumentTypeError("expected a number, 0 or more")
        return value

    return parse


_DESCRIPTION = """\
Serve an HSS stand-in over HTTP: ListAssociateRegistries and ListImageScanTask (the sync
runs) with the API gateway's signature check, its rate limit per API (HTTP 429, APIGW.0308),
paging, made-up but repeatable registries, faults and status flips. A scheduled sync run
starts every --run-every seconds and goes through the project's --run-registries registries
in --run-duration seconds, --run-failure-rate of them failing (half of the previous run's
failures of the same kind carried over, half new); manual runs start by POST /_sim/run.
Each run's task id is a task ListAssociateRegistries answers for.
Point the bot at it with HSS_ENDPOINT=http://HOST:PORT and the --ak, --sk and --project-id
below (CLOUD_SDK_AK, CLOUD_SDK_SK, HSS_PROJECT_ID)."""

_EPILOG = """\
control endpoints (no signature needed):
  GET  /_sim/stats    counters
  POST /_sim/reset    forget data changes, counters, faults and lock-outs
  POST /_sim/faults   {"latency_ms", "error_rate", "throttle_rate", "malformed_rate",
                       "queue": [503, 429, "malformed", "timeout", 200]}
  POST /_sim/limit    {"rate_limit", "window", "retry_after"}
  POST /_sim/flip     {"task_id", "registry", "status", "reason"} or {"task_id", "count"}
  POST /_sim/shift    {"task_id", "insert": N, "remove": N, "at": ROW}
  POST /_sim/run      {"kind": "auto"|"manual", "duration": S} starts a sync run now;
                      {"task_id", "status": -1|-2|-3} ends a running one early (stopped,
                      timed out, error)
A task id starting with "missing-" is unknown to HSS (HSS.0011)."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hss-sync-bot simulate",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    p.add_argument(
        "--port", type=int, default=8931, help="port to listen on, 0 for any (default %(default)s)"
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the made-up registries and flips: the same seed, the same data "
        "(default %(default)s)",
    )
    p.add_argument(
        "--registries",
        type=int,
        default=120,
        help="registries in a task without --task-size (default %(default)s)",
    )
    p.add_argument(
        "--task-size",
        type=_task_size,
        action="append",
        default=[],
        metavar="ID=N",
        help="registries in task ID; repeat for more tasks (default: --registries for all)",
    )
    p.add_argument(
        "--rate-limit",
        type=_positive(int),
        default=5,
        help="calls allowed per window and AK, as HSS allows (default %(default)s)",
    )
    p.add_argument(
        "--window",
        type=_positive(float),
        default=60.0,
        help="the rate limit's window in seconds (default %(default)g)",
    )
    p.add_argument(
        "--retry-after",
        action="store_true",
        help="send a Retry-After header with each 429 (default: none, as HSS)",
    )
    p.add_argument(
        "--latency-ms",
        type=float,
        default=0.0,
        help="wait this many milliseconds before each answer (default %(default)g)",
    )
    p.add_argument(
        "--error-rate",
        type=_share,
        default=0.0,
        help="share of calls, 0 to 1, answered with a random 5xx (default %(default)g)",
    )
    p.add_argument(
        "--throttle-rate",
        type=_share,
        default=0.0,
        help="share of calls, 0 to 1, answered 429 at random, besides the rate limit "
        "(default %(default)g)",
    )
    p.add_argument(
        "--malformed-rate",
        type=_share,
        default=0.0,
        help="share of calls, 0 to 1, answered 200 with broken JSON (default %(default)g)",
    )
    p.add_argument(
        "--flip-every",
        type=_positive(float),
        default=None,
        metavar="S",
        help="every S seconds, give --flip-count random registries of each task another "
        "status (default: never)",
    )
    p.add_argument(
        "--flip-count",
        type=int,
        default=1,
        help="registries per task that --flip-every changes (default %(default)s)",
    )
    p.add_argument(
        "--run-every",
        type=_positive(float),
        default=86400.0,
        metavar="S",
        help="seconds between scheduled sync runs (autoSync), a simulated day; compress it "
        "for tests and demos (default %(default)g)",
    )
    p.add_argument(
        "--run-duration",
        type=_non_negative(float),
        default=1800.0,
        metavar="S",
        help="seconds a sync run takes to go through its registries (default %(default)g)",
    )
    p.add_argument(
        "--run-history",
        type=_non_negative(int),
        default=3,
        metavar="N",
        help="scheduled runs that began before the simulator started; the next one begins "
        "half of --run-every after it (default %(default)s)",
    )
    p.add_argument(
        "--run-registries",
        type=_non_negative(int),
        default=500,
        metavar="N",
        help="registries of the project, which every sync run goes through (default %(default)s)",
    )
    p.add_argument(
        "--run-failure-rate",
        type=_share,
        default=0.02,
        metavar="SHARE",
        help="share of the registries, 0 to 1, that fail in each sync run: half of them failed "
        "in the previous run of the same kind too (default %(default)g)",
    )
    p.add_argument(
        "--lockout",
        action="store_true",
        help="lock an AK for 5 minutes after 5 failed signatures in a row, as HSS does "
        "(default: off)",
    )
    p.add_argument(
        "--hostile",
        action="store_true",
        help="registry names and failure reasons that attack Slack (mentions, links, markup) "
        "(default: off)",
    )
    p.add_argument("--ak", default=DEMO_AK, help="the access key accepted (default %(default)s)")
    p.add_argument("--sk", default=DEMO_SK, help="its secret key (default %(default)s)")
    p.add_argument(
        "--security-token",
        default=None,
        help="require this X-Security-Token, as temporary credentials do (default: none)",
    )
    p.add_argument(
        "--project-id",
        default=DEMO_PROJECT_ID,
        help="the project id in the API path (default %(default)s)",
    )
    return p


def config_from_args(args: argparse.Namespace) -> SimConfig:
    return SimConfig(
        seed=args.seed,
        ak=args.ak,
        sk=args.sk,
        security_token=args.security_token,
        project_id=args.project_id,
        rate_limit=args.rate_limit,
        window=args.window,
        retry_after=args.retry_after,
        lockout_after=5 if args.lockout else None,
        default_size=args.registries,
        task_sizes=dict(args.task_size),
        hostile=args.hostile,
        faults=Faults(
            latency_ms=args.latency_ms,
            error_rate=args.error_rate,
            throttle_rate=args.throttle_rate,
            malformed_rate=args.malformed_rate,
        ),
        flip_every=args.flip_every,
        flip_count=args.flip_count,
        run_every=args.run_every,
        run_duration=args.run_duration,
        run_history=args.run_history,
        run_registries=args.run_registries,
        run_failure_rate=args.run_failure_rate,
    )


async def _serve(sim: Simulator, host: str, port: int) -> None:
    runner, url = await start_simulator(sim, host, port)
    print(
        f"HSS simulator on {url} (project {sim.config.project_id}, AK {sim.config.ak})", flush=True
    )
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def cli_main(argv: list[str]) -> int:
    """``hss-sync-bot simulate [flags]``: serve until interrupted; bad flags exit 2."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse has printed the message
        return int(exc.code or 0)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        asyncio.run(_serve(Simulator(config_from_args(args)), args.host, args.port))
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        logger.error("cannot serve on %s:%s: %s", args.host, args.port, exc)
        return 1
    return 0
