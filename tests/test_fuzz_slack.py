"""Fuzzing the Slack side through the real signed HTTP path: slash command text, and
interaction payloads (clicks with any action id, value and user; view submissions, the
watch form's among them; odd JSON). For every request: no 5xx, an ack under 3 s, no mention
or link markup from the input in anything Slack is sent (the ack, response_url posts, Web
API calls), and no HSS request at all unless the input is a lookup the bot accepts.

The stack runs with watches on (so alert buttons, App Home and the watch commands are
served), but its workers stopped: only the requests themselves may call HSS. After each
request the bot's work after the ack is waited for, so every HSS request is that request's:
the work in the background, and any question kept by a Retry now click (its try runs in a
task of its own; the plan has no later tries, so each kept question ends after that one).
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.alerting.message import ACTION_ALL, ACTION_DETAILS, decode_alert_action
from bot.alerting.message import ACTION_PATTERN as ALERT_ACTIONS
from bot.errors import CommandError
from bot.kept_questions import RetryPlan
from bot.models import REGISTRY_TYPES, LookupRequest, SyncStatus
from bot.runs_service import is_reference
from bot.sandbox.localstack import Stack, local_stack
from bot.sandbox.simulator import SimConfig
from bot.sandbox.slack_requests import Reply
from bot.slack.action_value import decode_action_value, encode_action_value, encode_tasks_value
from bot.slack.command import AddWatch, ListTasks, Lookup, parse
from bot.slack.home import ACTION_HOME_UNWATCH, ACTION_HOME_UNWATCH_RUNS, decode_home_value
from bot.slack.render import (
    ACTION_PAGE_NEXT,
    ACTION_PAGE_PREV,
    ACTION_REFRESH,
    ACTION_REFRESH_CONFIRM,
    ACTION_RETRY,
    ACTION_SHARE,
)
from bot.slack.render_tasks import ACTION_TASKS_FAILED, ACTION_TASKS_NEXT, ACTION_TASKS_PREV
from bot.slack.text import CONVERSATION_ID, USER_ID, escape
from bot.slack.watch_form import ACTION_HOME_ADD_WATCH, CALLBACK_ADD_WATCH
from tests.plugins.hss_sim import TEST_AK, TEST_PROJECT_ID, TEST_SK
from tests.support import HOSTILE, task_ids, until

TASK = "task-fuzz"
USER = "U0FUZZ0001"
#: Lookup buttons that may fetch (paging and sharing read the mirror only).
FETCHING_BUTTONS = {ACTION_REFRESH, ACTION_REFRESH_CONFIRM, ACTION_RETRY}
LOOKUP_BUTTONS = {ACTION_PAGE_PREV, ACTION_PAGE_NEXT, ACTION_SHARE, *FETCHING_BUTTONS}
#: A run's Show failed is a lookup; the run list's paging reads the snapshot only.
TASKS_BUTTONS = {ACTION_TASKS_FAILED, ACTION_TASKS_PREV, ACTION_TASKS_NEXT}
ACTION_IDS = sorted(
    LOOKUP_BUTTONS
    | TASKS_BUTTONS
    | {ACTION_HOME_UNWATCH, ACTION_HOME_UNWATCH_RUNS, ACTION_HOME_ADD_WATCH}
    | {ACTION_DETAILS, ACTION_ALL}
    | {f"hss_alert_{a}" for a in ("ack", "mute_1h", "mute_24h", "unmute")}
)
#: Markup that would ping people or hide a link; the bot's own tokens are allowed (below).
RAW = re.compile(r"<[!@#]|<http", re.IGNORECASE)
#: The bot's date token, with one placeholder or several (``{date_short_pretty} {time}``).
OWN_DATE = re.compile(r"<!date\^[0-9]+\^\{[a-z_]+\}(?: \{[a-z_]+\})*\|[^<>]*>")
OWN_MENTION = re.compile(r"<([@#])([A-Z0-9]+)>")
#: A kept question tries only when Retry now is pressed, never later in the background.
NO_LATER_TRIES = RetryPlan(delays=())

# --- what to send ---------------------------------------------------------------------------

PIECES = [
    TASK,
    "help",
    "failed",
    "RUNNING",
    "watch",
    "watches",
    "mute",
    "unmute",
    "unwatch",
    "runs",
    "auto",
    "tasks",
    "latest",
    "latest-manual",
    "name=<!here>",
    "1h",
    "type=Harbor,jfrog",
    "type=Quay",
    'name="prod harbor"',
    "ep=0",
    ".",
    "..",
    "t\u200b1",
    "t\u202e1",
    "\u2066x\u2069",
    "<#C0FUZZ0001|ops>",
    "<@U0OTHER01>",
    "<!here>",
    "<!subteam^S1|@ops>",
    "<https://evil.example|click>",
    '"',
    "x" * 70,
    *HOSTILE,
]
#: Commands' first words, so that the rest of a text reaches each grammar.
STARTS = [
    "tasks",
    "latest",
    "latest-auto failed",
    "watch latest",
    "watch runs",
    "unwatch runs",
    "mute runs",
    "unmute runs",
]
command_texts = st.one_of(
    st.text(max_size=80),
    st.lists(st.sampled_from(PIECES) | st.text(max_size=12), max_size=6).map(" ".join),
    st.tuples(
        st.sampled_from(STARTS),
        st.lists(st.sampled_from(PIECES) | st.text(max_size=12), max_size=3),
    ).map(lambda t: " ".join([t[0], *t[1]])),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
requests = st.builds(
    LookupRequest,
    task_id=st.sampled_from([TASK, "other-task"]) | task_ids,
    status=st.none() | st.sampled_from(SyncStatus),
)
values = st.one_of(
    st.builds(encode_action_value, requests, st.integers(0, 5)),
    st.text(max_size=60),
    json_values.map(json.dumps),
    st.sampled_from(['{"v":1,"t":"..","p":0}', '{"v":1,"t":"t\\u200b","p":0}']),
    st.builds(encode_tasks_value, st.builds(ListTasks), st.integers(0, 5)),
    st.sampled_from(['{"v":1,"t":"latest","p":0}', '{"r":1,"p":0,"k":"x"}', '{"r":1,"p":-1}']),
)
users = st.one_of(
    st.just({"id": USER}),
    st.builds(lambda i: {"id": i}, st.text(max_size=12) | st.sampled_from(["W0FUZZ2", "<!here>"])),
    json_values,
)
clicks = st.fixed_dictionaries(
    {
        "type": st.just("block_actions"),
        "user": users,
        "actions": st.lists(
            st.fixed_dictionaries(
                {
                    "action_id": st.sampled_from(ACTION_IDS) | st.text(max_size=20),
                    "value": values,
                    "type": st.just("button"),
                }
            ),
            min_size=1,
            max_size=2,
        ),
        "channel": st.just({"id": "C0FUZZ0001"}) | json_values,
        "team": st.just({"id": "T0STANDIN"}),
    },
    # Lists whose first item Bolt reads as an object.
    optional={
        "authorizations": st.lists(st.none() | json_values, max_size=2),
        "response_urls": st.lists(st.none() | json_values, max_size=2),
    },
)
views = st.fixed_dictionaries(
    {
        "type": st.just("view_submission"),
        "user": users,
        "view": st.dictionaries(st.sampled_from(["type", "callback_id", "id"]), json_values),
    }
)


def _element(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """An input block's state as Slack sends it (``{"value": {...}}``), or junk."""
    return st.fixed_dictionaries({"value": st.fixed_dictionaries(fields) | json_values})


form_texts = st.sampled_from(["t1", "runs", "<!here>", "auto", "", " ", "x" * 70]) | st.text(
    max_size=30
)
form_values = st.fixed_dictionaries(
    {},
    optional={
        "runs": _element(
            selected_option=st.none()
            | st.fixed_dictionaries({"value": st.sampled_from(["all", "auto", "manual", "x"])})
            | json_values
        ),
        "task": _element(value=form_texts | json_values),
        "channel": _element(
            selected_conversation=st.sampled_from(["C0FUZZ0001", "<!here>", "D0FUZZ0001"])
            | json_values
        ),
        "types": _element(
            selected_options=st.lists(
                st.fixed_dictionaries({"value": st.sampled_from(REGISTRY_TYPES) | st.text()}),
                max_size=3,
            )
            | json_values
        ),
        "name": _element(value=form_texts | json_values),
    },
)
#: Submissions of the watch form: well-formed, half-formed and forged.
forms = st.fixed_dictionaries(
    {
        "type": st.just("view_submission"),
        "user": users,
        "view": st.fixed_dictionaries(
            {
                "type": st.just("modal"),
                "callback_id": st.just(CALLBACK_ADD_WATCH),
                "private_metadata": st.sampled_from(['{"home": true}', "junk"]) | st.text(),
                "state": st.fixed_dictionaries({"values": form_values}) | json_values,
            }
        ),
    }
)
payloads = st.one_of(clicks, clicks, views, forms, json_values)
cases = st.one_of(
    st.tuples(st.just("command"), command_texts), st.tuples(st.just("payload"), payloads)
)


# --- what the bot may do for it -------------------------------------------------------------


def may_call_hss(kind: str, case: Any) -> bool:
    """Whether the bot may ask HSS anything for this input: a lookup it accepts, or a click
    on a fetching button whose value it accepts; never for anything it refuses."""
    if kind == "command":
        try:
            parsed = parse(escape(case))
        except CommandError:
            return False
        # A reference in a watch is resolved from the run list, which may take a call.
        named = isinstance(parsed, AddWatch) and is_reference(parsed.task_id)
        return isinstance(parsed, Lookup | ListTasks) or named
    if not (isinstance(case, dict) and case.get("type") == "block_actions"):
        return False
    if not isinstance(case.get("user"), dict) or not isinstance(case["user"].get("id"), str):
        return False
    action = case["actions"][0]
    return _accepted_fetch(str(action["action_id"]), str(action["value"]))


def _accepted_fetch(action_id: str, value: str) -> bool:
    try:
        if action_id in FETCHING_BUTTONS or action_id == ACTION_TASKS_FAILED:
            decode_action_value(value)
            return True
        if action_id in LOOKUP_BUTTONS:  # a reference in the value is resolved first
            return is_reference(decode_action_value(value)[0].task_id)
        if ALERT_ACTIONS.fullmatch(action_id):
            return decode_alert_action(action_id, value).action_id in (ACTION_DETAILS, ACTION_ALL)
        if action_id == ACTION_HOME_UNWATCH:
            decode_home_value(value)
    except CommandError:
        return False
    return False


def read_by_slack(body: dict[str, Any]) -> list[str]:
    """The texts Slack formats in a message, view or post body: its ``text`` (the
    notification fallback) and every mrkdwn text object; plain_text and button values are
    shown as they are."""
    found = [body["text"]] if isinstance(body.get("text"), str) else []

    def walk(node: object) -> None:
        if isinstance(node, str) and node.startswith("{"):
            try:
                node = json.loads(node)  # a view or blocks sent as a form field
            except ValueError:
                return
        if isinstance(node, dict):
            if node.get("type") == "mrkdwn" and isinstance(node.get("text"), str):
                found.append(node["text"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk({k: v for k, v in body.items() if k != "text"})
    return found


def unexpected_markup(text: str, user: object) -> list[str]:
    """``<!``, ``<@``, ``<#``, ``<http`` in ``text`` that are not the bot's own tokens: the
    date token, the clicking user's mention, a conversation id."""
    text = OWN_DATE.sub("", text)

    def own(match: re.Match[str]) -> str:
        kind, ident = match.groups()
        ok = (kind == "@" and ident == user and USER_ID.fullmatch(ident)) or (
            kind == "#" and CONVERSATION_ID.fullmatch(ident)
        )
        return "" if ok else match.group()

    text = OWN_MENTION.sub(own, text)
    return RAW.findall(text)


# --- the test -------------------------------------------------------------------------------


@pytest.fixture
async def stack(redis: aioredis.Redis, redis_url: str) -> AsyncIterator[Stack]:
    config = SimConfig(
        ak=TEST_AK, sk=TEST_SK, project_id=TEST_PROJECT_ID, rate_limit=100_000, hostile=True
    )
    env = {"HSS_RATE_LIMIT": "100000/60s", "HSS_FRESH_SECONDS": "2"}
    async with local_stack(
        sim_config=config, env=env, redis_url=redis_url, watches=True, retry_plan=NO_LATER_TRIES
    ) as running:
        assert running.workers is not None and running.slack is not None
        await running.workers.aclose(timeout=5.0)  # no scheduler: only requests call HSS
        running.user.user_id = USER
        yield running


def hss_requests(stack: Stack) -> int:
    return sum(stack.sim.by_status.values())


async def send(stack: Stack, kind: str, case: Any) -> Reply:
    if kind == "command":
        return await stack.user.command_text(case)
    return await stack.user.interaction(case)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=cases)
async def test_any_request_is_answered_safely(stack: Stack, case: tuple[str, Any]) -> None:
    kind, body = case
    assert stack.slack is not None
    before_requests, before_calls = hss_requests(stack), len(stack.standin.calls)

    reply = await send(stack, kind, body)
    await stack.slack.background.settled()
    await until(lambda: len(stack.slack.followups.kept) == 0, what="no question kept")  # type: ignore[union-attr]

    assert reply.status < 500, reply
    assert reply.elapsed < 3.0, reply
    user: object = USER
    if kind == "payload":
        clicked_by = body.get("user") if isinstance(body, dict) else None
        user = clicked_by.get("id") if isinstance(clicked_by, dict) else None
    sent = [reply.body, *(c.body for c in stack.standin.calls[before_calls:])]
    for text in (t for body in sent for t in read_by_slack(body)):
        assert not unexpected_markup(text, user), text[:2000]
    if not may_call_hss(kind, body):
        assert hss_requests(stack) == before_requests, f"HSS was asked for refused input {case!r}"
