"""The bot's HTTP side (aiohttp): ``POST /slack/events`` into Bolt, ``GET /healthz`` (alive),
``GET /readyz`` (ready for traffic, see :mod:`bot.ops.health`), ``GET /metrics`` (Prometheus);
and the Socket Mode connection when ``SLACK_APP_TOKEN`` is set (the same health, readiness
and metrics endpoints are still served on PORT)."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from contextlib import suppress
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot.config import Settings
from bot.errors import ConfigError
from bot.ops import gauges, health, metrics
from bot.ops.health import Readiness, SlackAuth
from bot.ops.workers import STOP_GRACE, Workers, build_workers
from bot.runtime import Runtime, open_runtime
from bot.slack.app import ObservedApp, SlackBot, build_app
from bot.slack.socket_mode import socket_mode_handler
from bot.storage.outage import PING_FAILED
from bot.storage.watch_store import WatchStore

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
    bolt: ObservedApp | None, runtime: Runtime, *, readiness: Readiness | None = None
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
        # Checked (signature, then shape) before Bolt reads it: see ObservedApp.handle_http.
        body = await request.read()
        answer = await bolt.handle_http(body, request.query_string, request.headers)
        return await to_aiohttp_response(answer)

    async def healthz(request: web.Request) -> web.Response:
        # The bot answers even with Redis down (in-process fallback), so Redis is reported,
        # not required.
        try:
            redis_ok = bool(await runtime.redis.ping())
        except PING_FAILED:  # down; the cause is logged elsewhere
            redis_ok = False
        return web.json_response({"ok": True, "redis": "up" if redis_ok else "down"})

    async def readyz(request: web.Request) -> web.Response:
        status, body = health.body(await checks.results())
        return web.json_response(body, status=status)

    async def metrics_text(request: web.Request) -> web.Response:
        live = await gauges.read_live(redis=runtime.redis, budgets=runtime.budgets, watches=watches)
        response = web.Response(body=gauges.render(live))
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


#: Seconds shutdown waits for requests in flight: every listener answers within ACK_WITHIN.
HTTP_SHUTDOWN_TIMEOUT = 1.0


async def start_http(app: web.Application, *, host: str, port: int) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=HTTP_SHUTDOWN_TIMEOUT)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner, int(runner.addresses[0][1])


@dataclass
class _Parts:
    """What start-up got to: shutdown stops exactly these, however far it got."""

    runtime: Runtime | None = None
    workers: Workers | None = None
    slack: SlackBot | None = None
    readiness: Readiness | None = None
    runner: web.AppRunner | None = None
    handler: AsyncSocketModeHandler | None = None


async def serve(settings: Settings, *, host: str = "0.0.0.0") -> None:  # noqa: S104
    """Run until SIGTERM/SIGINT. The signals are heard from the first moment: one during
    start-up (a Socket Mode connection Slack keeps refusing, a slow ``auth.test``) ends it
    and shuts down what had started; so does a start-up failure, which is then raised."""
    stop = _stop_on_signals()
    parts = _Parts()
    try:
        starting = asyncio.create_task(_start(settings, host, parts))
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            logger.info("stopping during start-up")
            starting.cancel()
            await asyncio.wait({starting})
        elif starting.exception() is None:
            await stopping
            logger.info("stopping")
        stopping.cancel()
        if not starting.cancelled() and (error := starting.exception()) is not None:
            raise error
    finally:
        if parts.readiness is not None:
            parts.readiness.stopping = True
        await _shut_down(parts, stop)


async def _start(settings: Settings, host: str, parts: _Parts) -> None:
    opening = asyncio.ensure_future(open_runtime(settings))
    try:
        parts.runtime = runtime = await asyncio.shield(opening)
    except asyncio.CancelledError:
        # Stopped while an embedded Redis starts in a thread: let it finish, so that
        # shutdown stops it rather than leaving it running.
        parts.runtime = await opening
        raise
    parts.workers = workers = build_workers(runtime, settings)
    workers.start()
    parts.slack = slack = build_app(
        lookups=runtime.lookups,
        web_client=web_client(settings),
        signing_secret=None if settings.slack_app_token else _reveal(settings),
        command_name=settings.command_name,
        watch_commands=workers.commands,
        alert_buttons=workers.buttons,
        runs=runtime.runs,
    )
    socket_mode = settings.slack_app_token is not None
    slack_auth = SlackAuth(slack.app.client)
    await slack_auth.check()  # a failure is logged, and /readyz reports it until it passes
    parts.readiness = readiness = Readiness(
        redis=runtime.redis, lookups=runtime.lookups, slack=slack_auth
    )
    app = build_web_app(None if socket_mode else slack.app, runtime, readiness=readiness)
    try:
        parts.runner, port = await start_http(app, host=host, port=settings.port)
    except OSError as exc:
        raise ConfigError(
            "PORT", f"cannot listen on {host}:{settings.port}: {exc.strerror or exc}"
        ) from None
    if settings.slack_app_token is not None:
        parts.handler = socket_mode_handler(slack.app, settings.slack_app_token)
        readiness.socket_connected = parts.handler.client.is_connected
        await parts.handler.connect_async()  # type: ignore[no-untyped-call]
        logger.info("connected to Slack in Socket Mode; health on port %d", port)
    else:
        logger.info("serving Slack requests on http://%s:%d/slack/events", host, port)


#: Of STOP_GRACE: time kept for telling waiting people that the bot restarts, for closing
#: the HTTP server and Redis, and for the interpreter to exit.
NOTICE_RESERVE = 1.5
CLOSE_RESERVE = 1.5
EXIT_RESERVE = 1.0


async def _shut_down(parts: _Parts, stop: asyncio.Event) -> None:
    """Within ``STOP_GRACE``: take no new work (Slack's connection closed first, so it sends
    to another replica), finish the HSS calls already made and the deliveries in hand, tell
    everyone still waiting for fresh data to ask again, and release leases, so that nothing
    is lost and other replicas take over at once. A fetch of many pages waiting for call
    slots is stopped at its share of the grace, not waited out."""
    deadline = time.monotonic() + STOP_GRACE - EXIT_RESERVE
    work_until = deadline - NOTICE_RESERVE - CLOSE_RESERVE
    if parts.handler is not None:
        await parts.handler.close_async()  # type: ignore[no-untyped-call]
    if parts.workers is not None:
        parts.workers.stop()
    draining = []
    if parts.runtime is not None:
        # Answers to commands acked before the signal still go out if their fetch finishes.
        draining.append(parts.runtime.lookups.drain(timeout=work_until - time.monotonic()))
    if parts.workers is not None:
        draining.append(parts.workers.aclose(timeout=work_until - time.monotonic()))
    await asyncio.gather(*draining)
    if parts.slack is not None:
        await parts.slack.tell_restarting(timeout=deadline - CLOSE_RESERVE - time.monotonic())
    if parts.runner is not None:
        await parts.runner.cleanup()
    if parts.runtime is not None:
        await parts.runtime.aclose()
    if stop.is_set():
        logger.info("stopped")


def _reveal(settings: Settings) -> str | None:
    return settings.slack_signing_secret.reveal() if settings.slack_signing_secret else None


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    return stop
