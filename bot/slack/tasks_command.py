"""The ``tasks`` sub-command's grammar, pure (the CLI's ``tasks`` checks its flags here too)::

    /hss-sync tasks [auto|manual] [name=<text>] [failed]        -> ListTasks

Words come in any order, each at most once; ``name=`` matches run names case-insensitively
(a substring), on the bot's side: every filter is answered from the one list of runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.errors import CommandError
from bot.models import hidden_character
from bot.runs import RUN_NAME_MAX, RunKind
from bot.slack.words import Word, echo

TASKS_USAGE = "/hss-sync tasks [auto|manual] [name=<text>] [failed]"
#: ``tasks`` and at most a kind, a name and ``failed``.
MAX_WORDS = 4
#: What a kind may be written as (case-insensitive): the words and the API's values.
KINDS: dict[str, RunKind] = {
    "auto": RunKind.AUTO,
    "manual": RunKind.MANUAL,
    RunKind.AUTO.value.casefold(): RunKind.AUTO,
    RunKind.MANUAL.value.casefold(): RunKind.MANUAL,
}
KIND_NAMES = {RunKind.AUTO: "auto", RunKind.MANUAL: "manual"}


@dataclass(frozen=True, slots=True)
class ListTasks:
    """List the sync runs, newest first, filtered."""

    kind: RunKind | None = None
    name: str | None = None
    failed: bool = False


def parse_kind(value: str) -> RunKind:
    kind = KINDS.get(value.strip().casefold())
    if kind is None:
        raise CommandError(f'Unknown run kind "{echo(value)}": use auto or manual.')
    return kind


def validate_run_name(value: str) -> str:
    """A run-name filter: 1-256 characters that show as themselves (plain spaces allowed)."""
    if not value.strip():
        raise CommandError('name= needs part of a run name, e.g. name=nightly or name="my sync".')
    if len(value) > RUN_NAME_MAX:
        raise CommandError(
            f'Run name "{echo(value)}" is too long: at most {RUN_NAME_MAX} characters.'
        )
    hidden = hidden_character(value.replace(" ", ""))
    if hidden is not None:
        raise CommandError(
            f"The run name contains {hidden}; use visible characters and plain spaces only."
        )
    return value


def parse_tasks(words: list[Word]) -> ListTasks:
    if len(words) > MAX_WORDS:
        raise CommandError(
            f"Too many words ({len(words)}): tasks takes at most a kind, name= and failed. "
            f"Quote names with spaces. Usage: {TASKS_USAGE}"
        )
    kind: RunKind | None = None
    name: str | None = None
    failed = False
    seen: set[str] = set()
    for word in words[1:]:
        if word.ref is not None:
            shown = word.ref.label or word.ref.ident
            raise CommandError(
                f'"{echo(word.ref.kind + shown)}" is not accepted here: tasks takes no channels '
                f"or mentions. Usage: {TASKS_USAGE}"
            )
        text = word.text
        key, sep, value = text.partition("=")
        slot = "name" if sep else ("failed" if text.casefold() == "failed" else "kind")
        if slot == "kind" and text.casefold() not in KINDS:
            raise CommandError(
                f'Unexpected "{echo(text)}": tasks takes auto or manual, name=<text> and '
                f"failed. Usage: {TASKS_USAGE}"
            )
        if slot in seen:
            raise CommandError(f'"{echo(text)}" repeats a filter: give each one once.')
        seen.add(slot)
        if sep and key.casefold() != "name":
            raise CommandError(
                f'Unknown option "{echo(key)}=": tasks takes name=. Usage: {TASKS_USAGE}'
            )
        if sep:
            name = validate_run_name(value)
        elif slot == "failed":
            failed = True
        else:
            kind = KINDS[text.casefold()]
    return ListTasks(kind=kind, name=name, failed=failed)
