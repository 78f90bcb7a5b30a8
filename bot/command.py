"""Parse ``/hss-sync`` text into a :data:`Command`.

Grammar (words are separated by whitespace; option keys, the status and registry types are
case-insensitive)::

    /hss-sync                                   -> Help()
    /hss-sync help                              -> Help()
    /hss-sync <task_id> [finished|running|failed] [type=T1,T2,...] [name=<registry>]
              [ep=<enterprise_project_id>]      -> Lookup(LookupRequest(...))

Words may be quoted with ``"..."`` (or the curly quotes that phones and macOS substitute) to
hold spaces: ``name="prod harbor"``. Slack sends the text with ``&``, ``<``, ``>`` encoded as
entities and wraps what it auto-links in ``<...>``: a link counts as the text the user typed
(its label, else its URL); channels, users and other mentions are kept as :class:`SlackRef`
tokens so a future ``watch <task> #channel`` can use them, and are refused by a lookup.

Sub-commands are dispatched on the first word through :data:`_SUBCOMMANDS`; a new one is a
frozen dataclass, a ``_parse_x(words)`` function and a table entry. Any other first word is
a task id, so a task literally named like a sub-command cannot be looked up (HSS ids are
UUID-like, so this costs nothing in practice).

Every failure raises :class:`~bot.errors.CommandError` with what was wrong and what is
accepted; echoed input is shortened so the message stays small.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from bot.errors import CommandError
from bot.models import (
    EP_ID_MAX,
    REGISTRY_NAME_MAX,
    REGISTRY_TYPES,
    TASK_ID_MAX,
    LookupRequest,
    SyncStatus,
)
from bot.mrkdwn import truncate, unescape

USAGE = (
    "/hss-sync <task_id> [finished|running|failed] [type=Harbor,Jfrog,...] "
    "[name=<registry>] [ep=<enterprise_project_id>]"
)
#: A task id, a status and three options.
MAX_WORDS = 5
_ECHO_MAX = 40
_STATUSES = ", ".join(s.value for s in SyncStatus)
_TYPES_BY_KEY = {t.casefold(): t for t in REGISTRY_TYPES}
_TYPES_TEXT = ", ".join(REGISTRY_TYPES)
_TOKEN_RE = re.compile(
    r'(?P<space>\s+)|(?P<quote>["\u201c\u201d])|<(?P<ref>[^<>]*)>|(?P<text>[^\s"\u201c\u201d<]+|<)'
)


@dataclass(frozen=True, slots=True)
class Help:
    """Show usage."""


@dataclass(frozen=True, slots=True)
class Lookup:
    """Show a task's registries, filtered."""

    request: LookupRequest


Command = Help | Lookup


@dataclass(frozen=True, slots=True)
class SlackRef:
    """A ``<...>`` reference Slack inserted: ``kind`` is ``#`` (channel), ``@`` (user) or
    ``!`` (special mention, user group, date); ``ident`` the id, ``label`` the shown text."""

    kind: str
    ident: str
    label: str = ""


@dataclass(frozen=True, slots=True)
class Word:
    """One whitespace-separated word: unescaped, quotes removed; ``ref`` when it was a lone
    Slack channel/user/special reference."""

    text: str
    ref: SlackRef | None = None


def echo(value: str) -> str:
    """User input shortened for quoting back in an error message."""
    return truncate(value, _ECHO_MAX)


# --- tokenizing ---------------------------------------------------------------------------


def _link_text(inner: str) -> str | SlackRef:
    """What a ``<inner>`` reference stands for: typed text for links, a ref otherwise."""
    target, _, label = inner.partition("|")
    if target[:1] in ("#", "@", "!"):
        return SlackRef(kind=target[0], ident=unescape(target[1:]), label=unescape(label))
    if label:
        return unescape(label)
    # Slack auto-links e-mail addresses as <mailto:a@b|a@b>; without a label keep the URL.
    return unescape(target)


class _WordBuilder:
    """Accumulates the pieces of the current word while scanning."""

    def __init__(self) -> None:
        self.words: list[Word] = []
        self.pieces: list[str | SlackRef] = []
        self.started = False

    def add(self, piece: str | SlackRef) -> None:
        self.pieces.append(piece)
        self.started = True

    def flush(self) -> None:
        if not self.started:
            return
        refs = [p for p in self.pieces if isinstance(p, SlackRef)]
        text = "".join(p for p in self.pieces if isinstance(p, str))
        if refs and (text or len(refs) > 1):
            raise CommandError(
                "A channel or mention must be a word of its own; "
                "quote names that contain one, or write them without it."
            )
        self.words.append(Word(text=text, ref=refs[0] if refs else None))
        self.pieces = []
        self.started = False


def tokenize(text: str) -> list[Word]:
    """Split Slack command text into words, honouring quotes and ``<...>`` references."""
    builder = _WordBuilder()
    in_quote = False
    for match in _TOKEN_RE.finditer(text):
        kind = match.lastgroup
        if kind == "space":
            if in_quote:
                builder.add(match.group())
            else:
                builder.flush()
        elif kind == "quote":
            in_quote = not in_quote
            builder.started = True  # `name=""` is an empty value, not a missing one
        elif kind == "ref":
            builder.add(_link_text(match.group("ref")))
        else:
            builder.add(unescape(match.group()))
    if in_quote:
        raise CommandError('Unbalanced quote: close every " you open, e.g. name="my registry".')
    builder.flush()
    return builder.words


# --- validating values (shared with button-value decoding in bot.action_value) -------------


def _check_chars(what: str, value: str) -> None:
    # Control characters and lone surrogates cannot be sent to HSS or shown sensibly.
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in value):
        raise CommandError(f"The {what} contains control characters; use printable text only.")


def validate_task_id(value: str) -> str:
    if not value.strip():
        raise CommandError(f"The task id is empty. Usage: {USAGE}")
    if len(value) > TASK_ID_MAX:
        raise CommandError(
            f'Task id "{echo(value)}" is too long: at most {TASK_ID_MAX} characters.'
        )
    _check_chars("task id", value)
    return value


def validate_name(value: str) -> str:
    if not value.strip():
        raise CommandError('name= needs a registry name, e.g. name=harbor-prod or name="my reg".')
    if len(value) > REGISTRY_NAME_MAX:
        raise CommandError(
            f'Registry name "{echo(value)}" is too long: at most {REGISTRY_NAME_MAX} characters.'
        )
    _check_chars("registry name", value)
    return value


def validate_ep(value: str) -> str:
    if not value.strip():
        raise CommandError("ep= needs an enterprise project id, e.g. ep=0 or ep=all_granted_eps.")
    if len(value) > EP_ID_MAX:
        raise CommandError(
            f'Enterprise project id "{echo(value)}" is too long: at most {EP_ID_MAX} characters.'
        )
    _check_chars("enterprise project id", value)
    return value


def parse_status(value: str) -> SyncStatus:
    try:
        return SyncStatus(value.casefold())
    except ValueError:
        raise CommandError(f'Unknown status "{echo(value)}". Use one of {_STATUSES}.') from None


def parse_types(items: Iterable[str]) -> frozenset[str]:
    """Canonical registry types from case-insensitive names; empty items are skipped."""
    types: set[str] = set()
    for item in items:
        key = item.strip().casefold()
        if not key:
            continue
        canonical = _TYPES_BY_KEY.get(key)
        if canonical is None:
            raise CommandError(
                f'Unknown registry type "{echo(item.strip())}". Use any of {_TYPES_TEXT}, '
                "comma-separated."
            )
        types.add(canonical)
    if not types:
        raise CommandError(f"type= needs at least one of {_TYPES_TEXT}, comma-separated.")
    return frozenset(types)


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
        raise CommandError(f'A second status "{echo(word)}": give at most one of {_STATUSES}.')
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


#: First word (case-insensitive) -> parser of all words. Later: watch, unwatch, watches, ...
_SUBCOMMANDS: dict[str, Callable[[list[Word]], Command]] = {
    "help": _parse_help,
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
        raise CommandError(f"Unknown status. Use one of {_STATUSES}.")
    unknown = request.types - frozenset(REGISTRY_TYPES)
    if unknown:
        raise CommandError(f"Unknown registry type. Use any of {_TYPES_TEXT}.")
    if request.name is not None:
        validate_name(request.name)
    if request.ep is not None:
        validate_ep(request.ep)
    return request
