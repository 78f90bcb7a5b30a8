"""The App Home view, pure: limits, escaping and button values."""

from __future__ import annotations

import json
from typing import Any

import pytest
from slack_sdk.models.blocks import Block

from bot.errors import CommandError
from bot.models import TaskRef, Totals
from bot.runs import RunKind, SyncRun
from bot.slack.home import (
    ACTION_HOME_UNWATCH_RUNS,
    HOME_RECENT_RUNS,
    HOME_ROWS,
    HomeRow,
    RecentRuns,
    decode_home_runs_value,
    decode_home_value,
    encode_home_runs_value,
    encode_home_value,
    render_home,
)
from bot.storage.run_watch_store import RunWatch
from bot.storage.watch_store import Watch

REF = TaskRef("p" * 32, "task-1", "0")
NOW = 1_800_000_500.0


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
    view = render_home(rows, now=NOW, notice="x" * 5000)
    assert len(view["blocks"]) <= 100
    for block in view["blocks"]:
        Block.parse(block).validate_json()  # type: ignore[union-attr]
        assert len(json.dumps(block)) < 3500
    assert f"and {250 - HOME_ROWS} more" in json.dumps(view)


def test_hostile_text_is_inert() -> None:
    rows = [HomeRow(watch("<!channel>", paused="<https://evil|click>"), None, Totals())]
    view = render_home(rows, now=NOW, notice="<!here>")
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


# --- run watches ---------------------------------------------------------------------------


def run_watch(
    channel: str = "C0123ABCD", kind: RunKind | None = RunKind.AUTO, **kw: Any
) -> RunWatch:
    return RunWatch(
        channel=channel, kind=kind, created_by="U0DEMO0001", created_at=1_800_000_000.0, **kw
    )


def texts(view: dict[str, Any]) -> list[str]:
    blocks = view["blocks"]
    assert isinstance(blocks, list)
    return [b["text"]["text"] for b in blocks if b.get("type") == "section"]


def test_run_watches_come_first_with_kind_filters_and_state() -> None:
    runs = [
        run_watch(kind=None, types=frozenset({"Harbor"})),
        run_watch(kind=RunKind.AUTO, muted_until=NOW + 60),
        run_watch(kind=RunKind.MANUAL, name="prod", paused_reason="is_archived"),
    ]
    rows = [HomeRow(watch(), None, Totals(1, 0, 2))]
    view = render_home(rows, runs=runs, now=NOW)
    shown = texts(view)
    assert shown[0] == "*Runs followed*"
    assert shown[1].startswith("*all runs* in <#C0123ABCD> · type=Harbor · active")
    assert "*auto runs*" in shown[2] and ":mute: muted until" in shown[2]
    assert "*manual runs*" in shown[3] and "name=`prod`" in shown[3]
    assert "paused (is_archived)" in shown[3]
    assert shown[4] == "*Tasks watched*" and "task-1" in shown[5]
    buttons = [b["accessory"] for b in view["blocks"] if "accessory" in b]
    assert [b["action_id"] for b in buttons[:3]] == [ACTION_HOME_UNWATCH_RUNS] * 3
    assert decode_home_runs_value(buttons[0]["value"]) == (None, "C0123ABCD")
    assert decode_home_runs_value(buttons[2]["value"]) == (RunKind.MANUAL, "C0123ABCD")
    # A mute that has run out shows as active: nothing has to clear it.
    later = texts(render_home([], runs=runs[1:2], now=NOW + 60))
    assert later[1].endswith("· active")


def test_run_and_task_watches_share_the_block_budget() -> None:
    runs = [run_watch(f"C{i:08d}") for i in range(60)]
    rows = [HomeRow(watch(f"task-{i}"), None, Totals()) for i in range(60)]
    view = render_home(rows, runs=runs, now=NOW, notice="n")
    assert len(view["blocks"]) <= 100
    raw = json.dumps(view)
    assert f"and {120 - HOME_ROWS} more" in raw
    assert raw.count(ACTION_HOME_UNWATCH_RUNS) == 60


def test_nothing_watched_says_how_to_start() -> None:
    [text] = texts(render_home([], now=NOW))
    assert "`/hss-sync watch runs`" in text and "`/hss-sync watch <task_id>`" in text


@pytest.mark.parametrize("kind", [None, RunKind.AUTO, RunKind.MANUAL])
@pytest.mark.parametrize("channel", ["C0123ABCD", "G0123ABCD", "D0123ABCD"])
def test_run_button_values_round_trip(kind: RunKind | None, channel: str) -> None:
    assert decode_home_runs_value(encode_home_runs_value(kind, channel)) == (kind, channel)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "null",
        "[]",
        '{"k": "autoSync"}',
        '{"k": "weekly", "c": "C0123ABCD"}',
        '{"k": null, "c": "C0123ABCD"}',
        '{"k": "all", "c": "<!here>"}',
        '{"k": "all", "c": 5}',
        json.dumps({"k": "all", "c": "C" + "0" * 5000}),
    ],
)
def test_junk_run_button_values_are_refused(value: str) -> None:
    with pytest.raises(CommandError, match="out of date"):
        decode_home_runs_value(value)


# --- recent runs ---------------------------------------------------------------------------


def sync_run(i: int, *, failed: int = 0, name: str = "") -> SyncRun:
    return SyncRun(
        task_id=f"run-{i}",
        task_name=name or f"nightly-{i}",
        task_type="autoSync" if i % 2 else "manualSync",
        begin_time=(1_800_000_000 - i * 3600) * 1000,
        end_time=(1_800_000_000 - i * 3600 + 600) * 1000,
        task_status=100,
        failed_num=failed,
        success_num=30 - failed,
        total_num=30,
    )


def test_recent_runs_come_above_the_watches_with_failed_counts_and_age() -> None:
    recent = RecentRuns(runs=tuple(sync_run(i, failed=i) for i in range(8)), fetched_at=NOW - 120)
    view = render_home(
        [HomeRow(watch(), None, Totals())], runs=[run_watch()], recent=recent, now=NOW
    )
    shown = texts(view)
    assert shown[0] == "*Recent runs*"
    lines = shown[1].splitlines()
    assert len(lines) == HOME_RECENT_RUNS
    assert "`nightly-0` · id `run-0`" in lines[0] and "0 failed" in lines[0]
    assert ":x: *3* failed" in lines[3] and "scheduled" in lines[3]
    assert shown[2] == "*Runs followed*"
    raw = json.dumps(view)
    assert "data from 2 min ago" in raw and "/hss-sync tasks" in raw


@pytest.mark.parametrize(
    ("recent", "says"),
    [
        (RecentRuns(), "No run list yet: `/hss-sync tasks` fetches it."),
        (RecentRuns(fetched_at=NOW - 30), "HSS lists no sync runs (data from 30 s ago)."),
        (RecentRuns(unavailable="The list of sync runs is unavailable <!here>"), "unavailable"),
    ],
)
def test_no_run_list_is_one_sentence(recent: RecentRuns, says: str) -> None:
    shown = texts(render_home([], recent=recent, now=NOW))
    assert shown[0] == "*Recent runs*" and says in shown[1]
    assert "<!here>" not in json.dumps(shown)


def test_hostile_run_names_are_inert_and_limits_hold() -> None:
    runs = tuple(sync_run(i, failed=1, name="<!channel> *x* " + "n" * 500) for i in range(5))
    view = render_home(
        [HomeRow(watch(f"task-{i}"), None, Totals()) for i in range(200)],
        runs=[run_watch(f"C{i:08d}") for i in range(10)],
        recent=RecentRuns(runs=runs, fetched_at=NOW),
        now=NOW,
        notice="n" * 1000,
    )
    assert len(view["blocks"]) <= 100
    for block in view["blocks"]:
        Block.parse(block).validate_json()  # type: ignore[union-attr]
    assert "<!channel>" not in json.dumps(view)
