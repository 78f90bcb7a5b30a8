from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.errors import CommandError
from bot.models import REGISTRY_TYPES, LookupRequest, SyncStatus, task_id_problem
from bot.slack.command import (
    USAGE,
    USAGES,
    AddWatch,
    Command,
    Help,
    ListWatches,
    Lookup,
    Mute,
    OpenWatchForm,
    SlackRef,
    Unmute,
    Unwatch,
    Word,
    parse,
    tokenize,
    validate_request,
)
from bot.slack.text import escape

F = SyncStatus.FAILED


def req(task_id: str = "t1", **kwargs: object) -> Lookup:
    return Lookup(LookupRequest(task_id=task_id, **kwargs))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", Help()),
        ("   \n ", Help()),
        ("help", Help()),
        ("HeLp", Help()),
        ("help me please", Help()),
        ("t1", req()),
        ("  t1  ", req()),
        ("t1 failed", req(status=F)),
        ("t1 RUNNING", req(status=SyncStatus.RUNNING)),
        ("t1 Finished", req(status=SyncStatus.FINISHED)),
        ("t1 type=harbor", req(types=frozenset({"Harbor"}))),
        ("t1 TYPE=harbor,JFROG,jfrog", req(types=frozenset({"Harbor", "Jfrog"}))),
        (
            "t1 type=swrprivate,SwrShared,swrENTERPRISE,other",
            req(types=frozenset({"SwrPrivate", "SwrShared", "SwrEnterprise", "Other"})),
        ),
        ("t1 type=Harbor,", req(types=frozenset({"Harbor"}))),
        ("t1 name=harbor-prod", req(name="harbor-prod")),
        ('t1 name="prod harbor"', req(name="prod harbor")),
        ('t1 "name=prod harbor"', req(name="prod harbor")),
        ("t1 name=\u201cprod harbor\u201d", req(name="prod harbor")),  # curly quotes from phones
        ("t1 Name=a=b", req(name="a=b")),
        ("t1 ep=0", req(ep="0")),
        ("t1 EP=all_granted_eps", req(ep="all_granted_eps")),
        (
            't1 failed type=Harbor name="a b" ep=ep-1',
            req(status=F, types=frozenset({"Harbor"}), name="a b", ep="ep-1"),
        ),
        (
            "t1 ep=1 name=n type=Other running",
            req(status=SyncStatus.RUNNING, types=frozenset({"Other"}), name="n", ep="1"),
        ),
        # Slack's entity escaping is undone.
        ("t1 name=a&amp;b", req(name="a&b")),
        ("t1 name=&lt;!channel&gt;", req(name="<!channel>")),
        ("t1 name=&amp;lt;", req(name="&lt;")),
        # Slack auto-links: the label is what the user typed.
        (
            "t1 name=<http://registry.example.com|registry.example.com>",
            req(name="registry.example.com"),
        ),
        ("<http://task.io|task.io>", req("task.io")),
        ("t1 name=<https://x.example/a?b=1&amp;c=2>", req(name="https://x.example/a?b=1&c=2")),
        ("t1 name=<mailto:a@b.c|a@b.c>", req(name="a@b.c")),
        ("t1\tfailed\nname=x", req(status=F, name="x")),
        ("t1\u00a0failed", req(status=F)),  # non-breaking space separates too
        ("同步任务 name=仓库", req("同步任务", name="仓库")),
        ("x" * 64, req("x" * 64)),
        (f"t1 name={'n' * 128}", req(name="n" * 128)),
        (f"t1 ep={'e' * 256}", req(ep="e" * 256)),
    ],
)
def test_accepted(text: str, expected: object) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('""', "task id is empty"),
        ("x" * 65, "at most 64"),
        ("t1 done", 'Unknown status "done". Use one of finished, running, failed'),
        ("t1 failed running", "give at most one"),
        ("t1 type=Docker", 'Unknown registry type "Docker". Use any of SwrPrivate'),
        ("t1 type=", "type= needs at least one of"),
        ("t1 type=,", "type= needs at least one of"),
        ("t1 name=", "name= needs a registry name"),
        ('t1 name=""', "name= needs a registry name"),
        ('t1 name="  "', "name= needs a registry name"),
        (f"t1 name={'n' * 129}", "at most 128"),
        ("t1 ep=", "ep= needs an enterprise project id"),
        (f"t1 ep={'e' * 257}", "at most 256"),
        ("t1 foo=1", 'Unknown option "foo=". Options are type=, name=, ep='),
        ("t1 =1", 'Unknown option "='),
        ("t1 name=a NAME=b", "Option name= is given twice"),
        ("t1 type=Harbor type=Jfrog", "Option type= is given twice"),
        ("t1 failed type=Harbor name=a ep=0 extra", "Too many words (6)"),
        ('t1 name="open', "Unbalanced quote"),
        ("t1 \u201cx", "Unbalanced quote"),
        ("failed", "Start with the task id"),
        ("type=Harbor", "Start with the task id"),
        ("t1 <#C123|general>", '"#general" is not accepted here'),
        ("t1 <@U123>", '"@U123" is not accepted here'),
        ("<!channel>", '"!channel" is not accepted here'),
        ("t1 name=<@U123>", "must be a word of its own"),
        ("t1 name=a\x00b", "control characters"),
    ],
)
def test_rejected(text: str, message: str) -> None:
    with pytest.raises(CommandError) as info:
        parse(text)
    assert message in str(info.value)


def test_error_messages_do_not_echo_huge_input() -> None:
    for text in (f"t1 {'s' * 5000}", f"t1 type={'y' * 5000}", f"t1 {'k' * 5000}=1", "x" * 5000):
        with pytest.raises(CommandError) as info:
            parse(text)
        assert len(str(info.value)) < 300


def test_tokenize_keeps_slack_references_for_later_subcommands() -> None:
    assert tokenize("watch t1 <#C123|ops> name=a") == [
        Word("watch"),
        Word("t1"),
        Word("", SlackRef("#", "C123", "ops")),
        Word("name=a"),
    ]


def test_validate_request() -> None:
    ok = LookupRequest(task_id="t", status=F, types=frozenset({"Harbor"}), name="n", ep="0")
    assert validate_request(ok) is ok
    for bad in (
        LookupRequest(task_id=""),
        LookupRequest(task_id="t", types=frozenset({"harbor"})),
        LookupRequest(task_id="t", name=""),
        LookupRequest(task_id="t", ep="e" * 257),
        LookupRequest(task_id="t", status="failed"),  # type: ignore[arg-type]
    ):
        with pytest.raises(CommandError):
            validate_request(bad)


@given(st.text(max_size=300))
def test_parse_raises_only_command_error(text: str) -> None:
    try:
        result = parse(text)
    except CommandError as exc:
        assert exc.user_message()
    else:
        assert isinstance(result, Command)


_slackish = st.text(alphabet='<>&"|#@!= \u201cabcx=,', max_size=60)


@given(_slackish)
def test_parse_raises_only_command_error_on_slack_syntax(text: str) -> None:
    with contextlib.suppress(CommandError):
        parse(text)


# --- valid commands generated, then written the way Slack would send them -------------------

#: What a name or ep may hold: no control, invisible or text-direction characters.
_value_chars = st.characters(
    blacklist_categories=("Cc", "Cf", "Cs", "Zs", "Zl", "Zp"),
    blacklist_characters='"\u201c\u201d',
)


def _word(max_size: int) -> st.SearchStrategy[str]:
    return st.text(_value_chars, min_size=1, max_size=max_size).filter(
        lambda s: not s.isspace() and s.strip() == s
    )


#: What a task id may hold: no hidden characters (see bot.models.task_id_problem).
_task_chars = st.characters(
    blacklist_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"),
    blacklist_characters='"\u201c\u201d',
)


def _task_word() -> st.SearchStrategy[str]:
    return st.text(_task_chars, min_size=1, max_size=64).filter(
        lambda s: task_id_problem(s) is None
    )


def _quoted(value: str) -> str:
    # Slack escapes &, <, > in what the user typed; a quote keeps spaces together.
    return f'"{escape(value)}"'


@st.composite
def lookup_commands(draw: st.DrawFn) -> tuple[str, LookupRequest]:
    task_id = draw(
        _task_word()
        .filter(lambda s: s.casefold() not in {"help", "failed", "running", "finished"})
        .filter(lambda s: s.casefold() not in {"watch", "unwatch", "watches", "mute", "unmute"})
        .filter(lambda s: s.partition("=")[0].casefold() not in {"type", "name", "ep"})
    )
    status = draw(st.none() | st.sampled_from(SyncStatus))
    types = draw(st.frozensets(st.sampled_from(REGISTRY_TYPES)))
    name = draw(
        st.none()
        | st.text(_value_chars | st.just(" "), max_size=128).filter(lambda s: bool(s.strip()))
    )
    ep = draw(st.none() | _word(256))
    words = [_quoted(task_id)]
    if status is not None:
        words.append(draw(st.sampled_from([status.value, status.value.upper()])))
    if types:
        spelled = [draw(st.sampled_from([t, t.lower(), t.upper()])) for t in sorted(types)]
        words.append("TYPE=" + ",".join(spelled))
    if name is not None:
        words.append("name=" + _quoted(name))
    if ep is not None:
        words.append('Ep="' + escape(ep) + '"')
    order = draw(st.permutations(words[1:]))
    text = " ".join([words[0], *order])
    request = LookupRequest(task_id=task_id, status=status, types=types, name=name, ep=ep)
    return text, request


@given(lookup_commands())
def test_generated_commands_parse_to_their_request(case: tuple[str, LookupRequest]) -> None:
    text, request = case
    assert parse(text) == Lookup(request)


# --- the watch sub-commands ----------------------------------------------------------------

HARBOR = frozenset({"Harbor"})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("watch t1", AddWatch("t1")),
        ("WATCH t1", AddWatch("t1")),
        ("watch t1 <#C123ABC|ops>", AddWatch("t1", channel="C123ABC")),
        ("watch t1 <#C123ABC|>", AddWatch("t1", channel="C123ABC")),  # Slack may omit the name
        ("watch t1 <#G0PRIV8|private>", AddWatch("t1", channel="G0PRIV8")),
        ("watch t1 type=harbor", AddWatch("t1", types=HARBOR)),
        (
            'watch t1 TYPE=harbor,jfrog name="prod reg" ep=0 <#C1AB|ops>',
            AddWatch("t1", "C1AB", frozenset({"Harbor", "Jfrog"}), "prod reg", "0"),
        ),
        ("watch t1 <#C1AB|ops> Name=a&amp;b", AddWatch("t1", "C1AB", name="a&b")),
        ("unwatch t1", Unwatch("t1")),
        ("unwatch t1 <#C1AB|ops>", Unwatch("t1", "C1AB")),
        ("watches", ListWatches(all_channels=False)),
        ("watches ALL", ListWatches(all_channels=True)),
        ("mute t1", Mute("t1", 3600)),
        ("mute t1 30m", Mute("t1", 1800)),
        ("mute t1 1m", Mute("t1", 60)),
        ("mute t1 24H", Mute("t1", 86400)),
        ("mute t1 168h", Mute("t1", 7 * 86400)),
        ("mute t1 7d", Mute("t1", 7 * 86400)),
        ("mute t1 <#C1AB|ops> 2h", Mute("t1", 7200, "C1AB")),
        ("mute t1 2h <#C1AB|ops>", Mute("t1", 7200, "C1AB")),
        ("unmute t1", Unmute("t1")),
        ("unmute t1 <#C1AB|ops>", Unmute("t1", "C1AB")),
        ("watch", OpenWatchForm()),  # nothing named: the form asks
        ("WATCH  ", OpenWatchForm()),
    ],
)
def test_watch_commands_accepted(text: str, expected: object) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("unwatch", "unwatch needs a task id"),
        ("mute", "mute needs a task id"),
        ("unmute", "unmute needs a task id"),
        ("watch <#C1AB|ops>", 'Start with the task id, before "#ops"'),
        ("watch type=Harbor", 'Start with the task id, before "type=Harbor"'),
        ("watch #ops", 'Start with the task id, before "#ops"'),
        ("mute 1h", 'Start with the task id, before "1h"'),
        ("watch t1 #ops", 'Slack did not send an id for "#ops". Type # and pick the channel'),
        ("unwatch t1 #ops", "run the command in that channel without naming one"),
        ("watch t1 <@U123>", '"@U123" is not a channel'),
        ("watch t1 <!here>", '"!here" is not a channel'),
        ("mute t1 <!subteam^S1|@ops>", "is not a channel"),
        ("watch t1 <#X1|odd>", '"#odd" is not a channel Slack can name'),
        ("watch t1 <#D1AB|dm>", '"#dm" is not a channel Slack can name'),  # DMs have no #
        ("watch t1 <#C1AB|a> <#C2AB|b>", "Name at most one channel"),
        ("watch t1 failed", 'Unexpected "failed": after the task id, watch takes a #channel'),
        ("watch t1 foo=1", 'Unexpected "foo=1"'),
        ("watch t1 name=a NAME=b", "Option name= is given twice"),
        ("watch t1 type=Docker", 'Unknown registry type "Docker"'),
        ("watch t1 name=", "name= needs a registry name"),
        ("watch t1 ep=", "ep= needs an enterprise project id"),
        (f"watch {'x' * 65}", "at most 64"),
        ('watch ""', "The task id is empty. Usage: /hss-sync watch"),
        ('watch "t 1"', "contains U+0020 SPACE, a space"),
        ("unwatch t1 extra", 'Unexpected "extra": unwatch takes a task id and optionally'),
        ("unwatch t1 type=Harbor", 'Unexpected "type=Harbor"'),
        ("unmute t1 1h", 'Unexpected "1h": unmute takes'),
        ("watches mine", 'Unexpected "mine": use "watches" for this channel'),
        ("watches all now", 'Unexpected "all"'),
        ("watches <#C1AB|ops>", 'Unexpected "#channel"'),
        ("mute t1 0m", 'A mute of "0m" is out of range: from 1m to 7d'),
        ("mute t1 8d", "out of range"),
        ("mute t1 169h", "out of range"),
        ("mute t1 30", 'Unknown duration "30". Use minutes, hours or days such as 30m'),
        ("mute t1 1.5h", "Unknown duration"),
        ("mute t1 forever", "Unknown duration"),
        ("mute t1 1h 2h", "Give at most one duration"),
        ("mute t1 99999999h", "Unknown duration"),
    ],
)
def test_watch_commands_rejected(text: str, message: str) -> None:
    with pytest.raises(CommandError) as info:
        parse(text)
    assert message in str(info.value)
    assert len(str(info.value)) < 400


def test_lookup_and_help_are_unchanged_by_the_watch_commands() -> None:
    assert parse("help watch") == Help()
    assert parse("watched") == req("watched")  # only the exact word is a sub-command
    with pytest.raises(CommandError, match="Usage: /hss-sync <task_id>"):
        parse('""')
    assert USAGES[0] == USAGE
    assert all(u.startswith("/hss-sync ") for u in USAGES)


_channel_ids = st.from_regex(r"C[A-Z0-9]{8,10}", fullmatch=True)


@st.composite
def watch_commands(draw: st.DrawFn) -> tuple[str, AddWatch]:
    task_id = draw(
        _task_word().filter(
            lambda s: (
                not s.startswith("#")
                and s.partition("=")[0].casefold() not in {"type", "name", "ep"}
            )
        )
    )
    channel = draw(st.none() | _channel_ids)
    types = draw(st.frozensets(st.sampled_from(REGISTRY_TYPES)))
    name = draw(
        st.none()
        | st.text(_value_chars | st.just(" "), max_size=128).filter(lambda s: bool(s.strip()))
    )
    ep = draw(st.none() | _word(256))
    words = []
    if channel is not None:
        label = draw(st.sampled_from(["", "ops", "team-alerts"]))
        words.append(f"<#{channel}|{label}>")
    if types:
        words.append("type=" + ",".join(sorted(types)))
    if name is not None:
        words.append("name=" + _quoted(name))
    if ep is not None:
        words.append("ep=" + _quoted(ep))
    order = draw(st.permutations(words))
    text = " ".join(["watch", _quoted(task_id), *order])
    return text, AddWatch(task_id=task_id, channel=channel, types=types, name=name, ep=ep)


@given(watch_commands())
def test_generated_watch_commands_parse_to_their_command(case: tuple[str, AddWatch]) -> None:
    text, command = case
    assert parse(text) == command
