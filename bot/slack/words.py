"""Words of command text: Slack's escaping undone, quotes honoured, values checked.

Shared by every sub-command parser (:mod:`bot.slack.command`, :mod:`bot.slack.watch_command`) and by
button-value decoding, so that a value is accepted or refused the same way wherever it
comes from. Pure: no I/O.

Slack sends the text with ``&``, ``<``, ``>`` encoded as entities and wraps what it
auto-links in ``<...>``: a link counts as the text the user typed (its label, else its URL);
channels, users and other mentions are kept as :class:`SlackRef` tokens for the parsers that
take them (``watch <task> #channel``) and refused by the others.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from bot.errors import CommandError
from bot.models import (
    EP_ID_MAX,
    REGISTRY_NAME_MAX,
    REGISTRY_TYPES,
    TASK_ID_MAX,
    SyncStatus,
    hidden_character,
    task_id_problem,
)
from bot.slack.text import truncate, unescape

_ECHO_MAX = 40
STATUSES_TEXT = ", ".join(s.value for s in SyncStatus)
TYPES_TEXT = ", ".join(REGISTRY_TYPES)
_TYPES_BY_KEY = {t.casefold(): t for t in REGISTRY_TYPES}
_TOKEN_RE = re.compile(
    r'(?P<space>\s+)|(?P<quote>["\u201c\u201d])|<(?P<ref>[^<>]*)>|(?P<text>[^\s"\u201c\u201d<]+|<)'
)


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


# --- validating values ----------------------------------------------------------------------


def _check_chars(what: str, value: str) -> None:
    # Control characters and lone surrogates cannot be sent to HSS or shown sensibly.
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in value):
        raise CommandError(f"The {what} contains control characters; use printable text only.")
    # Invisible and text-direction marks match nothing anyone can see, and echoed back they
    # turn the rest of a reply's line around.
    hidden = hidden_character("".join(ch for ch in value if unicodedata.category(ch) == "Cf"))
    if hidden is not None:
        raise CommandError(f"The {what} contains {hidden}; use visible characters only.")


def _validate_text(value: str, *, what: str, maximum: int, empty: str) -> str:
    """Non-blank, at most ``maximum`` characters, printable: what every text value needs."""
    if not value.strip():
        raise CommandError(empty)
    if len(value) > maximum:
        raise CommandError(f'{what} "{echo(value)}" is too long: at most {maximum} characters.')
    _check_chars(what.lower(), value)
    return value


def validate_task_id(value: str, *, usage: str = "") -> str:
    """A task id as typed, a button value or a CLI argument: the one rule for all of them
    (:func:`bot.models.task_id_problem`), checked before anything is looked up."""
    empty = "The task id is empty." + (f" Usage: {usage}" if usage else "")
    if not value.strip():
        raise CommandError(empty)
    if len(value) > TASK_ID_MAX:
        raise CommandError(
            f'Task id "{echo(value)}" is too long: at most {TASK_ID_MAX} characters.'
        )
    problem = task_id_problem(value)
    if problem is not None:
        raise CommandError(problem)
    return value


def validate_name(value: str) -> str:
    empty = 'name= needs a registry name, e.g. name=harbor-prod or name="my reg".'
    return _validate_text(value, what="Registry name", maximum=REGISTRY_NAME_MAX, empty=empty)


def validate_ep(value: str) -> str:
    empty = "ep= needs an enterprise project id, e.g. ep=0 or ep=all_granted_eps."
    return _validate_text(value, what="Enterprise project id", maximum=EP_ID_MAX, empty=empty)


def parse_status(value: str) -> SyncStatus:
    try:
        return SyncStatus(value.casefold())
    except ValueError:
        raise CommandError(f'Unknown status "{echo(value)}". Use one of {STATUSES_TEXT}.') from None


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
                f'Unknown registry type "{echo(item.strip())}". Use any of {TYPES_TEXT}, '
                "comma-separated."
            )
        types.add(canonical)
    if not types:
        raise CommandError(f"type= needs at least one of {TYPES_TEXT}, comma-separated.")
    return frozenset(types)
