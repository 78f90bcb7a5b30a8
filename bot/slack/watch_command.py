"""The watch sub-commands of ``/hss-sync``: words -> command (pure).

Grammar (the first word and option keys are case-insensitive)::

    watch <task_id> [#channel] [type=T1,T2,...] [name=<registry>] [ep=<ep_id>] -> AddWatch
    unwatch <task_id> [#channel]                                               -> Unwatch
    watches [all]                                                              -> ListWatches
    mute <task_id> [#channel] [<N>m|<N>h|<N>d]       (default 1h, 1m to 7d)    -> Mute
    unmute <task_id> [#channel]                                                -> Unmute

After the task id, the channel and the options may come in any order, each at most once.

``#channel`` must be a channel reference Slack escaped, ``<#C123|ops>``: that is what Slack
sends when the channel is picked from the ``#`` autocomplete (and, for typed names, only when
the command has "Escape channels, users, and links" on). A plain ``#ops`` carries no id and
is refused with how to fix it rather than resolved by name: resolving would need paging
``conversations.list`` (rate-limited, blind to private channels the bot is not in) and names
change. Without a channel the command applies to the channel it is typed in
(``channel=None``; the caller knows which that is).

A channel watches a task at most once, identified by its task id: ``ep=`` is a property of
the watch (re-watching with another ``ep=`` replaces it), so ``unwatch``, ``mute`` and
``unmute`` need only the task id.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from bot.errors import CommandError
from bot.slack.text import CHANNEL_ID
from bot.slack.words import (
    SlackRef,
    Word,
    echo,
    parse_types,
    validate_ep,
    validate_name,
    validate_task_id,
)

WATCH_USAGE = (
    "/hss-sync watch <task_id> [#channel] [type=Harbor,Jfrog,...] [name=<registry>] "
    "[ep=<enterprise_project_id>]"
)
UNWATCH_USAGE = "/hss-sync unwatch <task_id> [#channel]"
WATCHES_USAGE = "/hss-sync watches [all]"
MUTE_USAGE = "/hss-sync mute <task_id> [#channel] [30m|1h|24h|<N>m|<N>h|<N>d]"
UNMUTE_USAGE = "/hss-sync unmute <task_id> [#channel]"

DEFAULT_MUTE_SECONDS = 3600
MIN_MUTE_SECONDS = 60
#: A longer silence is a forgotten one: unwatch instead.
MAX_MUTE_SECONDS = 7 * 24 * 3600
_UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86400}
_DURATION_RE = re.compile(r"(\d{1,7})([mhd])", re.IGNORECASE)
_WATCH_OPTIONS = ("type", "name", "ep")


@dataclass(frozen=True, slots=True)
class AddWatch:
    """Tell ``channel`` (None: the current one) about flips of a task, optionally only for
    some registry types or one registry name. Replaces the channel's watch of the task, if
    any. (The watch it makes is :class:`bot.storage.watch_store.Watch`.)"""

    task_id: str
    channel: str | None = None
    types: frozenset[str] = frozenset()
    name: str | None = None
    ep: str | None = None


@dataclass(frozen=True, slots=True)
class Unwatch:
    task_id: str
    channel: str | None = None


@dataclass(frozen=True, slots=True)
class ListWatches:
    """This channel's watches, or every channel's."""

    all_channels: bool = False


@dataclass(frozen=True, slots=True)
class Mute:
    task_id: str
    seconds: int = DEFAULT_MUTE_SECONDS
    channel: str | None = None


@dataclass(frozen=True, slots=True)
class Unmute:
    task_id: str
    channel: str | None = None


WatchCommand = AddWatch | Unwatch | ListWatches | Mute | Unmute


# --- shared pieces ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Args:
    task_id: str
    channel: str | None
    rest: list[str]


def channel_of(ref: SlackRef, verb: str) -> str:
    """The channel id of a ``#channel`` word, or why it is not one."""
    if ref.kind != "#":
        shown = ref.label or ref.ident
        raise CommandError(
            f'"{echo(ref.kind + shown)}" is not a channel: {verb} takes a channel such as '
            "#ops, picked from Slack's autocomplete."
        )
    if not CHANNEL_ID.fullmatch(ref.ident):
        raise CommandError(f'"#{echo(ref.label or ref.ident)}" is not a channel Slack can name.')
    return ref.ident


def plain_channel(word: str) -> CommandError:
    """The error for a ``#name`` Slack sent as text, without the channel's id."""
    return CommandError(
        f'Slack did not send an id for "{echo(word)}". Type # and pick the channel from the '
        "list Slack offers, or run the command in that channel without naming one. (If "
        "picked channels still arrive as plain text, the app's command needs \"Escape "
        'channels, users, and links" turned on.)'
    )


def _task_word(words: list[Word], verb: str, usage: str) -> str:
    if len(words) < 2:
        raise CommandError(f"{verb} needs a task id. Usage: {usage}")
    word = words[1]
    # A forgotten task id would otherwise turn "type=Harbor" or "#ops" into a task id.
    key = word.text.partition("=")[0].casefold()
    if word.ref is not None or word.text.startswith("#") or key in _WATCH_OPTIONS:
        shown = f"{word.ref.kind}{word.ref.label or word.ref.ident}" if word.ref else word.text
        raise CommandError(f'Start with the task id, before "{echo(shown)}". Usage: {usage}')
    return validate_task_id(word.text, usage=usage)


def _args(words: list[Word], verb: str, usage: str) -> _Args:
    """The task id, the channel if one is named, and the other words in order."""
    task_id = _task_word(words, verb, usage)
    channel: str | None = None
    rest: list[str] = []
    for word in words[2:]:
        if word.ref is None and word.text.startswith("#"):
            raise plain_channel(word.text)
        if word.ref is None:
            rest.append(word.text)
        elif channel is not None:
            raise CommandError(f"Name at most one channel. Usage: {usage}")
        else:
            channel = channel_of(word.ref, verb)
    return _Args(task_id, channel, rest)


def _no_more(rest: list[str], verb: str, usage: str) -> None:
    if rest:
        raise CommandError(
            f'Unexpected "{echo(rest[0])}": {verb} takes a task id and optionally a channel. '
            f"Usage: {usage}"
        )


# --- the sub-commands ------------------------------------------------------------------------


def parse_watch(words: list[Word]) -> AddWatch:
    args = _args(words, "watch", WATCH_USAGE)
    values: dict[str, str] = {}
    for word in args.rest:
        key, eq, value = word.partition("=")
        key = key.casefold()
        if not eq or key not in _WATCH_OPTIONS:
            raise CommandError(
                f'Unexpected "{echo(word)}": after the task id, watch takes a #channel and '
                f"the options type=, name=, ep= (it alerts on any flip to or from failed, so it "
                f"takes no status). Usage: {WATCH_USAGE}"
            )
        if key in values:
            raise CommandError(f"Option {key}= is given twice; give each option once.")
        values[key] = value
    return AddWatch(
        task_id=args.task_id,
        channel=args.channel,
        types=parse_types(values["type"].split(",")) if "type" in values else frozenset(),
        name=validate_name(values["name"]) if "name" in values else None,
        ep=validate_ep(values["ep"]) if "ep" in values else None,
    )


def parse_unwatch(words: list[Word]) -> Unwatch:
    args = _args(words, "unwatch", UNWATCH_USAGE)
    _no_more(args.rest, "unwatch", UNWATCH_USAGE)
    return Unwatch(task_id=args.task_id, channel=args.channel)


def parse_watches(words: list[Word]) -> ListWatches:
    rest = words[1:]
    if not rest:
        return ListWatches(all_channels=False)
    if len(rest) == 1 and rest[0].ref is None and rest[0].text.casefold() == "all":
        return ListWatches(all_channels=True)
    shown = rest[0].text or "#channel"
    raise CommandError(
        f'Unexpected "{echo(shown)}": use "watches" for this channel\'s watches or '
        f'"watches all" for every channel\'s. Usage: {WATCHES_USAGE}'
    )


def is_duration(text: str) -> bool:
    return _DURATION_RE.fullmatch(text) is not None


def parse_duration(text: str, *, undo: str = "unwatch the task") -> int:
    """Seconds of a mute: ``<N>m``, ``<N>h`` or ``<N>d``, from 1 minute to 7 days. ``undo``:
    what stops the alerts for good, for the out-of-range sentence."""
    match = _DURATION_RE.fullmatch(text.strip())
    if match is None:
        raise CommandError(
            f'Unknown duration "{echo(text)}". Use minutes, hours or days such as 30m, 1h, '
            "24h or 2d (at most 7d)."
        )
    seconds = int(match[1]) * _UNIT_SECONDS[match[2].lower()]
    if not MIN_MUTE_SECONDS <= seconds <= MAX_MUTE_SECONDS:
        raise CommandError(
            f'A mute of "{echo(text)}" is out of range: from 1m to 7d (168h). To stop alerts '
            f"for longer, {undo}."
        )
    return seconds


def parse_mute(words: list[Word]) -> Mute:
    # "mute 1h" forgot the task: refuse rather than mute a task named "1h".
    if len(words) == 2 and words[1].ref is None and _DURATION_RE.fullmatch(words[1].text):
        raise CommandError(
            f'Start with the task id, before "{echo(words[1].text)}". Usage: {MUTE_USAGE}'
        )
    args = _args(words, "mute", MUTE_USAGE)
    if len(args.rest) > 1:
        raise CommandError(f"Give at most one duration. Usage: {MUTE_USAGE}")
    seconds = parse_duration(args.rest[0]) if args.rest else DEFAULT_MUTE_SECONDS
    return Mute(task_id=args.task_id, seconds=seconds, channel=args.channel)


def parse_unmute(words: list[Word]) -> Unmute:
    args = _args(words, "unmute", UNMUTE_USAGE)
    _no_more(args.rest, "unmute", UNMUTE_USAGE)
    return Unmute(task_id=args.task_id, channel=args.channel)


#: First word -> parser of all words (the first included), for bot.slack.command's dispatch table.
PARSERS: dict[str, Callable[[list[Word]], WatchCommand]] = {
    "watch": parse_watch,
    "unwatch": parse_unwatch,
    "watches": parse_watches,
    "mute": parse_mute,
    "unmute": parse_unmute,
}
USAGES = (WATCH_USAGE, UNWATCH_USAGE, WATCHES_USAGE, MUTE_USAGE, UNMUTE_USAGE)
