"""Requests that are not Slack's: 401 (no valid signature) or 400 (signed, but a body of the
wrong shape), one short log line each, and a log that a flood cannot fill. Over real HTTP
into the app, and into Socket Mode; ``tests/test_run.py`` sends some to ``run`` itself."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import redis.asyncio as aioredis
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from bot.config import Secret
from bot.sandbox.localstack import SIGNING_SECRET, Stack, local_stack
from bot.sandbox.simulator import SimConfig
from bot.sandbox.slack_standin import SlackStandIn
from bot.slack.app import ObservedApp
from bot.slack.refusals import RefusalLog
from bot.slack.request_shape import Refused, parse_body, shape_problem
from bot.slack.socket_mode import socket_mode_handler
from tests.plugins.hss_sim import TEST_AK, TEST_PROJECT_ID, TEST_SK
from tests.support import Clock, until

JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
DEEP = "[" * 100_000 + "]" * 100_000


def form_payload(payload: object) -> str:
    return urlencode({"payload": json.dumps(payload)})


#: Bodies the issue found answered 500 (before the signature was even checked).
JUNK_BODIES = [
    ("[1]", JSON),
    ("null", JSON),
    ('"x"', JSON),
    ("42", JSON),
    ('{"user":5}', JSON),
    (DEEP, JSON),
    ('{"a":' * 50_000 + "1" + "}" * 50_000, JSON),
    ("payload=null", FORM),
    ("payload=%5B%5D", FORM),
    ("{", JSON),
    ("\xff\xfe", FORM),
]
ACTION = {"action_id": "hss_refresh", "block_id": "b", "value": "x", "type": "button"}
#: Signed with our secret, but not the shape Slack sends.
SIGNED_JUNK = [
    form_payload({"type": "block_actions", "user": {"id": "U1"}, "actions": []}),
    form_payload({"type": "block_actions", "user": "U1", "actions": [ACTION]}),
    form_payload({"type": "view_submission", "user": {"id": "U1"}, "view": {"id": "V1"}}),
    form_payload({"type": "block_actions", "user": {"id": 5}, "actions": [ACTION]}),
    form_payload({"type": "block_actions", "user": {"id": "U1"}, "actions": [{"value": "x"}]}),
    form_payload({"type": "block_actions", "user": {"id": "U1"}, "actions": "x"}),
    form_payload({"type": "block_actions", "user": {"id": "U1"}, "actions": [ACTION], "team": 7}),
    form_payload({"type": "event_callback", "event": []}),
    form_payload({"type": "shortcut", "user": {"id": "U1"}}),
    form_payload(["not", "an", "object"]),
    form_payload({"type": "block_actions", "user": None, "actions": [ACTION]}),
    # A null list item: Bolt reads the first action, authorization or response_url as an
    # object (these were a 500 and an ERROR traceback).
    form_payload({"type": "block_actions", "user": {"id": "U1"}, "actions": [None]}),
    form_payload(
        {
            "type": "block_actions",
            "user": {"id": "U1"},
            "actions": [ACTION],
            "authorizations": [None],
        }
    ),
    form_payload(
        {
            "type": "block_actions",
            "user": {"id": "U1"},
            "actions": [ACTION],
            "response_urls": [None],
        }
    ),
    '{"type":"event_callback","event":{"type":"app_home_opened","user":"U1"},"authorizations":[null]}',
    *(body for body, _ in JUNK_BODIES if body != "\xff\xfe"),
]


@pytest.fixture
async def stack(redis: aioredis.Redis, redis_url: str) -> AsyncIterator[Stack]:
    config = SimConfig(ak=TEST_AK, sk=TEST_SK, project_id=TEST_PROJECT_ID, rate_limit=1000)
    async with local_stack(sim_config=config, redis_url=redis_url, watches=True) as running:
        yield running


async def post(
    stack: Stack, body: str, headers: dict[str, str], content_type: str = FORM
) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10.0) as http:
        return await http.post(
            stack.user._events,
            content=b"\xff\xfe" if body == "\xff\xfe" else body.encode(),
            headers={"Content-Type": content_type, **headers},
        )


def signed(body: str, timestamp: str | None = None) -> dict[str, str]:
    ts = timestamp or str(int(time.time()))
    signature = SignatureVerifier(SIGNING_SECRET).generate_signature(timestamp=ts, body=body)
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": signature}


def refusal_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "bot.slack.refusals"]


def assert_quiet(caplog: pytest.LogCaptureFixture) -> None:
    """Nothing above a warning, and no traceback anywhere."""
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not [r for r in caplog.records if r.exc_info]


@pytest.mark.parametrize(("body", "content_type"), JUNK_BODIES)
async def test_unsigned_junk_is_a_401_with_one_short_line(
    stack: Stack, caplog: pytest.LogCaptureFixture, body: str, content_type: str
) -> None:
    caplog.set_level(logging.WARNING)
    response = await post(stack, body, {}, content_type)
    assert response.status_code == 401
    [line] = refusal_lines(caplog)
    assert len(line.getMessage()) < 120
    assert_quiet(caplog)


@pytest.mark.parametrize("timestamp", ["abc", "", "1e3", "-1", "1" * 40, "12 3", "0x10"])
async def test_a_timestamp_that_is_not_whole_seconds_is_a_401(
    stack: Stack, caplog: pytest.LogCaptureFixture, timestamp: str
) -> None:
    caplog.set_level(logging.WARNING)
    body = "command=%2Fhss-sync&text=x"
    headers = {"X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": "v0=bad"}
    response = await post(stack, body, headers)
    assert response.status_code == 401
    assert "X-Slack-Request-Timestamp" in refusal_lines(caplog)[0].getMessage()
    assert_quiet(caplog)


async def test_a_stale_or_wrong_signature_is_a_401(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    body = "command=%2Fhss-sync&text=x"
    old = signed(body, timestamp=str(int(time.time()) - 3600))
    assert (await post(stack, body, old)).status_code == 401
    wrong = {**signed(body), "X-Slack-Signature": "v0=" + "0" * 64}
    assert (await post(stack, body, wrong)).status_code == 401
    assert (await post(stack, body + "&x=1", signed(body))).status_code == 401
    assert len(refusal_lines(caplog)) == 3
    assert_quiet(caplog)


@pytest.mark.parametrize("body", SIGNED_JUNK, ids=range(len(SIGNED_JUNK)))
async def test_signed_bodies_of_the_wrong_shape_are_a_400(
    stack: Stack, caplog: pytest.LogCaptureFixture, body: str
) -> None:
    caplog.set_level(logging.WARNING)
    content_type = FORM if body.startswith("payload=") else JSON
    response = await post(stack, body, signed(body), content_type)
    assert response.status_code == 400
    [line] = refusal_lines(caplog)
    assert len(line.getMessage()) < 120
    assert_quiet(caplog)
    assert sum(stack.sim.by_status.values()) == 0
    assert not [c for c in stack.standin.calls if c.kind == "response"]


async def test_a_flood_of_junk_writes_a_bounded_number_of_lines(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    bodies = [body for body, _ in JUNK_BODIES[:5]] * 40
    async with httpx.AsyncClient(timeout=10.0) as http:
        answers = await asyncio.gather(
            *(
                http.post(stack.user._events, content=b, headers={"Content-Type": JSON})
                for b in bodies
            )
        )
    assert {a.status_code for a in answers} == {401}
    assert stack.slack is not None
    assert len(refusal_lines(caplog)) <= 5  # RefusalLog's default burst per minute
    assert_quiet(caplog)


@pytest.mark.parametrize("text", ["payload-task failed", "t1 name=payload", "payload"])
async def test_a_command_whose_text_says_payload_is_a_command(stack: Stack, text: str) -> None:
    # Bolt alone reads any form containing "payload" as an interaction without one: 404.
    reply = await stack.user.command_text(text)
    assert reply.status == 200
    assert "Fetching fresh data" in json.dumps(reply.body)
    await stack.standin.wait_for(lambda cs: any(c.name == reply.response_id for c in cs))


async def test_real_requests_still_work_after_junk(stack: Stack) -> None:
    await post(stack, "[1]", {}, JSON)
    reply = await stack.user.command_text("help")
    assert reply.status == 200 and "help" in json.dumps(reply.body)


def test_the_refusal_log_sums_up_what_it_did_not_write(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    clock = Clock(0.0)
    log = RefusalLog(burst=3, window=60.0, clock=clock)
    for _ in range(1000):
        log.refused(401, "bad or expired signature")
    assert len(caplog.records) == 3
    clock.now = 61.0
    log.refused(400, "body is not a JSON object")
    messages = [r.getMessage() for r in caplog.records]
    assert messages[3] == "refused 997 more Slack requests in 60 s, not logged one by one"
    assert messages[4] == "refused a Slack request (HTTP 400): body is not a JSON object"
    assert len(messages) == 5


@pytest.mark.parametrize("body", SIGNED_JUNK, ids=range(len(SIGNED_JUNK)))
def test_the_shape_check_names_a_problem_for_each(body: str) -> None:
    content_type = FORM if body.startswith("payload=") else JSON
    try:
        problem = shape_problem(parse_body(body.encode(), content_type))
    except Refused as refused:
        problem = refused.reason
    assert problem is not None and len(problem) < 80


def test_slack_shaped_bodies_pass_the_shape_check() -> None:
    click = {
        "type": "block_actions",
        "team": {"id": "T1", "domain": "x"},
        "enterprise": None,
        "user": {"id": "U1", "team_id": "T1"},
        "channel": {"id": "C1", "name": "ops"},
        "container": {"type": "message", "is_ephemeral": True},
        "actions": [ACTION],
        "response_url": "https://hooks.slack.com/x",
    }
    event = {
        "type": "event_callback",
        "team_id": "T1",
        "authorizations": [{"team_id": "T1", "user_id": "U2", "is_enterprise_install": False}],
        "event": {"type": "app_home_opened", "user": "U1", "tab": "home"},
    }
    command = {"command": "/hss-sync", "text": "t1", "user_id": "U1"}
    for body in (click, event, command):
        assert shape_problem(body) is None, body


# --- Socket Mode: the same check before Bolt builds its request -------------------------------


def command_app(standin: SlackStandIn, heard: list[dict[str, Any]]) -> ObservedApp:
    app = ObservedApp(
        client=AsyncWebClient(token="xoxb-socket-test", base_url=f"{standin.url}/api/"),
        request_verification_enabled=False,
        process_before_response=True,
    )

    @app.action("hss_refresh")
    async def clicked(ack: AsyncAck, body: dict[str, Any]) -> None:
        heard.append(body)
        await ack()

    return app


async def test_socket_mode_acks_a_malformed_envelope_without_dispatching_it(
    standin: SlackStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    heard: list[dict[str, Any]] = []
    handler = socket_mode_handler(command_app(standin, heard), Secret("xapp-1-socket-test"))
    await handler.connect_async()  # type: ignore[no-untyped-call]
    try:
        await until(lambda: standin.socket_clients == 1)
        bad = await standin.send_envelope(
            "interactive", {"type": "block_actions", "user": "U1", "actions": [ACTION]}
        )
        good = await standin.send_envelope(
            "interactive", {"type": "block_actions", "user": {"id": "U1"}, "actions": [ACTION]}
        )
        await standin.wait_for(
            lambda cs: {bad, good} <= {c.name for c in cs if c.kind == "socket_ack"}
        )
    finally:
        await handler.close_async()  # type: ignore[no-untyped-call]
    assert [b["user"] for b in heard] == [{"id": "U1"}]
    [line] = refusal_lines(caplog)
    assert "body.user has the wrong type" in line.getMessage()
    assert_quiet(caplog)
