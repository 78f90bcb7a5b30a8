"""The run-watch sub-commands of ``/hss-sync``: words -> command (pure).

Grammar (words after ``runs`` in any order, each at most once; case-insensitive)::

    watch runs [auto|manual] [#channel] [type=T1,T2,...] [name=<registry>]  -> AddRunWatch
    unwatch runs [auto|manual] [#channel]                                   -> UnwatchRuns
    mute runs [auto|manual] [#channel] [<N>m|<N>h|<N>d]  (default 1h)       -> MuteRuns
    unmute runs [auto|manual] [#channel]                                    -> UnmuteRuns

Without ``auto`` or ``manual`` the command is about the watch of every run. A channel has at
most one run watch per kind, so ``unwatch``, ``mute`` and ``unmute`` name only the kind.
Channels, durations and the options are read as for task watches
(:mod:`bot.slack.watch_command`): a ``#channel`` must be Slack's reference, and without one
the command applies to the channel it is typed in.

``runs`` after ``watch``, ``unwatch``, ``mute`` or ``unmute`` selects these forms
(:func:`with_runs`), so a task literally named ``runs`` cannot be watched by id; HSS task
ids are UUID-like, so this costs nothing in practice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from bot.errors import CommandError
from bot.runs import RunKind
from bot.slack.watch_command import (
    DEFAULT_MUTE_SECONDS,
    channel_of,
    is_duration,
    parse_duration,
    plain_channel,
)
from bot.slack.words import Word, echo, parse_types, validate_name

WATCH_RUNS_USAGE = (
    "/hss-sync watch runs [auto|manual] [#channel] [type=Harbor,Jfrog,...] [name=<registry>]"
)
UNWATCH_RUNS_USAGE = "/hss-sync unwatch runs [auto|manual] [#channel]"
MUTE_RUNS_USAGE = "/hss-sync mute runs [auto|manual] [#channel] [30m|1h|24h|<N>m|<N>h|<N>d]"
UNMUTE_RUNS_USAGE = "/hss-sync unmute runs [auto|manual] [#channel]"
USAGES = (WATCH_RUNS_USAGE, UNWATCH_RUNS_USAGE, MUTE_RUNS_USAGE, UNMUTE_RUNS_USAGE)

RUNS_WORD = "runs"
#: The words for a kind, as people say them (the API says autoSync and manualSync).
KIND_WORDS: dict[str, RunKind] = {"auto": RunKind.AUTO, "manual": RunKind.MANUAL}
_OPTIONS = ("type", "name")

C = TypeVar("C")


@dataclass(frozen=True, slots=True)
class AddRunWatch:
    """Follow every new run of ``kind`` (None: every run) in ``channel`` (None: the current
    one), optionally only some registry types or names. Replaces the channel's watch of that
    kind, if any. (The watch it makes is :class:`bot.storage.run_watch_store.RunWatch`.)"""

    kind: RunKind | None = None
    channel: str | None = None
    types: frozenset[str] = frozenset()
    name: str | None = None


@dataclass(frozen=True, slots=True)
class UnwatchRuns:
    kind: RunKind | None = None
    channel: str | None = None


@dataclass(frozen=True, slots=True)
class MuteRuns:
    kind: RunKind | None = None
    seconds: int = DEFAULT_MUTE_SECONDS
    channel: str | None = None


@dataclass(frozen=True, slots=True)
class UnmuteRuns:
    kind: RunKind | None = None
    channel: str | None = None


RunWatchCommand = AddRunWatch | UnwatchRuns | MuteRuns | UnmuteRuns


def kind_word(kind: RunKind | None) -> str:
    """``auto``, ``manual``, or ``all`` for the watch of every run."""
    return next((w for w, k in KIND_WORDS.items() if k == kind), "all")


@dataclass(slots=True)
class _Parsed:
    kind: RunKind | None = None
    channel: str | None = None
    values: dict[str, str] = field(default_factory=dict)
    seconds: int | None = None


def _parse(words: list[Word], verb: str, usage: str, *, options: bool, duration: bool) -> _Parsed:
    parsed = _Parsed()
    seen: set[str] = set()

    def once(what: str, said: str) -> None:
        if what in seen:
            raise CommandError(f"Give at most one {said}. Usage: {usage}")
        seen.add(what)

    for word in words[2:]:
        text = word.text
        key, eq, value = text.partition("=")
        if word.ref is not None:
            once("channel", "channel")
            parsed.channel = channel_of(word.ref, verb)
        elif text.startswith("#"):
            raise plain_channel(text)
        elif text.casefold() in KIND_WORDS:
            once("kind", "kind (auto or manual)")
            parsed.kind = KIND_WORDS[text.casefold()]
        elif options and eq and key.casefold() in _OPTIONS:
            key = key.casefold()
            if key in seen:
                raise CommandError(f"Option {key}= is given twice; give each option once.")
            seen.add(key)
            parsed.values[key] = value
        elif duration and (is_duration(text) or text[:1].isdigit()):
            once("duration", "duration")
            parsed.seconds = parse_duration(text, undo="use `unwatch runs`")
        else:
            raise _unexpected(text, verb, usage, options=options, duration=duration)
    return parsed


def _unexpected(text: str, verb: str, usage: str, *, options: bool, duration: bool) -> CommandError:
    if text.casefold() == "all":
        return CommandError(
            f'Leave out "all": without auto or manual, {verb} runs is about every run. '
            f"Usage: {usage}"
        )
    takes = "auto or manual, a #channel"
    if options:
        takes += " and the options type=, name="
    if duration:
        takes += " and a duration such as 1h"
    return CommandError(f'Unexpected "{echo(text)}": {verb} runs takes {takes}. Usage: {usage}')


def parse_watch_runs(words: list[Word]) -> AddRunWatch:
    p = _parse(words, "watch", WATCH_RUNS_USAGE, options=True, duration=False)
    values = p.values
    return AddRunWatch(
        kind=p.kind,
        channel=p.channel,
        types=parse_types(values["type"].split(",")) if "type" in values else frozenset(),
        name=validate_name(values["name"]) if "name" in values else None,
    )


def parse_unwatch_runs(words: list[Word]) -> UnwatchRuns:
    p = _parse(words, "unwatch", UNWATCH_RUNS_USAGE, options=False, duration=False)
    return UnwatchRuns(kind=p.kind, channel=p.channel)


def parse_mute_runs(words: list[Word]) -> MuteRuns:
    p = _parse(words, "mute", MUTE_RUNS_USAGE, options=False, duration=True)
    seconds = p.seconds if p.seconds is not None else DEFAULT_MUTE_SECONDS
    return MuteRuns(kind=p.kind, seconds=seconds, channel=p.channel)


def parse_unmute_runs(words: list[Word]) -> UnmuteRuns:
    p = _parse(words, "unmute", UNMUTE_RUNS_USAGE, options=False, duration=False)
    return UnmuteRuns(kind=p.kind, channel=p.channel)


_RUN_PARSERS: dict[str, Callable[[list[Word]], RunWatchCommand]] = {
    "watch": parse_watch_runs,
    "unwatch": parse_unwatch_runs,
    "mute": parse_mute_runs,
    "unmute": parse_unmute_runs,
}


def is_runs(words: list[Word]) -> bool:
    """Whether the second word selects the run forms."""
    return len(words) > 1 and words[1].ref is None and words[1].text.casefold() == RUNS_WORD


def with_runs(
    parsers: Mapping[str, Callable[[list[Word]], C]],
) -> dict[str, Callable[[list[Word]], C | RunWatchCommand]]:
    """``parsers`` (first word -> parser), where ``<verb> runs ...`` goes to the run forms."""

    def either(
        verb: str, other: Callable[[list[Word]], C]
    ) -> Callable[[list[Word]], C | RunWatchCommand]:
        runs = _RUN_PARSERS[verb]

        def parse(words: list[Word]) -> C | RunWatchCommand:
            return runs(words) if is_runs(words) else other(words)

        return parse

    return {
        verb: either(verb, parser) if verb in _RUN_PARSERS else parser
        for verb, parser in parsers.items()
    }
