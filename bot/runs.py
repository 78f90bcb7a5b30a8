"""Sync runs as HSS lists them (ListImageScanTask, ``type=image_sync``): plain data, pure.

Every scheduled sync is a task of its own, with its own ``task_id``, which
ListAssociateRegistries answers for. Field names are the SDK's (``ImageScanTaskInfo``), so
what the bot prints and stores reads like the API. Times are milliseconds since the epoch,
as HSS sends them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

#: ``task_status`` of a run that ended without finishing, and what it means.
ABORTED_STATUSES: dict[int, str] = {-1: "stopped", -2: "timed out", -3: "error"}
#: ``task_status`` of a finished run (0-99 is the progress of a running one).
DONE_STATUS = 100
#: HSS lists at most this many runs (``total_num`` is capped there).
MAX_LISTED_RUNS = 1000
#: Longest ``task_name`` filter HSS accepts.
RUN_NAME_MAX = 256
#: The API's names of a run's fields, in its order: what ``tasks --json`` prints.
API_FIELDS = (
    "task_id",
    "task_name",
    "task_type",
    "begin_time",
    "end_time",
    "task_status",
    "failed_num",
    "success_num",
    "total_num",
)
#: Every field a :class:`SyncRun` keeps: the API's and the reason of a run that failed.
RUN_FIELDS = (*API_FIELDS, "failed_reason")


class RunKind(StrEnum):
    """The API's ``task_type`` values for image-sync runs."""

    AUTO = "autoSync"  # scheduled (by default daily)
    MANUAL = "manualSync"  # started by someone


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncRun:
    """One ``ImageScanTaskInfo`` of an image-sync run; missing fields are the defaults."""

    task_id: str
    task_name: str = ""
    #: A ``RunKind`` value, or whatever HSS sent (kept as given).
    task_type: str = ""
    begin_time: int | None = None
    #: None or 0 while the run is going.
    end_time: int | None = None
    #: Progress 0-100 (100 done); -1 stopped, -2 timed out, -3 error.
    task_status: int | None = None
    failed_num: int = 0
    success_num: int = 0
    total_num: int = 0
    failed_reason: str = ""

    @property
    def kind(self) -> RunKind | None:
        try:
            return RunKind(self.task_type)
        except ValueError:
            return None

    @property
    def ended(self) -> bool:
        """Finished, stopped, timed out or failed; by ``task_status`` when HSS sent one (an
        end time alone is believed only without it)."""
        status = self.task_status
        if status is None or status > DONE_STATUS:
            return bool(self.end_time)
        return status == DONE_STATUS or status < 0

    @property
    def outcome(self) -> str:
        """``running 40%``, ``finished``, ``stopped``, ``timed out``, ``error``; ``ended`` or
        ``unknown`` when HSS sent no usable status."""
        status = self.task_status
        if status is None or status > DONE_STATUS:
            return "ended" if self.end_time else "unknown"
        if status == DONE_STATUS:
            return "finished"
        if status < 0:
            return ABORTED_STATUSES.get(status, f"ended ({status})")
        return f"running {status}%"

    def as_api_dict(self) -> dict[str, str | int | None]:
        """The run with the API's field names (what ``--json`` prints)."""
        return {name: getattr(self, name) for name in RUN_FIELDS}


@dataclass(frozen=True, slots=True)
class RunFilter:
    """What a list call asks HSS for (None: any)."""

    kind: RunKind | None = None
    #: Matched against ``task_name`` by HSS (fuzzy, on its side).
    name: str | None = None


@dataclass(frozen=True, slots=True)
class RunPage:
    """One page of runs as HSS returned it."""

    total_num: int
    runs: tuple[SyncRun, ...]
    request_id: str = ""
    #: Epoch time (s) the request was sent, after any wait for a budget slot: the data's age.
    sent_at: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchedRuns:
    """Every run of one filtered list, complete and de-duplicated, newest first.

    ``calls`` counts the HTTP attempts made (retries included); times are epoch seconds,
    ``started_at`` when the first page was sent (the data is as old as that)."""

    runs: tuple[SyncRun, ...]
    total_num: int
    calls: int
    started_at: float
    finished_at: float


def _newest_key(run: SyncRun) -> tuple[bool, int, str]:
    return (run.begin_time is None, -(run.begin_time or 0), run.task_id)


def newest_first(runs: Iterable[SyncRun]) -> tuple[SyncRun, ...]:
    """By ``begin_time``, newest first (runs without one last), then by ``task_id``."""
    return tuple(sorted(runs, key=_newest_key))


def latest(runs: Iterable[SyncRun], kind: RunKind | None = None) -> SyncRun | None:
    """The newest run of ``kind`` (None: of any kind)."""
    matching = [run for run in runs if kind is None or run.kind == kind]
    return min(matching, key=_newest_key, default=None)
