"""Plain data shared by every layer: registries, filters, answers."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class SyncStatus(StrEnum):
    FINISHED = "finished"
    RUNNING = "running"
    FAILED = "failed"


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
