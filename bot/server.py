"""The bot's HTTP side (aiohttp): ``POST /slack/events`` into Bolt, ``GET /healthz`` (alive),
``GET /readyz`` (ready for traffic, see :mod:`bot.health`), ``GET /metrics`` (Prometheus);
and the Socket Mode connection when ``SLACK_APP_TOKEN`` is set (the same health, readiness
and metrics endpoints are still served on PORT)."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from contextlib import suppress

from aiohttp import web
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot import health, metrics
from bot.config import Settings
from bot.health import Readiness, SlackAuth
from bot.runtime import Runtime, open_runtime
from bot.slack_app import SlackBot, build_app
from bot.socket_mode import socket_mode_handler
from bot.watches import WatchStore
from bot.workers import STOP_GRACE, Workers, build_workers

logger = logging.getLogger(__name__)


def web_client(settings: Settings) -> AsyncWebClient:
    """A Web API client that also waits out HTTP 429s (Slack's default retries only
    connection errors)."""
    assert settings.slack_bot_token is not None
    return AsyncWebClient(
        token=settings.slack_bot_token.reveal(),
        base_url=settings.slack_api_url,
        retry_handlers=[
            metrics.CountSlack429(),  # first: it only counts, and must see every answer
            AsyncConnectionErrorRetryHandler(max_retry_count=2),
            AsyncRateLimitErrorRetryHandler(max_retry_count=3),
        ],
    )


def build_web_app(
    bolt: AsyncApp | None, runtime: Runtime, *, readiness: Readiness | None = None
) -> web.Application:
    """The HTTP endpoints; ``bolt`` None in Socket Mode. Without ``readiness``, Slack's
    ``auth.test`` is checked through ``bolt``'s client (not at all without ``bolt``)."""
    if readiness is None:
        slack = SlackAuth(bolt.client) if bolt is not None else None
        readiness = Readiness(redis=runtime.redis, lookups=runtime.lookups, slack=slack)
    checks = readiness
    watches = WatchStore(runtime.redis)

    async def events(request: web.Request) -> web.Response:
        assert bolt is not None
        return await to_aiohttp_response(await bolt.async_dispatch(await to_bolt_request(request)))

    async def healthz(request: web.Request) -> web.Response:
        # The bot answers even with Redis down (in-process fallback), so Redis is reported,
        # not required.
        try:
            redis_ok = bool(await runtime.redis.ping())
        except Exception:  # any failure means "down" here; the cause is logged elsewhere
            redis_ok = False
        return web.json_response({"ok": True, "redis": "up" if redis_ok else "down"})

    async def readyz(request: web.Request) -> web.Response:
        status, body = health.body(await checks.results())
        return web.json_response(body, status=status)

    async def metrics_text(request: web.Request) -> web.Response:
        live = await metrics.read_live(redis=runtime.redis, budget=runtime.budget, watches=watches)
        response = web.Response(body=metrics.render(live))
        # The classic text format, which every Prometheus reads (generate_latest writes it;
        # aiohttp's content_type= would refuse the version parameter).
        response.headers["Content-Type"] = CONTENT_TYPE_PLAIN_0_0_4
        return response

    app = web.Application()
    if bolt is not None:
        app.router.add_post("/slack/events", events)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_text)
    return app


async def start_http(app: web.Application, *, host: str, port: int) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner, int(runner.addresses[0][1])


async def serve(settings: Settings, *, host: str = "0.0.0.0") -> None:  # noqa: S104
    """Run until SIGTERM/SIGINT."""
    runtime = await open_runtime(settings)
    workers = build_workers(runtime, settings)
    workers.start()
    slack = build_app(
        lookups=runtime.lookups,
        web_client=web_client(settings),
        signing_secret=None if settings.slack_app_token else _reveal(settings),
        command_name=settings.command_name,
        watch_commands=workers.commands,
        alert_buttons=workers.buttons,
    )
    socket_mode = settings.slack_app_token is not None
    slack_auth = SlackAuth(slack.app.client)
    await slack_auth.check()  # a failure is logged, and /readyz reports it until it passes
    readiness = Readiness(
        redis=runtime.redis, lookups=runtime.lookups, slack=slack_auth, settings=settings
    )
    runner, port = await start_http(
        build_web_app(None if socket_mode else slack.app, runtime, readiness=readiness),
        host=host,
        port=settings.port,
    )
    handler: AsyncSocketModeHandler | None = None
    if settings.slack_app_token is not None:
        handler = socket_mode_handler(slack.app, settings.slack_app_token)
        await handler.connect_async()  # type: ignore[no-untyped-call]
        logger.info("connected to Slack in Socket Mode; health on port %d", port)
    else:
        logger.info("serving Slack requests on http://%s:%d/slack/events", host, port)
    try:
        await _until_stopped()
    finally:
        readiness.stopping = True
        await _shut_down(runtime, workers, slack, handler, runner)


async def _shut_down(
    runtime: Runtime,
    workers: Workers,
    slack: SlackBot,
    handler: AsyncSocketModeHandler | None,
    runner: web.AppRunner,
) -> None:
    """Within ``STOP_GRACE``: take no new work (Slack's connection closed first, so it sends
    to another replica), finish the HSS calls already made and the deliveries in hand, and
    release leases, so that nothing is lost and other replicas take over at once."""
    deadline = time.monotonic() + STOP_GRACE
    if handler is not None:
        await handler.close_async()  # type: ignore[no-untyped-call]
    workers.stop()
    # Answers to commands acked before the signal still go out if their fetch finishes.
    await runtime.lookups.drain(timeout=deadline - time.monotonic() - 1.0)
    await workers.aclose(timeout=deadline - time.monotonic())
    await slack.aclose()
    await runner.cleanup()
    await runtime.aclose()
    logger.info("stopped")


def _reveal(settings: Settings) -> str | None:
    return settings.slack_signing_secret.reveal() if settings.slack_signing_secret else None


async def _until_stopped() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    logger.info("stopping")
