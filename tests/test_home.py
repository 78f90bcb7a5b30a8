"""The App Home view, pure: limits, escaping and button values."""

from __future__ import annotations

import json

import pytest
from slack_sdk.models.blocks import Block

from bot.errors import CommandError
from bot.models import TaskRef, Totals
from bot.slack.home import HOME_ROWS, HomeRow, decode_home_value, encode_home_value, render_home
from bot.storage.watch_store import Watch

REF = TaskRef("p" * 32, "task-1", "0")


def watch(task_id: str = "task-1", *, paused: str | None = None) -> Watch:
    return Watch(
        task=TaskRef("p" * 32, task_id, "0"),
        channel="C0123ABCD",
        created_by="U0DEMO0001",
        created_at=1_800_000_000.0,
        paused_reason=paused,
        last_alert_at=1_800_000_100.0,
    )


def test_many_watches_stay_within_app_home_limits() -> None:
    rows = [HomeRow(watch(f"task-{i}"), 1_800_000_000.0, Totals(1, 2, 3)) for i in range(250)]
    view = render_home(rows, notice="x" * 5000)
    assert len(view["blocks"]) <= 100
    for block in view["blocks"]:
        Block.parse(block).validate_json()  # type: ignore[union-attr]
        assert len(json.dumps(block)) < 3500
    assert f"and {250 - HOME_ROWS} more" in json.dumps(view)


def test_hostile_text_is_inert() -> None:
    rows = [HomeRow(watch("<!channel>", paused="<https://evil|click>"), None, Totals())]
    view = render_home(rows, notice="<!here>")
    for block in view["blocks"]:  # button values are never shown; only what people read
        block.get("accessory", {}).pop("value", None)
    raw = json.dumps(view)
    assert "<!channel>" not in raw and "<!here>" not in raw and "<https://evil" not in raw
    assert "never" in raw and "? failed" in raw


@pytest.mark.parametrize("channel", ["C0123ABCD", "G0123ABCD", "D0123ABCD"])
def test_button_values_round_trip(channel: str) -> None:
    # A watch made by a command typed in a DM lives in that DM: its button must work too.
    assert decode_home_value(encode_home_value(REF, channel)) == (REF, channel)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "[]",
        "not json",
        '{"p": "p", "e": null, "t": "t", "c": "not-a-channel"}',
        '{"p": "", "e": null, "t": "t", "c": "C0123ABCD"}',
        json.dumps({"p": "p", "e": None, "t": "x" * 65, "c": "C0123ABCD"}),
        '{"p": "p", "e": 5, "t": "t", "c": "C0123ABCD"}',
    ],
)
def test_junk_values_are_refused(value: str) -> None:
    with pytest.raises(CommandError):
        decode_home_value(value)
