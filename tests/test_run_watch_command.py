"""The run-watch grammar: ``watch|unwatch|mute|unmute runs ...`` parsed through the one
parser the slash command uses; every refusal says what was wrong and what is accepted."""

from __future__ import annotations

import pytest

from bot.errors import CommandError
from bot.runs import RunKind
from bot.slack.command import (
    USAGES,
    AddRunWatch,
    AddWatch,
    MuteRuns,
    UnmuteRuns,
    Unwatch,
    UnwatchRuns,
    parse,
)

AUTO, MANUAL = RunKind.AUTO, RunKind.MANUAL


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("watch runs", AddRunWatch()),
        ("WATCH RUNS", AddRunWatch()),
        ("watch runs auto", AddRunWatch(AUTO)),
        ("watch runs Manual", AddRunWatch(MANUAL)),
        ("watch runs auto <#C1AB|ops>", AddRunWatch(AUTO, "C1AB")),
        ("watch runs <#C1AB|ops> auto", AddRunWatch(AUTO, "C1AB")),  # any order
        (
            'watch runs type=harbor,JFROG name="prod reg" <#G0PRIV8|p>',
            AddRunWatch(None, "G0PRIV8", frozenset({"Harbor", "Jfrog"}), "prod reg"),
        ),
        ("watch runs manual Name=a&amp;b", AddRunWatch(MANUAL, name="a&b")),
        ("unwatch runs", UnwatchRuns()),
        ("unwatch runs auto <#C1AB|ops>", UnwatchRuns(AUTO, "C1AB")),
        ("mute runs", MuteRuns(None, 3600)),
        ("mute runs auto 30m", MuteRuns(AUTO, 1800)),
        ("mute runs 2h <#C1AB|ops> manual", MuteRuns(MANUAL, 7200, "C1AB")),
        ("mute runs 7d", MuteRuns(None, 7 * 86400)),
        ("unmute runs", UnmuteRuns()),
        ("unmute runs manual <#C1AB|ops>", UnmuteRuns(MANUAL, "C1AB")),
        # Only the second word selects the run forms: a task id stays a task id.
        ("watch runs-1", AddWatch("runs-1")),
        ("unwatch task-1", Unwatch("task-1")),
    ],
)
def test_run_watch_commands_accepted(text: str, expected: object) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("watch runs auto manual", "Give at most one kind (auto or manual)"),
        ("watch runs auto auto", "Give at most one kind"),
        ("watch runs all", 'Leave out "all": without auto or manual, watch runs is about every'),
        ("unwatch runs all", 'Leave out "all"'),
        ("watch runs daily", 'Unexpected "daily": watch runs takes auto or manual, a #channel'),
        ("watch runs autoSync", 'Unexpected "autoSync"'),
        ("watch runs ep=0", 'Unexpected "ep=0": watch runs takes auto or manual, a #channel and'),
        ("watch runs type=Docker", 'Unknown registry type "Docker"'),
        ("watch runs name=", "name= needs a registry name"),
        ("watch runs name=a name=b", "Option name= is given twice"),
        ("watch runs #ops", 'Slack did not send an id for "#ops"'),
        ("watch runs <@U123>", '"@U123" is not a channel'),
        ("watch runs <#D1AB|dm>", "is not a channel Slack can name"),
        ("watch runs <#C1AB|a> <#C2AB|b>", "Give at most one channel"),
        ("watch runs failed", 'Unexpected "failed"'),
        ("watch runs 1h", 'Unexpected "1h"'),
        ("unwatch runs type=Harbor", 'Unexpected "type=Harbor": unwatch runs takes auto or'),
        ("unmute runs 1h", 'Unexpected "1h": unmute runs takes'),
        ("mute runs 0m", 'A mute of "0m" is out of range'),
        ("mute runs 8d", "out of range"),
        ("mute runs 30", 'Unknown duration "30"'),
        ("mute runs 1h 2h", "Give at most one duration"),
        ("mute runs type=Harbor", 'Unexpected "type=Harbor": mute runs takes auto or manual, a'),
        (f"watch runs name={'n' * 200}", "at most 128"),
        ('watch runs name="a\x01b"', "control characters"),
        ("watch runs name=a\u202eb", "U+202E RIGHT-TO-LEFT OVERRIDE, a text-direction mark"),
        ("watch runs name=\u200bx", "U+200B ZERO WIDTH SPACE, an invisible character"),
    ],
)
def test_run_watch_commands_rejected(text: str, message: str) -> None:
    with pytest.raises(CommandError) as info:
        parse(text)
    assert message in str(info.value)
    assert len(str(info.value)) < 400


def test_a_mute_too_long_for_runs_points_at_unwatch_runs() -> None:
    # Not "unwatch the task": a run watch is undone with unwatch runs.
    with pytest.raises(CommandError) as info:
        parse("mute runs auto 8d")
    said = str(info.value)
    assert "unwatch runs" in said and "the task" not in said


def test_the_help_lists_the_run_forms() -> None:
    assert sum(" runs " in u for u in USAGES) == 4
