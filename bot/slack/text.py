"""Slack text: untrusted text made safe, and the tokens and phrases the bot writes.

The one home of escaping and unescaping, code spans and truncation, Slack's date token, the
user and conversation id patterns, and the phrase for how old data is.


Slack treats exactly ``&``, ``<`` and ``>`` as control characters in mrkdwn and in a
message's fallback ``text``: ``<!channel>``, ``<@U1>``, ``<!subteam^S1>`` ping people and
``<https://x|innocent>`` hides a link. :func:`escape` encodes those three and nothing else.

Formatting characters (``*``, ``_``, ``~``, backtick) cannot be escaped in mrkdwn at all. Our
decision: untrusted text that must stay literal (registry names, failure reasons) is shown in
an inline code span via :func:`code`, where Slack applies no ``*``/``_``/``~`` formatting. The
one character that can break a code span is the backtick itself, so :func:`code` replaces it
with a look-alike (U+02CB) and folds newlines to spaces (a code span cannot cross lines).

Lengths: escaping grows text (``<`` becomes four characters), so the helpers here truncate
*before* escaping while measuring the *escaped* length, never cutting an entity in half. They
count UTF-16 code units, which is never less than Python's code-point count, so whatever way
Slack counts characters the result fits; and they never end a string inside a grapheme (a
surrogate pair, a base letter and its combining marks, an emoji ZWJ sequence).

Ids: :data:`USER_ID` is a person (``U...``, ``W...`` on Enterprise Grid). Two conversation
patterns, because a command can come from a DM but nobody can name one with ``#``:
:data:`CONVERSATION_ID` is any conversation a command can come from, and so where a watch can
live (``C...`` public, ``G...`` private before 2021, ``D...`` a DM); :data:`CHANNEL_ID` is a
channel Slack's ``#`` autocomplete offers (``C...``, ``G...``), all a command may name.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable
from datetime import UTC, datetime

ELLIPSIS = "…"
#: Replaces a backtick inside a code span: mrkdwn has no way to escape one there.
BACKTICK_LOOKALIKE = "\u02cb"

_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_CHARACTERS = {entity: ch for ch, entity in _ENTITIES.items()}
_ENTITY = re.compile("|".join(_CHARACTERS))
_ZWJ = "\u200d"
_LINE_BREAKS = re.compile("[\t\n\v\f\r\x1c-\x1e\x85\u2028\u2029]+")


def escape(text: str) -> str:
    """Encode ``&``, ``<`` and ``>`` as Slack entities; everything else is left alone."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def unescape(text: str) -> str:
    """Inverse of :func:`escape` (Slack sends slash-command text escaped this way)."""
    # One pass: what one entity leaves is never read again, so ``&amp;lt;`` is ``&lt;``.
    return _ENTITY.sub(lambda m: _CHARACTERS[m[0]], text)


def utf16_len(text: str) -> int:
    """Length in UTF-16 code units: the most pessimistic way Slack may count characters."""
    return sum(2 if ord(ch) > 0xFFFF else 1 for ch in text)


def _plain_cost(ch: str) -> int:
    return 2 if ord(ch) > 0xFFFF else 1


def _escaped_cost(ch: str) -> int:
    entity = _ENTITIES.get(ch)
    return len(entity) if entity is not None else _plain_cost(ch)


def _continues_cluster(ch: str) -> bool:
    """True when ``ch`` attaches to the character before it (cutting there splits a glyph)."""
    code = ord(ch)
    return (
        unicodedata.combining(ch) != 0
        or ch == _ZWJ
        or 0xFE00 <= code <= 0xFE0F  # variation selectors
        or 0x1F3FB <= code <= 0x1F3FF  # skin-tone modifiers
        or 0xE0020 <= code <= 0xE007F  # tag characters (flag sequences)
        or 0xDC00 <= code <= 0xDFFF  # low surrogate left alone in a str
    )


def _cut(text: str, budget: int, cost: Callable[[str], int]) -> int:
    """Largest index ``i`` with ``sum(cost(text[:i])) <= budget`` on a grapheme boundary."""
    used = 0
    index = 0
    while index < len(text):
        used += cost(text[index])
        if used > budget:
            break
        index += 1
    else:
        return index
    # Back off to a grapheme boundary; after a ZWJ the next emoji belongs to the same glyph.
    while index > 0 and (_continues_cluster(text[index]) or text[index - 1] == _ZWJ):
        index -= 1
    return index


def _truncate(text: str, limit: int, cost: Callable[[str], int], ellipsis: str) -> str:
    if limit < 0:
        raise ValueError("limit must not be negative")
    if sum(cost(ch) for ch in text) <= limit:
        return text
    room = limit - sum(cost(ch) for ch in ellipsis)
    if room < 0:
        return ""
    return text[: _cut(text, room, cost)] + ellipsis


def truncate(text: str, limit: int, *, ellipsis: str = ELLIPSIS) -> str:
    """Shorten ``text`` to at most ``limit`` UTF-16 units, ending in ``ellipsis`` if cut.

    For ``plain_text`` fields (headers, button labels), which Slack does not parse.
    """
    return _truncate(text, limit, _plain_cost, ellipsis)


def escape_truncated(text: str, limit: int, *, ellipsis: str = ELLIPSIS) -> str:
    """``escape(text)`` shortened so the *escaped* result is at most ``limit`` UTF-16 units.

    Truncation happens on the raw text, so an entity such as ``&lt;`` is never cut in half.
    """
    return escape(_truncate(text, limit, _escaped_cost, escape(ellipsis)))


def single_line(text: str) -> str:
    """Fold line breaks and tabs into single spaces (for text shown inline, e.g. code spans)."""
    return _LINE_BREAKS.sub(" ", text)


def code(text: str, limit: int) -> str:
    """An inline code span showing untrusted ``text`` literally, at most ``limit`` units long.

    Inside a code span Slack does not apply ``*bold*``/``_italic_``/``~strike~``; backticks
    are replaced by a look-alike because nothing else keeps them from closing the span.
    Empty text yields an empty string (an empty span would show two stray backticks).
    """
    body = escape_truncated(single_line(text).replace("`", BACKTICK_LOOKALIKE), max(limit - 2, 0))
    return f"`{body}`" if body.strip() else ""


# --- ids ---------------------------------------------------------------------------------------

#: A person: ``U...``, or ``W...`` on Enterprise Grid.
USER_ID = re.compile(r"[UW][A-Z0-9]{2,20}")
#: Any conversation a command can come from, so where a watch can live: a public channel, a
#: private one (``G...`` before 2021) or a DM (``D...``).
CONVERSATION_ID = re.compile(r"[CGD][A-Z0-9]{2,30}")
#: A channel someone can name in a command: ``#`` autocomplete offers channels, never a DM.
CHANNEL_ID = re.compile(r"[CG][A-Z0-9]{2,30}")


def channel_mention(conversation: str) -> str:
    """``<#C123>`` (Slack shows the name), or the text in a code span if it is no id."""
    return (
        f"<#{conversation}>" if CONVERSATION_ID.fullmatch(conversation) else code(conversation, 40)
    )


# --- time --------------------------------------------------------------------------------------

NO_DATA = "no data yet"
#: Each unit is used below its limit, so a unit's smallest count is 2 (90 s is "2 min"):
#: a reader never sees "1 h ago" for data nearly two hours old.
_AGE_UNITS = (("s", 1, 90), ("min", 60, 90 * 60), ("h", 3600, 48 * 3600), ("d", 86_400, math.inf))


def age(fetched_at: float | None, now: float) -> str:
    """How old data is, rounded to the nearest unit as people round (halves up): ``42 s
    ago``, ``3 min ago``, ``2 h ago``, ``3 d ago``; ``no data yet`` without data."""
    if fetched_at is None or not math.isfinite(fetched_at):
        return NO_DATA
    seconds = now - fetched_at
    if not math.isfinite(seconds) or seconds < 0:
        seconds = 0.0  # a clock running behind the data's: it is new
    unit, size = next((unit, size) for unit, size, limit in _AGE_UNITS if seconds < limit)
    return f"{math.floor(seconds / size + 0.5)} {unit} ago"


def data_age(fetched_at: float | None, now: float) -> str:
    """``data from 42 s ago``; ``no data yet`` without data."""
    shown = age(fetched_at, now)
    return shown if shown == NO_DATA else f"data from {shown}"


def date_token(
    epoch: float, fmt: str = "{date_short_pretty} {time}", *, fallback: str = "%Y-%m-%d %H:%M UTC"
) -> str:
    """Slack's date token: each reader sees ``epoch`` in their own time zone. ``fmt`` is
    Slack's format (e.g. ``{time_secs}``), ``fallback`` a strftime format for old clients, in
    UTC. Empty for a time Slack cannot show."""
    if not math.isfinite(epoch) or not 0 <= epoch < 4e10:
        return ""
    shown = datetime.fromtimestamp(epoch, UTC).strftime(fallback)
    return f"<!date^{int(epoch)}^{fmt}|{shown}>"
