"""Task ids: one rule (``bot.models.task_id_problem``) wherever a task id comes in (the slash
command, button values, the CLI) and again at the wire, before any call is made: no
characters that do not show (control, format, bidi, spaces, blank-looking) and no dot
segments, which httpx would resolve into another HSS path."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
import redis.asyncio as aioredis

from bot.alerting.message import ACTION_DETAILS, decode_alert_action
from bot.cli import EXIT_USAGE, main
from bot.errors import CommandError
from bot.hss import wire
from bot.hss.client import HssClient
from bot.models import ApiFilter, LookupRequest, TaskRef, task_id_problem
from bot.sandbox.localstack import Stack, local_stack
from bot.sandbox.simulator import SimConfig
from bot.slack.action_value import decode_action_value, encode_action_value
from bot.slack.command import Lookup, parse
from bot.slack.home import decode_home_value
from bot.slack.render import ACTION_REFRESH
from tests.plugins.hss_sim import TEST_AK, TEST_PROJECT_ID, TEST_SK, RunningSim
from tests.support import until

#: (task id, what the refusal names)
REFUSED = [
    (".", '"."'),
    ("..", '".."'),
    ("t\u200b1", "U+200B ZERO WIDTH SPACE, an invisible character"),
    ("\u200b", "U+200B"),
    ("t\u200d1", "U+200D ZERO WIDTH JOINER"),
    ("\ufefft1", "U+FEFF"),
    ("t\u00ad1", "U+00AD SOFT HYPHEN"),
    ("t\u202e1", "U+202E RIGHT-TO-LEFT OVERRIDE, a text-direction mark"),
    ("t\u2066x\u2069", "U+2066 LEFT-TO-RIGHT ISOLATE"),
    ("t\u200f", "U+200F RIGHT-TO-LEFT MARK, a text-direction mark"),
    ("t\u061c", "U+061C ARABIC LETTER MARK"),
    ("t\U000e0041", "U+E0041 TAG LATIN CAPITAL LETTER A"),
    ("t 1", "U+0020 SPACE, a space"),
    ("t\u00a01", "U+00A0 NO-BREAK SPACE"),
    ("t\u30001", "U+3000 IDEOGRAPHIC SPACE"),
    ("t\u2028", "U+2028 LINE SEPARATOR"),
    ("t\x01", "U+0001, a control character"),
    ("t\x85", "U+0085"),
    ("t\u3164", "U+3164 HANGUL FILLER, a blank-looking character"),
    ("t\ufe0f", "U+FE0F VARIATION SELECTOR-16"),
    ("\u2800", "U+2800 BRAILLE PATTERN BLANK"),
    ("t\ue000", "U+E000, a character that cannot be shown"),
    ("\U0001f469\u200d\U0001f4bb", "U+200D"),  # an emoji joined by a zero-width joiner
]
ACCEPTED = ["task-42", "0123456789abcdef", "同步任务", "ümlaut", "a.b", "...", ".x", "x.", "🚀"]


@pytest.mark.parametrize(("task_id", "names"), REFUSED)
def test_the_rule_names_the_character_and_says_what_is_accepted(task_id: str, names: str) -> None:
    problem = task_id_problem(task_id)
    assert problem is not None
    assert names in problem
    assert "visible characters" in problem and "no spaces" in problem
    assert len(problem) < 300


@pytest.mark.parametrize("task_id", ACCEPTED)
def test_visible_ids_pass(task_id: str) -> None:
    assert task_id_problem(task_id) is None
    assert parse(f'"{task_id}"') == Lookup(LookupRequest(task_id))


@pytest.mark.parametrize(("task_id", "names"), REFUSED)
def test_the_slash_command_refuses_them(task_id: str, names: str) -> None:
    for text in (f'"{task_id}" failed', f'watch "{task_id}"', f'mute "{task_id}" 1h'):
        with pytest.raises(CommandError, match="visible characters"):
            parse(text)


@pytest.mark.parametrize(("task_id", "names"), REFUSED)
def test_button_values_refuse_them_both_ways(task_id: str, names: str) -> None:
    with pytest.raises(CommandError):
        encode_action_value(LookupRequest(task_id), 0)
    forged = json.dumps({"v": 1, "t": task_id, "p": 0})
    with pytest.raises(CommandError):
        decode_action_value(forged)
    with pytest.raises(CommandError):
        decode_alert_action(ACTION_DETAILS, forged)
    home = json.dumps({"p": TEST_PROJECT_ID, "e": None, "t": task_id, "c": "C0123ABC"})
    with pytest.raises(CommandError):
        decode_home_value(home)


@pytest.mark.parametrize(("task_id", "names"), REFUSED[:6])
def test_the_cli_refuses_them_before_reading_any_configuration(
    task_id: str, names: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in ("CLOUD_SDK_AK", "CLOUD_SDK_SK", "HSS_PROJECT_ID", "REDIS_URL"):
        monkeypatch.delenv(variable, raising=False)
    assert main(["query", task_id]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("hss-sync-bot query: ") and names in err
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize(("task_id", "names"), REFUSED)
def test_the_wire_refuses_them_as_the_last_guard(task_id: str, names: str) -> None:
    task = TaskRef(TEST_PROJECT_ID, task_id)
    with pytest.raises(CommandError):
        wire.validate(task, ApiFilter(), offset=0, limit=200, project_id=TEST_PROJECT_ID)


@pytest.mark.parametrize("segment", [".", ".."])
def test_no_request_target_has_a_dot_segment(segment: str) -> None:
    for task in (TaskRef(TEST_PROJECT_ID, segment), TaskRef(segment, "t1")):
        with pytest.raises(CommandError):
            wire.request_target(task, ApiFilter(), offset=0, limit=200)


@pytest.mark.parametrize("task_id", [".", "..", "t\u200b1"])
async def test_the_client_makes_no_request_for_them(hss_sim: RunningSim, task_id: str) -> None:
    client = HssClient(
        endpoint=hss_sim.url, project_id=TEST_PROJECT_ID, credentials=hss_sim.credentials
    )
    async with client:
        with pytest.raises(CommandError):
            await client.list_page(TaskRef(TEST_PROJECT_ID, task_id), ApiFilter())
        with pytest.raises(CommandError):
            await client.fetch_all(TaskRef(TEST_PROJECT_ID, task_id), ApiFilter())
    assert sum(hss_sim.sim.by_status.values()) == 0  # not even a 404 for another path


# --- through Slack: signed requests, the simulator counting every request ------------------


@pytest.fixture
async def stack(redis: aioredis.Redis, redis_url: str) -> AsyncIterator[Stack]:
    config = SimConfig(ak=TEST_AK, sk=TEST_SK, project_id=TEST_PROJECT_ID, rate_limit=1000)
    async with local_stack(sim_config=config, redis_url=redis_url) as running:
        yield running


def requests_seen(stack: Stack) -> int:
    """Every request the simulator answered, whatever its path or status."""
    return sum(stack.sim.by_status.values())


@pytest.mark.parametrize(("task_id", "names"), [REFUSED[1], REFUSED[2], REFUSED[7]])
async def test_a_refused_id_gets_a_short_ephemeral_reason_and_no_call(
    stack: Stack, task_id: str, names: str
) -> None:
    reply = await stack.user.command_text(f'"{task_id}" failed')
    assert reply.status == 200
    assert reply.body["response_type"] == "ephemeral"
    said = json.dumps(reply.body, ensure_ascii=False)
    assert names.split(",")[0].replace('"', '\\"') in said
    assert "visible characters" in said
    assert len(reply.body["text"]) < 400
    # A good command afterwards is answered, so nothing was queued for the refused one.
    good = await stack.user.command_text("task-ok failed")
    await stack.standin.wait_for(lambda cs: any(c.name == good.response_id for c in cs))
    assert requests_seen(stack) == 1


async def test_a_forged_button_value_with_a_dot_segment_costs_nothing(stack: Stack) -> None:
    forged = {"action_id": ACTION_REFRESH, "value": json.dumps({"v": 1, "t": "..", "p": 0})}
    click = await stack.user.click(forged)
    assert click.status == 200
    await until(lambda: bool(stack.standin.responses(click.response_id)), what="the refusal")
    [refusal] = stack.standin.responses(click.response_id)
    assert "out of date or damaged" in json.dumps(refusal.body)
    assert requests_seen(stack) == 0


async def test_httpx_would_have_resolved_the_dot_segment(hss_sim: RunningSim) -> None:
    # Why the guard exists: the raw path with ".." is another API once httpx resolves it.
    url = f"{hss_sim.url}/v5/{TEST_PROJECT_ID}/image/image-sync/tasks/../registries"
    assert "/tasks/" not in httpx.URL(url).path
