"""Parse ``/hss-sync`` text into a :data:`Command`.

Grammar (words are separated by whitespace; option keys, the status and registry types are
case-insensitive)::

    /hss-sync                                   -> Help()
    /hss-sync help                              -> Help()
    /hss-sync <task_id> [finished|running|failed] [type=T1,T2,...] [name=<registry>]
              [ep=<enterprise_project_id>]      -> Lookup(LookupRequest(...))
    /hss-sync watch|unwatch|watches|mute|unmute ...   -> see bot.slack.watch_command
    /hss-sync watch|unwatch|mute|unmute runs ...      -> see bot.slack.run_watch_command
    /hss-sync watch                             -> OpenWatchForm() (bot.slack.watch_form)
    /hss-sync tasks [auto|manual] [name=<text>] [failed] -> see bot.slack.tasks_command

Wherever a task id is accepted, a task reference (``latest``, ``latest-auto``,
``latest-manual``) is too: it passes as a task id here and is resolved to the newest run
(of that kind) by the handler (``bot.runs_service.named_run``).

Words may be quoted with ``"..."`` (or the curly quotes that phones and macOS substitute) to
hold spaces: ``name="prod harbor"``. Tokenizing (Slack's escaping, links, ``<#C1|ops>``
references) and the checks on values live in :mod:`bot.slack.words`; a lookup refuses channels and
mentions.

Sub-commands are dispatched on the first word through :data:`_SUBCOMMANDS`; a new one is a
frozen dataclass, a ``_parse_x(words)`` function and a table entry. Any other first word is
a task id, so a task literally named like a sub-command cannot be looked up (HSS ids are
UUID-like, so this costs nothing in practice).

Every failure raises :class:`~bot.errors.CommandError` with what was wrong and what is
accepted; echoed input is shortened so the message stays small.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from bot.errors import CommandError
from bot.models import REGISTRY_TYPES, LookupRequest, SyncStatus
from bot.slack import run_watch_command, watch_command
from bot.slack import words as _words
from bot.slack.run_watch_command import (
    AddRunWatch,
    MuteRuns,
    RunWatchCommand,
    UnmuteRuns,
    UnwatchRuns,
)
from bot.slack.tasks_command import TASKS_USAGE, ListTasks, parse_tasks
from bot.slack.watch_command import (
    AddWatch,
    ListWatches,
    Mute,
    Unmute,
    Unwatch,
)
from bot.slack.watch_form import OpenWatchForm
from bot.slack.words import (
    STATUSES_TEXT,
    TYPES_TEXT,
    SlackRef,
    Word,
    echo,
    parse_status,
    parse_types,
    tokenize,
    validate_ep,
    validate_name,
)

USAGE = (
    "/hss-sync <task_id> [finished|running|failed] [type=Harbor,Jfrog,...] "
    "[name=<registry>] [ep=<enterprise_project_id>]"
)
#: Every form of the command, lookup first, for the help message.
USAGES: tuple[str, ...] = (
    USAGE,
    TASKS_USAGE,
    *watch_command.USAGES,
    *run_watch_command.USAGES,
)
#: A task id, a status and three options.
MAX_WORDS = 5


@dataclass(frozen=True, slots=True)
class Help:
    """Show usage."""


@dataclass(frozen=True, slots=True)
class Lookup:
    """Show a task's registries, filtered."""

    request: LookupRequest


Command = (
    Help
    | Lookup
    | ListTasks
    | AddWatch
    | Unwatch
    | ListWatches
    | Mute
    | Unmute
    | RunWatchCommand
    | OpenWatchForm
)


def validate_task_id(value: str) -> str:
    return _words.validate_task_id(value, usage=USAGE)


# --- the lookup command ---------------------------------------------------------------------


@dataclass(slots=True)
class _Draft:
    """Options collected so far; ``seen`` catches repeats."""

    status: SyncStatus | None = None
    types: frozenset[str] = frozenset()
    name: str | None = None
    ep: str | None = None
    seen: set[str] = field(default_factory=set)


def _set_types(draft: _Draft, value: str) -> None:
    draft.types = parse_types(value.split(","))


def _set_name(draft: _Draft, value: str) -> None:
    draft.name = validate_name(value)


def _set_ep(draft: _Draft, value: str) -> None:
    draft.ep = validate_ep(value)


_OPTIONS: dict[str, Callable[[_Draft, str], None]] = {
    "type": _set_types,
    "name": _set_name,
    "ep": _set_ep,
}
_OPTIONS_TEXT = "type=, name=, ep="


def _plain(word: Word) -> str:
    if word.ref is not None:
        shown = word.ref.label or word.ref.ident
        raise CommandError(
            f'"{echo(word.ref.kind + shown)}" is not accepted here: a lookup takes no channels '
            f"or mentions. Usage: {USAGE}"
        )
    return word.text


def _option(draft: _Draft, word: str) -> None:
    key, _, value = word.partition("=")
    key = key.casefold()
    setter = _OPTIONS.get(key)
    if setter is None:
        raise CommandError(
            f'Unknown option "{echo(key)}=". Options are {_OPTIONS_TEXT}. Usage: {USAGE}'
        )
    if key in draft.seen:
        raise CommandError(f"Option {key}= is given twice; give each option once.")
    draft.seen.add(key)
    setter(draft, value)


def _status(draft: _Draft, word: str) -> None:
    if "status" in draft.seen:
        raise CommandError(f'A second status "{echo(word)}": give at most one of {STATUSES_TEXT}.')
    draft.seen.add("status")
    draft.status = parse_status(word)


def _task_id(word: str) -> str:
    # A forgotten task id would otherwise turn "failed" or "type=Harbor" into an unknown task.
    looks_like = (
        word.partition("=")[0].casefold() in _OPTIONS
        if "=" in word
        else (word.casefold() in {s.value for s in SyncStatus})
    )
    if looks_like:
        raise CommandError(f'Start with the task id, before "{echo(word)}". Usage: {USAGE}')
    return validate_task_id(word)


def _parse_lookup(words: list[Word]) -> Command:
    if len(words) > MAX_WORDS:
        raise CommandError(
            f"Too many words ({len(words)}): at most a task id, a status and three options. "
            f"Quote names with spaces. Usage: {USAGE}"
        )
    task_id = _task_id(_plain(words[0]))
    draft = _Draft()
    for word in (_plain(w) for w in words[1:]):
        if "=" in word:
            _option(draft, word)
        else:
            _status(draft, word)
    request = LookupRequest(
        task_id=task_id, status=draft.status, types=draft.types, name=draft.name, ep=draft.ep
    )
    return Lookup(request)


# --- help and dispatch -----------------------------------------------------------------------


def _parse_help(words: list[Word]) -> Command:
    del words  # "help me" or "help lookup" still deserve the help, not an error
    return Help()


_WATCH_PARSERS = run_watch_command.with_runs(watch_command.PARSERS)


def _parse_watch(words: list[Word]) -> Command:
    # Nothing to watch named: the form asks for it.
    return OpenWatchForm() if len(words) == 1 else _WATCH_PARSERS["watch"](words)


#: First word (case-insensitive) -> parser of all words.
_SUBCOMMANDS: dict[str, Callable[[list[Word]], Command]] = {
    "help": _parse_help,
    "tasks": parse_tasks,
    **_WATCH_PARSERS,
    "watch": _parse_watch,
}


def parse(text: str) -> Command:
    """Parse the text Slack sent after the command name (still entity-escaped)."""
    words = tokenize(text)
    if not words:
        return Help()
    first = words[0]
    handler = _SUBCOMMANDS.get(first.text.casefold()) if first.ref is None else None
    return (handler or _parse_lookup)(words)


def validate_request(request: LookupRequest) -> LookupRequest:
    """Apply the parser's checks to a request built elsewhere (e.g. from a button value)."""
    validate_task_id(request.task_id)
    if request.status is not None and not isinstance(request.status, SyncStatus):
        raise CommandError(f"Unknown status. Use one of {STATUSES_TEXT}.")
    unknown = request.types - frozenset(REGISTRY_TYPES)
    if unknown:
        raise CommandError(f"Unknown registry type. Use any of {TYPES_TEXT}.")
    if request.name is not None:
        validate_name(request.name)
    if request.ep is not None:
        validate_ep(request.ep)
    return request


__all__ = [
    "USAGE",
    "USAGES",
    "AddRunWatch",
    "AddWatch",
    "Command",
    "CommandError",
    "Help",
    "ListTasks",
    "ListWatches",
    "Lookup",
    "Mute",
    "MuteRuns",
    "OpenWatchForm",
    "SlackRef",
    "Unmute",
    "UnmuteRuns",
    "Unwatch",
    "UnwatchRuns",
    "Word",
    "parse",
    "parse_status",
    "parse_types",
    "tokenize",
    "validate_ep",
    "validate_name",
    "validate_request",
    "validate_task_id",
]
