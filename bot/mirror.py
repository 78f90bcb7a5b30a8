"""What the bot knows about one task, and the pure rules for updating and using it.

A ``Snapshot`` holds every registry the bot has seen for a (project, enterprise project,
task) and the *views* it holds complete: each view is a server-side filter that was fetched
in full at some time. A query is answered from the mirror when a fresh view covers it; when
none does, ``choose_view`` picks the server-side filter that answers it in the fewest calls.

Only complete fetches are merged (callers discard partial ones), so a registry is never
recorded as gone or changed because a fetch was cut short.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from bot.models import (
    PAGE_LIMIT_MAX,
    UNKNOWN_STATUS,
    ApiFilter,
    LookupRequest,
    Registry,
    SyncStatus,
    Totals,
)

REMOVED = "removed"

#: Work on snapshots bigger than this (merging, coding, sorting) runs in a worker thread:
#: a 100,000-row task takes about a second of CPU, and the event loop must keep acking
#: slash commands meanwhile. Smaller ones are not worth the thread hop.
LARGE_SNAPSHOT = 2000

#: Display order: what people look for first.
_STATUS_ORDER = {
    SyncStatus.FAILED.value: 0,
    SyncStatus.RUNNING.value: 1,
    UNKNOWN_STATUS: 2,
    SyncStatus.FINISHED.value: 3,
}


@dataclass(frozen=True, slots=True)
class Row:
    """One registry as last seen. ``known_status`` is the last definite status, kept when
    ``status`` became unknown (it left a filtered view), so flips compare definite states."""

    registry_id: str
    name: str
    type: str
    status: str
    reason: str
    seen_at: float
    known_status: str = ""

    def as_registry(self) -> Registry:
        return Registry(self.registry_id, self.name, self.type, self.status, self.reason)


@dataclass(frozen=True, slots=True)
class View:
    """A server-side filter fetched completely: ``fetched_at`` is when the fetch started
    (the conservative age of its data), ``total`` its total_num."""

    flt: ApiFilter
    fetched_at: float
    total: int


@dataclass(frozen=True, slots=True)
class Change:
    """A status change the mirror saw; ``new`` may be ``REMOVED``."""

    registry_id: str
    name: str
    type: str
    old: str
    new: str
    reason: str
    at: float


@dataclass(slots=True)
class Snapshot:
    rows: dict[str, Row] = field(default_factory=dict)
    views: dict[str, View] = field(default_factory=dict)
    generation: int = 0
    #: How many registries the task had when last counted (a full view or a size probe).
    task_total: int | None = None


def view_key(flt: ApiFilter) -> str:
    """A stable name for a filter (view keys in storage and lock names)."""
    status = flt.sync_status.value if flt.sync_status else ""
    types = ",".join(sorted(flt.registry_types))
    return f"{status}|{types}|{flt.registry_name or ''}"


def parse_view_key(key: str) -> ApiFilter:
    status, types, name = key.split("|", 2)
    return ApiFilter(
        sync_status=SyncStatus(status) if status else None,
        registry_types=frozenset(t for t in types.split(",") if t),
        registry_name=name or None,
    )


def name_matches(pattern: str | None, name: str) -> bool:
    """The API's registry_name filter: case-insensitive substring (as the simulator does)."""
    return pattern is None or pattern.casefold() in name.casefold()


def row_matches(flt: ApiFilter, row: Row) -> bool:
    if flt.sync_status is not None and row.status != flt.sync_status.value:
        return False
    if flt.registry_types and row.type not in flt.registry_types:
        return False
    return name_matches(flt.registry_name, row.name)


def covers(view: ApiFilter, query: ApiFilter) -> bool:
    """True when every registry matching ``query`` also matches ``view``."""
    if view.sync_status is not None and view.sync_status != query.sync_status:
        return False
    if view.registry_types and not (
        query.registry_types and query.registry_types <= view.registry_types
    ):
        return False
    if view.registry_name is None:
        return True
    return query.registry_name is not None and name_matches(view.registry_name, query.registry_name)


def covering_view(snap: Snapshot, query: ApiFilter) -> View | None:
    """The freshest complete view that answers ``query``."""
    views = [v for v in snap.views.values() if covers(v.flt, query)]
    return max(views, key=lambda v: v.fetched_at, default=None)


def is_fresh(view: View | None, *, now: float, max_age: float) -> bool:
    return view is not None and now - view.fetched_at < max_age


# --- merging a complete fetch ---


def merge(
    snap: Snapshot,
    flt: ApiFilter,
    registries: Sequence[Registry],
    *,
    total: int,
    started_at: float,
    finished_at: float,
    task_total: int | None = None,
) -> tuple[Snapshot, list[Change]]:
    """Fold one complete fetch of ``flt`` into a copy of ``snap``; return it and the changes.

    ``task_total`` is the task's size when a probe learned it on the way to a narrower view.

    Rows seen by a fetch that started after this one are left alone (they are newer).
    Known registries that match ``flt`` but did not come back left the view: with no filter
    they are gone, otherwise their status is unknown until a wider view sees them.
    """
    rows = dict(snap.rows)
    changes: list[Change] = []
    seen: set[str] = set()
    for reg in registries:
        seen.add(reg.registry_id)
        old = rows.get(reg.registry_id)
        if old is not None and old.seen_at > started_at:
            continue
        new = _row_from(reg, old, finished_at)
        rows[reg.registry_id] = new
        change = _status_change(old, new, finished_at)
        if change is not None:
            changes.append(change)
    changes.extend(_absent(rows, flt, seen, started_at, finished_at))
    views = dict(snap.views)
    done = views.get(view_key(flt))
    # An overlapping fetch of the same view that started later already landed: keep its age.
    if done is None or done.fetched_at <= started_at:
        views[view_key(flt)] = View(flt=flt, fetched_at=started_at, total=total)
    size = total if flt.is_full else task_total if task_total is not None else snap.task_total
    merged = Snapshot(rows=rows, views=views, generation=snap.generation + 1, task_total=size)
    return merged, changes


def with_task_size(snap: Snapshot, total: int) -> Snapshot:
    """``snap`` knowing the task's size from a first page (its views and rows unchanged)."""
    return replace(snap, task_total=total, generation=snap.generation + 1)


def _row_from(reg: Registry, old: Row | None, at: float) -> Row:
    known = reg.sync_status or (old.known_status if old else "")
    return Row(
        registry_id=reg.registry_id,
        name=reg.registry_name,
        type=reg.registry_type,
        status=reg.sync_status or UNKNOWN_STATUS,
        reason=reg.failed_reason,
        seen_at=at,
        known_status=known,
    )


def _status_change(old: Row | None, new: Row, at: float) -> Change | None:
    # A registry seen for the first time is a baseline, not a change.
    if old is None or not old.known_status or new.status == UNKNOWN_STATUS:
        return None
    if old.known_status == new.status:
        return None
    return Change(new.registry_id, new.name, new.type, old.known_status, new.status, new.reason, at)


def _absent(
    rows: dict[str, Row], flt: ApiFilter, seen: set[str], started_at: float, at: float
) -> list[Change]:
    changes: list[Change] = []
    for rid, row in list(rows.items()):
        if rid in seen or row.seen_at > started_at or not row_matches(flt, row):
            continue
        if flt.is_full:
            del rows[rid]
            changes.append(
                Change(rid, row.name, row.type, row.known_status or row.status, REMOVED, "", at)
            )
        else:
            # Leaving the view is an observation too: an older fetch must not undo it.
            rows[rid] = replace(row, status=UNKNOWN_STATUS, reason="", seen_at=at)
    return changes


# --- answering ---


def sort_key(row: Row) -> tuple[int, str, str]:
    return (_STATUS_ORDER.get(row.status, 2), row.name.casefold(), row.registry_id)


def matching_rows(snap: Snapshot, request: LookupRequest) -> list[Row]:
    flt = request.api_filter
    return sorted((r for r in snap.rows.values() if row_matches(flt, r)), key=sort_key)


def totals(snap: Snapshot) -> Totals:
    """Counts per status where the mirror holds every registry of that status."""
    counts = {s.value: 0 for s in SyncStatus}
    unknown = 0
    for row in snap.rows.values():
        if row.status in counts:
            counts[row.status] += 1
        else:
            unknown += 1
    has_full = any(v.flt.is_full for v in snap.views.values())

    def known(status: SyncStatus) -> int | None:
        whole = has_full or view_key(ApiFilter(sync_status=status)) in snap.views
        return counts[status.value] if whole else None

    return Totals(
        finished=known(SyncStatus.FINISHED),
        running=known(SyncStatus.RUNNING),
        failed=known(SyncStatus.FAILED),
        unknown=unknown if has_full else 0,
        size=snap.task_total,
    )


# --- planning calls ---


def pages(count: int) -> int:
    return max(1, math.ceil(count / PAGE_LIMIT_MAX))


def task_size(snap: Snapshot) -> int | None:
    """How many registries the task has, if a full view or a size probe ever told us."""
    return snap.task_total


def _estimate(snap: Snapshot, flt: ApiFilter) -> int | None:
    """Estimated matches for ``flt``: its own last total, else a local count when some view
    holds every registry it could match, else unknown."""
    own = snap.views.get(view_key(flt))
    if own is not None:
        return own.total
    if covering_view(snap, flt) is not None:
        return sum(1 for r in snap.rows.values() if row_matches(flt, r))
    return None


def choose_view(snap: Snapshot, query: ApiFilter, *, size_hint: int | None = None) -> ApiFilter:
    """The server-side filter that answers ``query`` in the fewest calls.

    Candidates from widest to narrowest: everything, the query's status alone, the query
    itself. Ties go to the widest, since it answers more later questions for the same price
    (a task of up to 200 registries is always fetched whole: one call). With no idea of the
    task's size we fetch everything: the first page tells the size and the caller re-plans.
    """
    size = size_hint if size_hint is not None else task_size(snap)
    if size is None:
        return ApiFilter()
    candidates = _candidates(query)
    best: tuple[float, int] | None = None
    chosen = candidates[0]
    for rank, flt in enumerate(candidates):
        cost = _cost(snap, flt, size)
        if best is None or (cost, rank) < best:
            best, chosen = (cost, rank), flt
    return chosen


def _cost(snap: Snapshot, flt: ApiFilter, size: int) -> float:
    """Calls to fetch ``flt``. A filter of unknown size returns at most the whole task and
    usually far less, so on a task of several pages it ranks just below fetching everything
    (and above any filter known to be cheaper); otherwise the re-plan after a size probe
    could never pick a narrower view."""
    whole = pages(size)
    if flt.is_full:
        return whole
    estimate = _estimate(snap, flt)
    if estimate is not None:
        return pages(estimate)
    return whole - 0.5 if whole > 1 else whole


def sampled_pages(sample: Sequence[Registry], total: int, flt: ApiFilter) -> int:
    """Pages a fetch of ``flt`` would take, estimated from ``sample`` (a page of the whole
    task) and the task's size: a guess for planning, never for answering."""
    if not sample:
        return pages(total)
    hits = sum(1 for reg in sample if row_matches(flt, _row_from(reg, None, 0.0)))
    return pages(math.ceil(hits / len(sample) * total))


def _candidates(query: ApiFilter) -> list[ApiFilter]:
    out = [ApiFilter()]
    if query.sync_status is not None:
        out.append(ApiFilter(sync_status=query.sync_status))
    if query.registry_types or query.registry_name is not None:
        out.append(query)
    return out


def registries_of(rows: Iterable[Row]) -> tuple[Registry, ...]:
    return tuple(r.as_registry() for r in rows)
