"""``/healthz`` and ``/readyz``: readiness as a pure function, then over HTTP on a real Redis
(stopped and started again), the Slack stand-in refusing ``auth.test``, and a real HSS
authentication lock-out; and ``hss-sync-bot run`` in Socket Mode serving them on PORT."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.config import Settings
from bot.errors import HssAuthError
from bot.models import LookupRequest
from bot.ops.health import (
    CheckResults,
    Readiness,
    SlackAuth,
    body,
    degradations,
    readiness,
)
from bot.ops.server import build_web_app, start_http, web_client
from bot.runtime import Runtime, open_runtime
from bot.sandbox.slack_standin import Scripted, SlackStandIn
from bot.storage.embedded import EmbeddedRedis
from tests.plugins.hss_sim import TEST_AK, TEST_PROJECT_ID, TEST_SK, MakeSim, RunningSim
from tests.support import free_port, hss_env, run_bot, wait_healthy

SIGNING = "logs-test-signing-secret"
BOT_TOKEN = "xoxb-logs-test-token"
WRONG_SK = "wrong-secret-key"


# --- pure ------------------------------------------------------------------------------------


def test_ready_when_every_check_passed() -> None:
    assert readiness(CheckResults()) == (True, [])
    status, doc = body(CheckResults())
    assert status == 200
    assert doc == {
        "ready": True,
        "checks": {
            "config": "ok",
            "redis": "ok",
            "slack": "ok",
            "hss_auth": "ok",
            "shutdown": "no",
            "socket_mode": "ok",
        },
    }


@pytest.mark.parametrize(
    ("results", "reason"),
    [
        (CheckResults(slack="invalid_auth"), "slack auth.test failed (invalid_auth)"),
        (CheckResults(stopping=True), "shutting down"),
        (CheckResults(socket_down=True), "slack socket mode not connected"),
    ],
)
def test_each_check_that_stops_service_is_a_reason(results: CheckResults, reason: str) -> None:
    ready, reasons = readiness(results)
    assert not ready
    assert len(reasons) == 1 and reasons[0].startswith(reason)
    assert degradations(results) == []
    status, doc = body(results)
    assert status == 503 and doc["ready"] is False and doc["reasons"] == reasons
    assert "degraded" not in doc


@pytest.mark.parametrize(
    ("results", "check", "reason"),
    [
        (CheckResults(redis="ConnectionError"), "redis", "redis unreachable (ConnectionError)"),
        (
            CheckResults(hss_auth="APIGW.0301"),
            "hss_auth",
            "hss authentication locked out after APIGW.0301",
        ),
    ],
)
def test_a_shared_fault_the_bot_serves_through_is_degraded_not_unready(
    results: CheckResults, check: str, reason: str
) -> None:
    # Every replica sees these at once: 503 would take them all out of the load balancer.
    assert readiness(results) == (True, [])
    [degraded] = degradations(results)
    assert degraded.startswith(reason)
    status, doc = body(results)
    assert status == 200
    assert doc["ready"] is True and doc["degraded"] == [degraded] and "reasons" not in doc
    assert doc["checks"][check] != "ok"


def test_every_failure_is_reported_at_once() -> None:
    results = CheckResults(
        redis="timeout",
        slack="timeout",
        hss_auth="APIGW.0301",
        stopping=True,
        socket_down=True,
    )
    ready, reasons = readiness(results)
    assert not ready and len(reasons) == 3
    status, doc = body(results)
    assert status == 503 and doc["reasons"] == reasons and len(doc["degraded"]) == 2


# --- over HTTP -------------------------------------------------------------------------------


def settings_for(sim: RunningSim, slack: SlackStandIn, redis_url: str, **env: str) -> Settings:
    return Settings.from_env(
        {
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_SIGNING_SECRET": SIGNING,
            "SLACK_API_URL": f"{slack.url}/api/",
            "CLOUD_SDK_AK": TEST_AK,
            "CLOUD_SDK_SK": TEST_SK,
            "HSS_PROJECT_ID": TEST_PROJECT_ID,
            "HSS_ENDPOINT": sim.url,
            "REDIS_URL": redis_url,
            **env,
        }
    )


Serve = Callable[..., Awaitable[tuple[Runtime, str, Readiness]]]


@pytest.fixture
async def serve(standin: SlackStandIn, hss_sim: RunningSim) -> AsyncIterator[Serve]:
    """``await serve(redis_url, **env)``: a runtime and the bot's web app (Socket Mode's,
    without /slack/events) with readiness checking Slack through the stand-in; (runtime,
    base URL, readiness)."""
    async with AsyncExitStack() as exits:

        async def start(redis_url: str, **env: str) -> tuple[Runtime, str, Readiness]:
            settings = settings_for(hss_sim, standin, redis_url, **env)
            runtime = await open_runtime(settings)
            exits.push_async_callback(runtime.aclose)
            client = web_client(settings)
            auth = SlackAuth(client, retry_failed=0.0)
            checks = Readiness(redis=runtime.redis, lookups=runtime.lookups, slack=auth)
            app = build_web_app(None, runtime, readiness=checks)
            runner, port = await start_http(app, host="127.0.0.1", port=0)
            exits.push_async_callback(runner.cleanup)
            return runtime, f"http://127.0.0.1:{port}", checks

        yield start


async def get(url: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10.0) as http:
        return await http.get(url)


def assert_no_secrets(text: str) -> None:
    for secret in (TEST_SK, TEST_AK, BOT_TOKEN, SIGNING, WRONG_SK):
        assert secret not in text


async def test_readyz_is_200_when_everything_is_up(
    serve: Serve, redis_url: str, redis: object
) -> None:
    _, url, _ = await serve(redis_url)
    response = await get(f"{url}/readyz")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "ready": True,
        "checks": {
            "config": "ok",
            "redis": "ok",
            "slack": "ok",
            "hss_auth": "ok",
            "shutdown": "no",
            "socket_mode": "ok",
        },
    }
    alive = await get(f"{url}/healthz")
    assert alive.status_code == 200 and alive.json()["ok"] is True


async def test_readyz_stays_200_and_says_degraded_while_redis_is_down(
    serve: Serve, redis_server: EmbeddedRedis
) -> None:
    runtime, url, _ = await serve(redis_server.url)
    assert (await get(f"{url}/readyz")).status_code == 200

    await asyncio.to_thread(redis_server.stop)
    down = await get(f"{url}/readyz")
    assert down.status_code == 200, down.text
    assert down.json()["ready"] is True
    [reason] = down.json()["degraded"]
    assert reason.startswith("redis unreachable (")
    assert down.json()["checks"]["redis"] != "ok"
    assert_no_secrets(down.text)
    assert redis_server.url not in down.text  # no connection details either
    # Alive, and serving: the bot answers from its in-process fallback.
    assert (await get(f"{url}/healthz")).json() == {"ok": True, "redis": "down"}
    answer = await runtime.lookups.refresh(LookupRequest("task-while-redis-is-down"))
    assert answer.has_data and answer.registries

    await asyncio.to_thread(redis_server.start)
    back = await poll_body(f"{url}/readyz", lambda doc: "degraded" not in doc)
    assert back.status_code == 200 and back.json()["checks"]["redis"] == "ok"


async def poll_body(
    url: str, wanted: Callable[[dict[str, Any]], bool], timeout: float = 10.0
) -> httpx.Response:
    """GET ``url`` until its JSON body is ``wanted`` (a client reconnects on its next
    command), or the time is up."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        response = await get(url)
        if wanted(response.json()) or loop.time() > deadline:
            return response
        await asyncio.sleep(0.1)


async def test_readyz_is_503_while_slack_refuses_auth_test(
    serve: Serve, redis_url: str, redis: object, standin: SlackStandIn
) -> None:
    refused = Scripted(200, {"ok": False, "error": "invalid_auth"})
    standin.fail_next("auth.test", refused)
    _, url, _ = await serve(redis_url)

    response = await get(f"{url}/readyz")

    assert response.status_code == 503
    assert response.json()["reasons"] == ["slack auth.test failed (invalid_auth)"]
    assert response.json()["checks"]["slack"] == "invalid_auth"
    assert_no_secrets(response.text)
    # A failed check is tried again by the next probe (retry_failed=0 here): Slack is back.
    again = await get(f"{url}/readyz")
    assert again.status_code == 200
    assert len(standin.api("auth.test")) == 2


async def test_a_passed_slack_check_is_not_repeated_by_every_probe(
    serve: Serve, redis_url: str, redis: object, standin: SlackStandIn
) -> None:
    _, url, _ = await serve(redis_url)
    for _ in range(3):
        assert (await get(f"{url}/readyz")).status_code == 200
    assert len(standin.api("auth.test")) == 1


async def test_readyz_says_degraded_while_hss_authentication_is_locked_out(
    serve: Serve, redis_url: str, redis: object
) -> None:
    runtime, url, _ = await serve(redis_url, CLOUD_SDK_SK=WRONG_SK)
    with pytest.raises(HssAuthError):
        await runtime.lookups.refresh(LookupRequest("task-locked"))

    locked = await get(f"{url}/readyz")

    # Every replica shares the lock-out and still answers from the mirror: degraded.
    assert locked.status_code == 200, locked.text
    [reason] = locked.json()["degraded"]
    assert reason.startswith("hss authentication locked out after APIGW.0301")
    assert "reset-auth" in reason
    assert locked.json()["checks"]["hss_auth"] == "APIGW.0301"
    assert_no_secrets(locked.text)
    assert await runtime.lookups.reset_auth()
    cleared = await get(f"{url}/readyz")
    assert cleared.status_code == 200 and "degraded" not in cleared.json()


async def test_readyz_is_503_while_shutting_down_and_says_what_is_degraded_too(
    serve: Serve, redis_server: EmbeddedRedis
) -> None:
    _, url, checks = await serve(redis_server.url)
    await asyncio.to_thread(redis_server.stop)
    checks.stopping = True  # as serve() sets it on SIGTERM

    response = await get(f"{url}/readyz")

    assert response.status_code == 503
    assert response.json()["reasons"] == ["shutting down"]
    assert response.json()["degraded"][0].startswith("redis unreachable (")


async def test_slack_auth_reports_an_unreachable_slack_as_a_code(standin: SlackStandIn) -> None:
    url = standin.url
    await standin.stop()
    client = web_client(
        Settings.from_env({"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_API_URL": f"{url}/api/"})
    )
    auth = SlackAuth(client, timeout=5.0)
    error = await auth.check()
    assert error is not None and " " not in error
    assert auth.error == error


# --- the real process ------------------------------------------------------------------------


async def test_run_in_socket_mode_serves_readyz_and_metrics_on_port(
    make_hss_sim: MakeSim, standin: SlackStandIn, redis_url: str, redis: object
) -> None:
    sim = await make_hss_sim(task_sizes={"t": 40})
    port = free_port()
    proc = await run_bot(
        hss_env(
            sim.url,
            SLACK_BOT_TOKEN=BOT_TOKEN,
            SLACK_APP_TOKEN="xapp-1-socket-test",
            SLACK_API_URL=f"{standin.url}/api/",
            REDIS_URL=redis_url,
            PORT=str(port),
        )
    )
    try:
        await wait_healthy(f"http://127.0.0.1:{port}/healthz", proc)
        ready = await get(f"http://127.0.0.1:{port}/readyz")
        scraped = await get(f"http://127.0.0.1:{port}/metrics")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 15)
    assert ready.status_code == 200, ready.text
    assert len(standin.api("auth.test")) >= 1  # checked at start-up
    assert scraped.status_code == 200
    names = {f.name for f in text_string_to_metric_families(scraped.text)}
    assert {"hss_sync_lookups", "hss_sync_redis_up", "hss_sync_budget_calls_left"} <= names
    log = stderr.decode()
    assert_no_secrets(log)
    assert "xapp-1-socket-test" not in log
    lines = log.splitlines()
    assert lines, "the bot logs at INFO by default"
    for line in lines:  # stderr is a pipe, not a terminal: JSON lines
        doc = json.loads(line)
        assert {"ts", "level", "logger", "msg"} <= doc.keys()
