"""Plain data shared by every layer: registries, filters, answers; and what a task id may be."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from enum import StrEnum


class SyncStatus(StrEnum):
    FINISHED = "finished"
    RUNNING = "running"
    FAILED = "failed"


class HssApi(StrEnum):
    """The HSS APIs the bot calls. HSS counts its 5 calls a minute per API, so each has a
    budget of its own; the values are the ``api`` label of metrics and log lines."""

    REGISTRIES = "registries"  # ListAssociateRegistries: one task's registries
    TASKS = "tasks"  # ListImageScanTask: the sync runs (tasks) themselves


#: Shown when the mirror knows a registry left a filtered view but not where it went.
UNKNOWN_STATUS = "unknown"

#: The API's registry types, spelled as the API spells them.
REGISTRY_TYPES: tuple[str, ...] = (
    "SwrPrivate",
    "SwrShared",
    "SwrEnterprise",
    "Harbor",
    "Jfrog",
    "Other",
)

TASK_ID_MAX = 64
REGISTRY_NAME_MAX = 128
EP_ID_MAX = 256
PROJECT_ID_MAX = 256
PAGE_LIMIT_MIN = 10
PAGE_LIMIT_MAX = 200
OFFSET_MAX = 2_000_000

#: Path segments an HTTP client resolves ("." and ".."): as a task id, another HSS path.
DOT_SEGMENTS = frozenset({".", ".."})
#: Letters, marks and symbols that show as nothing (Hangul fillers, variation selectors, the
#: combining grapheme joiner, the blank Braille pattern): Unicode's default-ignorable code
#: points outside the C and Z categories, plus U+2800.
_BLANK_LOOKING = (
    (0x034F, 0x034F),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x2800, 0x2800),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFFA0, 0xFFA0),
    (0xE0100, 0xE01EF),
)
#: What a task id may be, for the sentences that refuse one.
TASK_ID_RULE = (
    f"Task ids are 1-{TASK_ID_MAX} visible characters (letters, digits, punctuation, symbols): "
    'no spaces, control characters, invisible or text-direction marks, and not "." or "..".'
)
_BIDI_CLASSES = frozenset({"LRE", "RLE", "LRO", "RLO", "PDF", "LRI", "RLI", "FSI", "PDI"})
_BIDI_MARKS = frozenset("\u200e\u200f\u061c")


def hidden_character(value: str) -> str | None:
    """The first character of ``value`` that does not show as itself, named, with what it is
    (``U+200B ZERO WIDTH SPACE, an invisible character``); None if there is none."""
    for ch in value:
        kind = _hidden_kind(ch)
        if kind is not None:
            name = unicodedata.name(ch, "")
            return f"U+{ord(ch):04X}{' ' + name if name else ''}, {kind}"
    return None


def _hidden_kind(ch: str) -> str | None:
    category = unicodedata.category(ch)
    if category == "Cc":
        return "a control character"
    if unicodedata.bidirectional(ch) in _BIDI_CLASSES or ch in _BIDI_MARKS:
        return "a text-direction mark"
    if category == "Cf":
        return "an invisible character"
    if category[0] == "Z" or ch.isspace():
        return "a space"
    if category[0] == "C":  # private use, unassigned, surrogate: nothing anyone can read
        return "a character that cannot be shown"
    point = ord(ch)
    if any(low <= point <= high for low, high in _BLANK_LOOKING):
        return "a blank-looking character"
    return None


def task_id_problem(task_id: str) -> str | None:
    """Why ``task_id`` cannot be a task id, in a sentence that says what is accepted; None when
    it can. Length is the caller's check. Refused: characters that do not show (ids that look
    the same must be the same id, and a person must see what was asked) and dot segments
    (``/tasks/../registries`` is another API)."""
    if task_id in DOT_SEGMENTS:
        return f'The task id cannot be "{task_id}". {TASK_ID_RULE}'
    hidden = hidden_character(task_id)
    if hidden is not None:
        return f"The task id contains {hidden}. {TASK_ID_RULE}"
    return None


@dataclass(frozen=True, slots=True)
class Registry:
    """One row of ListAssociateRegistries; missing API fields become empty strings."""

    registry_id: str
    registry_name: str = ""
    registry_type: str = ""
    sync_status: str = ""
    failed_reason: str = ""

    def as_api_dict(self) -> dict[str, str]:
        return {
            "registry_id": self.registry_id,
            "registry_name": self.registry_name,
            "registry_type": self.registry_type,
            "sync_status": self.sync_status,
            "failed_reason": self.failed_reason,
        }


@dataclass(frozen=True, slots=True)
class RegistryPage:
    """One page as HSS returned it."""

    total_num: int
    registries: tuple[Registry, ...]
    request_id: str = ""
    #: Epoch time the request was sent (after any wait for a budget slot): the data's age.
    sent_at: float = 0.0


@dataclass(frozen=True, slots=True)
class ApiFilter:
    """The server-side filters of one ListAssociateRegistries query (``None``/empty = all)."""

    sync_status: SyncStatus | None = None
    registry_types: frozenset[str] = frozenset()
    registry_name: str | None = None

    @property
    def is_full(self) -> bool:
        return self.sync_status is None and not self.registry_types and self.registry_name is None


@dataclass(frozen=True, slots=True)
class TaskRef:
    """Which task: HSS scopes tasks by project and enterprise project."""

    project_id: str
    task_id: str
    enterprise_project_id: str | None = None


@dataclass(frozen=True, slots=True)
class LookupRequest:
    """What a person asked for: a task and local filters."""

    task_id: str
    status: SyncStatus | None = None
    types: frozenset[str] = frozenset()
    name: str | None = None
    ep: str | None = None

    @property
    def api_filter(self) -> ApiFilter:
        return ApiFilter(
            sync_status=self.status, registry_types=self.types, registry_name=self.name
        )


@dataclass(frozen=True, slots=True)
class Totals:
    """Registries per status; ``None`` where the mirror does not know the count.
    ``size`` is the task's registry count when known even though some statuses are not."""

    finished: int | None = None
    running: int | None = None
    failed: int | None = None
    unknown: int = 0
    size: int | None = None

    @property
    def total(self) -> int | None:
        parts = (self.finished, self.running, self.failed)
        if any(p is None for p in parts):
            return self.size
        return sum(p for p in parts if p is not None) + self.unknown


@dataclass(frozen=True, slots=True)
class Answer:
    """Everything a renderer needs to show one lookup.

    ``registries`` holds every matching registry (the renderer pages); ``fetched_at`` is the
    epoch time of the data shown, ``None`` when nothing is known yet.
    """

    request: LookupRequest
    registries: tuple[Registry, ...] = ()
    totals: Totals = field(default_factory=Totals)
    fetched_at: float | None = None

    @property
    def has_data(self) -> bool:
        return self.fetched_at is not None
