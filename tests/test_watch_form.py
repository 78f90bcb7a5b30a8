"""The "Add a watch" form: opened by ``/hss-sync watch`` and the Home tab's button, submitted
as signed ``view_submission`` requests into the bot over HTTP (real Redis, the Slack
stand-in, the simulator counting calls). A submission goes the slash command's way: the same
permission and channel checks, the same store, the same confirmation; what is wrong comes
back on its field within Slack's 3 s, and nothing refused is stored or asks HSS."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import pytest
import redis.asyncio as aioredis
from slack_sdk.models.views import View

from bot.hss.budget import Priority
from bot.models import REGISTRY_TYPES
from bot.runs import RunKind
from bot.sandbox.localstack import Stack
from bot.sandbox.slack_requests import Reply
from bot.sandbox.slack_standin import Call, Channel, Scripted
from bot.slack.run_watch_command import AddRunWatch
from bot.slack.watch_command import AddWatch
from bot.slack.watch_form import (
    ACTION_HOME_ADD_WATCH,
    CALLBACK_ADD_WATCH,
    FormErrors,
    Submitted,
    form_view,
    read_submission,
)
from bot.storage import keys
from bot.storage.run_watch_store import RunWatchStore
from bot.storage.watch_store import WatchStore
from tests.plugins.hss_sim import TEST_PROJECT_ID
from tests.support import HOSTILE_RAW, home_views, said, until, watching_stack

MakeStack = Callable[..., Awaitable[Stack]]
OPS = "C0OPS00001"


def values(
    *,
    runs: str | None = None,
    task: str | None = None,
    channel: object = OPS,
    types: list[str] | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """``state.values`` as Slack sends them for the form's fields."""
    out: dict[str, Any] = {
        "runs": {"value": {"type": "static_select", "selected_option": None}},
        "task": {"value": {"type": "plain_text_input", "value": task}},
        "channel": {"value": {"type": "conversations_select", "selected_conversation": channel}},
        "types": {"value": {"type": "multi_static_select", "selected_options": []}},
        "name": {"value": {"type": "plain_text_input", "value": name}},
    }
    if runs is not None:
        out["runs"]["value"]["selected_option"] = {"value": runs, "text": {"text": runs}}
    if types is not None:
        out["types"]["value"]["selected_options"] = [{"value": t} for t in types]
    return out


# --- pure: the view and reading a submission --------------------------------------------------


def test_the_view_is_valid_block_kit_with_every_field() -> None:
    view = form_view(channel="C0DEMO0001", from_home=False)
    View(**view).validate_json()
    blocks = {b["block_id"]: b for b in view["blocks"]}
    assert list(blocks) == ["runs", "task", "channel", "types", "name"]
    assert blocks["channel"]["element"]["initial_conversation"] == "C0DEMO0001"
    assert not blocks["channel"]["optional"] and blocks["task"]["optional"]
    options = [o["value"] for o in blocks["types"]["element"]["options"]]
    assert options == list(REGISTRY_TYPES)
    # Typed in a DM (or from the Home tab) there is no channel to start from.
    for channel in ("D0DM000001", None):
        home = form_view(channel=channel, from_home=True)
        assert "initial_conversation" not in home["blocks"][2]["element"]


@pytest.mark.parametrize(
    ("given", "command"),
    [
        (values(runs="all"), AddRunWatch(None, OPS)),
        (
            values(runs="auto", types=["Harbor", "Jfrog"]),
            AddRunWatch(RunKind.AUTO, OPS, frozenset({"Harbor", "Jfrog"})),
        ),
        (
            values(runs="manual", name=" prod reg "),
            AddRunWatch(RunKind.MANUAL, OPS, name="prod reg"),
        ),
        (values(task=" task-42 ", name="a=b"), AddWatch("task-42", OPS, name="a=b")),
        (values(task="t1", types=["Other"]), AddWatch("t1", OPS, frozenset({"Other"}))),
    ],
)
def test_a_submission_reads_as_the_command_would_parse(
    given: dict[str, Any], command: AddWatch | AddRunWatch
) -> None:
    view = {"state": {"values": given}, "private_metadata": '{"home": true}'}
    assert read_submission(view) == Submitted(command=command, from_home=True)


@pytest.mark.parametrize(
    ("given", "errors"),
    [
        (values(), {"runs": "Choose which runs to follow, or give a task below."}),
        (values(runs="auto", task="t1"), {"task": "Give a task or choose runs above, not both."}),
        (values(runs="weekly"), {"runs": "Choose all, scheduled (auto) or manual runs."}),
        (values(task="runs"), {"task": "To follow runs, choose them above instead."}),
        (values(task="t 1"), {"task": "contains U+0020 SPACE"}),
        (values(task="x" * 65), {"task": "at most 64 characters"}),
        (values(task="type=Harbor"), {"task": "Start with the task id"}),
        (values(runs="all", channel=None), {"channel": "Pick the channel"}),
        (values(runs="all", channel="<!here>"), {"channel": "Pick the channel"}),
        (values(runs="all", channel="D0DM000001"), {"channel": "Pick the channel"}),
        (values(runs="all", channel=["C0OPS00001"]), {"channel": "Pick the channel"}),
        (values(runs="all", types=["Docker"]), {"types": 'Unknown registry type "Docker"'}),
        (values(runs="all", types=["Harbor"] * 7), {"types": "Choose registry types"}),
        (values(runs="all", name="n" * 129), {"name": "at most 128 characters"}),
        (values(runs="all", name="a\x00b"), {"name": "control characters"}),
        ({}, {"runs": "Choose which runs", "channel": "Pick the channel"}),
        (
            values(runs="x", task="t 1", channel=5, types=["?"], name="\x07"),
            {"runs": "Choose all", "channel": "Pick", "types": "Unknown", "name": "control"},
        ),
    ],
)
def test_what_is_wrong_is_said_on_its_field(given: dict[str, Any], errors: dict[str, str]) -> None:
    with pytest.raises(FormErrors) as info:
        read_submission({"state": {"values": given}})
    assert set(info.value.errors) == set(errors)
    for block, text in errors.items():
        assert text in info.value.errors[block]
        assert len(info.value.errors[block]) <= 150 and "Usage:" not in info.value.errors[block]


@pytest.mark.parametrize(
    "view",
    [
        {"state": "nope"},
        {"state": {"values": []}},
        {"state": {"values": {"runs": "all", "channel": {"value": "C0OPS00001"}}}},
        {"state": {"values": {"runs": {"value": {"selected_option": "all"}}}}},
        {"state": {"values": values(runs="all", types="Harbor")}},  # type: ignore[arg-type]
    ],
)
def test_forged_shapes_are_field_errors_not_crashes(view: dict[str, Any]) -> None:
    with pytest.raises(FormErrors):
        read_submission(view)


@pytest.mark.parametrize(
    "metadata", [None, "", "not json", '{"home": "yes"}', '["home"]', '{"home": true}' + " " * 200]
)
def test_forged_metadata_counts_as_a_command(metadata: object) -> None:
    view = {"state": {"values": values(runs="all")}, "private_metadata": metadata}
    assert read_submission(view).from_home is False


# --- through Slack -----------------------------------------------------------------------------


@pytest.fixture
async def make_stack(redis_url: str, redis: aioredis.Redis) -> AsyncIterator[MakeStack]:
    async with AsyncExitStack() as exits:

        async def make(*, env: dict[str, str] | None = None) -> Stack:
            channels = [Channel(OPS, "ops")]
            return await exits.enter_async_context(
                watching_stack(redis_url, env=env, channels=channels)
            )

        yield make


def hss_calls(stack: Stack) -> int:
    return sum(stack.sim.calls.values())


def view_of(call: Call) -> dict[str, Any]:
    view = call.body["view"]
    return json.loads(view) if isinstance(view, str) else view  # type: ignore[no-any-return]


async def submit(stack: Stack, given: dict[str, Any], **kw: Any) -> Reply:
    reply = await stack.user.submit_view(CALLBACK_ADD_WATCH, given, **kw)
    assert reply.status == 200 and reply.elapsed < 3.0
    return reply


async def test_the_command_without_arguments_opens_the_form(make_stack: MakeStack) -> None:
    stack = await make_stack()
    before = hss_calls(stack)
    assert "The form to add a watch is open" in await said(stack, "watch")
    [opened] = stack.standin.api("views.open")
    assert opened.body["trigger_id"].startswith("trigger.cmd")
    view = view_of(opened)
    assert view["callback_id"] == CALLBACK_ADD_WATCH
    assert view["blocks"][2]["element"]["initial_conversation"] == stack.user.channel_id
    assert hss_calls(stack) == before


async def test_the_form_opens_only_for_admins(make_stack: MakeStack) -> None:
    stack = await make_stack(env={"HSS_WATCH_ADMINS": "U0ADMIN001"})
    assert "Only the watch admins" in await said(stack, "watch", user="U0SOMEONE1")
    assert stack.standin.api("views.open") == []


async def test_slack_refusing_to_open_the_form_is_said(make_stack: MakeStack) -> None:
    stack = await make_stack()
    stack.standin.fail_next(
        "views.open", Scripted(body={"ok": False, "error": "expired_trigger_id"})
    )
    reply = await said(stack, "watch")
    assert "Slack did not open the form (expired_trigger_id)" in reply
    assert "/hss-sync watch runs" in reply


async def test_submitting_runs_watches_them_and_confirms_like_the_command(
    make_stack: MakeStack,
) -> None:
    stack = await make_stack()
    before = hss_calls(stack)
    reply = await submit(stack, values(runs="auto", types=["Harbor"]))
    assert reply.body == {}  # the form closes
    [watch] = await RunWatchStore(stack.runtime.redis).all()
    assert (watch.channel, watch.kind, watch.types) == (OPS, RunKind.AUTO, frozenset({"Harbor"}))
    assert watch.created_by == stack.user.user_id
    await stack.standin.wait_for(lambda cs: any(c.name == "chat.postEphemeral" for c in cs))
    [confirmation] = stack.standin.api("chat.postEphemeral")
    assert (confirmation.body["channel"], confirmation.body["user"]) == (OPS, stack.user.user_id)
    assert "Following every scheduled (auto) run in <#C0OPS00001>" in confirmation.body["text"]
    # The very words the slash command answers with.
    await said(stack, "unwatch runs auto #ops")
    typed = await said(stack, "watch runs auto #ops type=Harbor")
    assert confirmation.body["text"] == typed.splitlines()[0]
    assert hss_calls(stack) == before


async def test_submitting_a_task_watches_it(make_stack: MakeStack) -> None:
    stack = await make_stack()
    reply = await submit(stack, values(task="task-form", name="prod"))
    assert reply.body == {}
    [watch] = await WatchStore(stack.runtime.redis).all()
    assert (watch.task.task_id, watch.channel, watch.name) == ("task-form", OPS, "prod")
    await stack.standin.wait_for(lambda cs: any(c.name == "chat.postEphemeral" for c in cs))
    assert "Watching task `task-form`" in stack.standin.api("chat.postEphemeral")[0].body["text"]


async def test_the_home_button_opens_the_form_and_a_submission_shows_home_again(
    make_stack: MakeStack,
) -> None:
    stack = await make_stack()
    await stack.user.event({"type": "app_home_opened", "tab": "home"})
    [home] = await home_views(stack, 1)
    add = next(e for b in home["blocks"] if b["type"] == "actions" for e in b["elements"])
    assert add["action_id"] == ACTION_HOME_ADD_WATCH
    await stack.user.click(add)
    await stack.standin.wait_for(lambda cs: any(c.name == "views.open" for c in cs))
    opened = view_of(stack.standin.api("views.open")[0])
    await submit(stack, values(runs="manual"), private_metadata=opened["private_metadata"])
    again = (await home_views(stack, 2))[-1]
    assert "*manual runs* in <#C0OPS00001>" in json.dumps(again)


@pytest.mark.parametrize(
    ("given", "block", "says"),
    [
        (values(), "runs", "Choose which runs"),
        (values(runs="all", task="t1"), "task", "not both"),
        (values(task="x" * 5000), "task", "too long"),
        (values(runs="all", channel="<!channel>"), "channel", "Pick the channel"),
        (values(runs="<!here>"), "runs", "Choose all"),
        (values(runs="all", types=["<!here>"]), "types", "Unknown registry type"),
        (values(runs="all", name="<@U123> " + "n" * 200), "name", "too long"),
        (values(task="<!here> x"), "task", "contains U+0020 SPACE"),
    ],
)
async def test_refused_submissions_answer_on_the_field_and_change_nothing(
    make_stack: MakeStack, given: dict[str, Any], block: str, says: str
) -> None:
    stack = await make_stack()
    before = hss_calls(stack)
    reply = await submit(stack, given)
    assert reply.body["response_action"] == "errors"
    assert says in reply.body["errors"][block]
    raw = json.dumps(reply.body)
    for markup in ("<!channel>", "<!here>", "<@U", "<https://"):
        assert markup not in raw or markup in json.dumps(given)  # echoed only as plain text
    assert await RunWatchStore(stack.runtime.redis).all() == []
    assert await WatchStore(stack.runtime.redis).all() == []
    assert hss_calls(stack) == before
    assert stack.standin.api("chat.postEphemeral") == []


@pytest.mark.parametrize("hostile", HOSTILE_RAW)
async def test_hostile_values_that_are_valid_stay_inert(
    make_stack: MakeStack, hostile: str
) -> None:
    stack = await make_stack()
    reply = await submit(stack, values(task=hostile, name=hostile))
    assert reply.body == {}
    [watch] = await WatchStore(stack.runtime.redis).all()
    assert (watch.task.task_id, watch.name) == (hostile, hostile)
    await stack.standin.wait_for(lambda cs: any(c.name == "chat.postEphemeral" for c in cs))
    posted = json.dumps(stack.standin.api("chat.postEphemeral")[0].body)
    assert hostile not in posted


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        (Scripted(body={"ok": False, "error": "channel_not_found"}), "/invite @hss-sync"),
        (Scripted(body={"ok": True, "channel": {"is_archived": True}}), "that channel is archived"),
        (Scripted(body={"ok": True, "channel": {"is_member": False}}), "not a member"),
    ],
)
async def test_a_channel_the_bot_cannot_post_in_is_an_error_on_the_channel(
    make_stack: MakeStack, answer: Scripted, says: str
) -> None:
    stack = await make_stack()
    stack.standin.fail_next("conversations.info", answer)
    reply = await submit(stack, values(runs="all"))
    assert reply.body["response_action"] == "errors"
    assert says in reply.body["errors"]["channel"]
    assert "<#" not in reply.body["errors"]["channel"]  # plain text shows no mention markup
    assert await RunWatchStore(stack.runtime.redis).all() == []


async def test_only_admins_may_submit(make_stack: MakeStack) -> None:
    stack = await make_stack(env={"HSS_WATCH_ADMINS": "U0ADMIN001"})
    stack.user.user_id = "U0SOMEONE1"
    reply = await submit(stack, values(task="t1"))
    assert reply.body == {
        "response_action": "errors",
        "errors": {"task": "Only the watch admins may change watches; ask one."},
    }
    assert await WatchStore(stack.runtime.redis).all() == []
    assert stack.standin.api("conversations.info") == []  # refused before anything else


async def test_slow_slack_is_an_error_within_the_ack(make_stack: MakeStack) -> None:
    stack = await make_stack()
    stack.standin.fail_next(
        "conversations.info", Scripted(body={"ok": True, "channel": {}}, delay=2.8)
    )
    reply = await submit(stack, values(runs="auto"))
    assert reply.body["response_action"] == "errors"
    assert "too slowly" in reply.body["errors"]["runs"]
    assert await RunWatchStore(stack.runtime.redis).all() == []


@pytest.mark.parametrize("metadata", ['{"home": "yes"}', "<!here>", "x" * 3000])
async def test_forged_metadata_changes_nothing_but_where_home_is(
    make_stack: MakeStack, metadata: str
) -> None:
    stack = await make_stack()
    reply = await submit(stack, values(runs="all"), private_metadata=metadata)
    assert reply.body == {}
    [watch] = await RunWatchStore(stack.runtime.redis).all()
    assert watch.channel == OPS
    await stack.standin.wait_for(lambda cs: any(c.name == "chat.postEphemeral" for c in cs))
    assert stack.standin.api("views.publish") == []


@pytest.mark.parametrize("user", ["U0DEMO0001", {"id": 5}, {"name": "x"}, ["U1"]])
async def test_a_forged_submitter_is_refused_before_bolt(
    make_stack: MakeStack, user: object
) -> None:
    stack = await make_stack()
    reply = await stack.user.submit_view(CALLBACK_ADD_WATCH, values(runs="all"), user=user)
    assert reply.status == 400
    assert await RunWatchStore(stack.runtime.redis).all() == []


async def test_a_confirmation_slack_refuses_leaves_the_watch(make_stack: MakeStack) -> None:
    stack = await make_stack()
    stack.standin.fail_next(
        "chat.postEphemeral", Scripted(body={"ok": False, "error": "user_not_in_channel"})
    )
    assert (await submit(stack, values(runs="manual"))).body == {}
    await stack.standin.wait_for(lambda cs: any(c.name == "chat.postEphemeral" for c in cs))
    assert stack.slack is not None
    await until(lambda: _settled(stack), what="the work after the ack")
    assert len(await RunWatchStore(stack.runtime.redis).all()) == 1


async def _settled(stack: Stack) -> bool:
    assert stack.slack is not None
    return stack.slack.background.running() == 0


async def test_a_reference_waiting_for_the_run_list_s_budget_says_so_on_the_task_field(
    make_stack: MakeStack,
) -> None:
    # The form has 2 s. `latest-manual` names no run in the old list (the simulator's runs
    # are scheduled), so it waits for a fresh one, behind the run list's spent budget: the
    # field says so and offers the way round (a task id), not "Slack or Redis".
    stack = await make_stack(env={"HSS_TASKS_RATE_LIMIT": "1/60s"})
    await stack.runtime.runs.refresh(priority=Priority.INTERACTIVE)  # the minute's one call
    key = keys.runs(TEST_PROJECT_ID, None)
    at = float(await stack.runtime.redis.hget(key, "at") or 0)
    await stack.runtime.redis.hset(key, "at", repr(at - 600))
    reply = await submit(stack, values(task="latest-manual"))
    assert reply.body["response_action"] == "errors"
    error = reply.body["errors"]["task"]
    assert "budget" in error and "task id" in error and "Slack or Redis" not in error
    assert await WatchStore(stack.runtime.redis).all() == []
    # `latest` the old list names: watched at once, as the command would.
    reply = await submit(stack, values(task="latest"))
    assert reply.body == {}
    [watch] = await WatchStore(stack.runtime.redis).all()
    assert watch.task.task_id == stack.sim.listed_runs()[0]["task_id"]
