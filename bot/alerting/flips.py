"""Flip detection: which of the mirror's status changes deserve an alert, pure.

Rules, applied to the :class:`~bot.mirror.Change` list of one refresh of one task:

====================================  ==========================================
change                                kind
====================================  ==========================================
``running -> failed``                 FAILURE (a new alert)
``finished -> failed``                FAILURE
``failed -> finished``                RECOVERY
``running -> finished`` of a registry RECOVERY (it failed, was retried, and made
the incident saw retrying             it: see ``retrying`` in :func:`classify`)
``failed -> running``                 RETRY (a thread line, no new alert)
``* -> removed``                      REMOVED (never a recovery)
anything else                         nothing to alert
====================================  ==========================================

A watch may narrow this to some registry types and a name substring (the API's semantics,
:func:`bot.mirror.name_matches`). A registry whose new failure is its fourth or later within
an hour is *flapping*: the failure goes to the thread summary instead of alerting again.

:class:`Incident` is the state one alert message renders, built by folding each refresh's
:class:`AlertPlan` into it, so the message can always be re-rendered in place from scratch.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from bot.mirror import REMOVED, Change, name_matches
from bot.models import SyncStatus

#: How far back failures count towards flapping, in seconds.
FLAP_WINDOW = 3600.0
#: More failures than this within ``FLAP_WINDOW`` make a registry flapping.
FLAP_THRESHOLD = 3

_FAILED = SyncStatus.FAILED.value
_RUNNING = SyncStatus.RUNNING.value
_FINISHED = SyncStatus.FINISHED.value


class FlipKind(StrEnum):
    FAILURE = "failure"
    RECOVERY = "recovery"
    RETRY = "retry"
    REMOVED = "removed"


@dataclass(frozen=True, slots=True)
class Flip:
    """One registry's change worth telling people about; ``old`` is its previous status."""

    kind: FlipKind
    registry_id: str
    name: str
    type: str
    reason: str
    at: float
    old: str = ""


@dataclass(frozen=True, slots=True)
class AlertPlan:
    """What one refresh means for a watch.

    ``failures`` are alerted; ``flapping`` are failures of flapping registries (thread only),
    with ``flap_counts[registry_id]`` failures in the last hour, this one included.
    """

    failures: tuple[Flip, ...] = ()
    recoveries: tuple[Flip, ...] = ()
    retries: tuple[Flip, ...] = ()
    removed: tuple[Flip, ...] = ()
    flapping: tuple[Flip, ...] = ()
    flap_counts: Mapping[str, int] = field(default_factory=dict)

    @property
    def needs_alert(self) -> bool:
        """True when the refresh opens or re-raises an alert (not just thread news)."""
        return bool(self.failures)

    @property
    def is_empty(self) -> bool:
        return not (self.failures or self.recoveries or self.retries or self.removed) and not (
            self.flapping
        )

    def all_failures(self) -> tuple[Flip, ...]:
        """Alerted and flapping failures alike: what :func:`update_history` records."""
        return self.failures + self.flapping

    def in_order(self) -> list[Flip]:
        """Every flip, oldest first (stable), for folding into an :class:`Incident`."""
        flips = [*self.failures, *self.flapping, *self.retries, *self.recoveries, *self.removed]
        return sorted(flips, key=lambda f: f.at)


# --- classifying ------------------------------------------------------------------------------


def kind_of(change: Change, *, retrying: Collection[str] = frozenset()) -> FlipKind | None:
    """The rule table above for one change; ``None`` means nothing to alert."""
    old, new = change.old, change.new
    if new == REMOVED:
        return FlipKind.REMOVED
    if new == _FAILED and old in (_RUNNING, _FINISHED):
        return FlipKind.FAILURE
    if old == _FAILED and new == _FINISHED:
        return FlipKind.RECOVERY
    if old == _FAILED and new == _RUNNING:
        return FlipKind.RETRY
    # The refresh that saw the retry finish is the only one that can tell people it worked.
    if old == _RUNNING and new == _FINISHED and change.registry_id in retrying:
        return FlipKind.RECOVERY
    return None


def watched(change: Change, *, types: Collection[str], name: str | None) -> bool:
    """A watch's filters: types (empty = all) and a case-insensitive name substring."""
    if types and change.type not in types:
        return False
    return name_matches(name, change.name)


def recent_failures(times: Iterable[float], now: float) -> list[float]:
    """The failure times that still count for flapping at ``now``.

    Times ahead of ``now`` are kept: another replica's clock may run a little fast, and
    dropping its records would hide flapping.
    """
    return [t for t in times if t > now - FLAP_WINDOW]


def classify(
    changes: Sequence[Change],
    *,
    types: Collection[str] = frozenset(),
    name: str | None = None,
    failure_history: Mapping[str, Sequence[float]] | None = None,
    retrying: Collection[str] = frozenset(),
    now: float,
) -> AlertPlan:
    """Sort one refresh's changes into an :class:`AlertPlan` (see the module's rule table).

    ``failure_history`` maps a registry id to its earlier failure times (any age; only the
    last hour counts). A failure that would be the registry's fourth or later within the
    hour goes to ``flapping``. ``retrying`` names registries an open incident saw go
    ``failed -> running``, whose ``running -> finished`` is then a recovery.
    """
    history = failure_history or {}
    buckets: dict[FlipKind, list[Flip]] = {kind: [] for kind in FlipKind}
    flapping: list[Flip] = []
    counts: dict[str, int] = {}
    for change in changes:
        kind = kind_of(change, retrying=retrying)
        if kind is None or not watched(change, types=types, name=name):
            continue
        flip = _flip(kind, change)
        if kind is not FlipKind.FAILURE:
            buckets[kind].append(flip)
            continue
        rid = change.registry_id
        # Failures earlier in this same batch count too (a caller may join refreshes).
        if rid not in counts:
            counts[rid] = len(recent_failures(history.get(rid, ()), now))
        counts[rid] += 1
        (flapping if counts[rid] > FLAP_THRESHOLD else buckets[kind]).append(flip)
    flapped = {f.registry_id for f in flapping}
    return AlertPlan(
        failures=tuple(buckets[FlipKind.FAILURE]),
        recoveries=tuple(buckets[FlipKind.RECOVERY]),
        retries=tuple(buckets[FlipKind.RETRY]),
        removed=tuple(buckets[FlipKind.REMOVED]),
        flapping=tuple(flapping),
        flap_counts={rid: counts[rid] for rid in flapped},
    )


def _flip(kind: FlipKind, change: Change) -> Flip:
    return Flip(
        kind=kind,
        registry_id=change.registry_id,
        name=change.name,
        type=change.type,
        reason=change.reason,
        at=change.at,
        old=change.old,
    )


def update_history(
    history: Mapping[str, Sequence[float]], flips: Iterable[Flip], now: float
) -> dict[str, list[float]]:
    """A new history: ``history`` plus the times of the FAILURE flips among ``flips``, with
    everything older than an hour dropped (and registries left with no failure forgotten)."""
    merged = {rid: list(times) for rid, times in history.items()}
    for flip in flips:
        if flip.kind is FlipKind.FAILURE:
            merged.setdefault(flip.registry_id, []).append(flip.at)
    kept = {rid: sorted(recent_failures(times, now)) for rid, times in merged.items()}
    return {rid: times for rid, times in kept.items() if times}


def group_by_reason(flips: Iterable[Flip]) -> list[tuple[str, list[Flip]]]:
    """Flips grouped by their reason (whitespace-trimmed): the biggest group first, ties by
    reason; within a group by name (case-insensitive), then id."""
    groups: dict[str, list[Flip]] = {}
    for flip in flips:
        groups.setdefault(flip.reason.strip(), []).append(flip)
    sizes = Counter({reason: len(members) for reason, members in groups.items()})
    ordered = sorted(groups, key=lambda reason: (-sizes[reason], reason))
    return [(reason, sorted(groups[reason], key=by_name)) for reason in ordered]


def by_name(flip: Flip) -> tuple[str, str]:
    """Display order of registries: name (case-insensitive), then id."""
    return (flip.name.casefold(), flip.registry_id)


# --- the incident one alert message shows ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Incident:
    """The accumulated flips of one alert message: the latest flip of each registry it
    concerns, and which failing registries are flapping. Render it whole on every update."""

    latest: Mapping[str, Flip] = field(default_factory=dict)
    flapping: frozenset[str] = frozenset()

    def of_kind(self, kind: FlipKind) -> list[Flip]:
        return [f for f in self.latest.values() if f.kind is kind]

    @property
    def failing(self) -> list[Flip]:
        return self.of_kind(FlipKind.FAILURE)

    @property
    def retrying(self) -> frozenset[str]:
        """Ids to pass as ``classify(retrying=...)``."""
        return frozenset(f.registry_id for f in self.of_kind(FlipKind.RETRY))

    @property
    def resolved(self) -> bool:
        """Nothing failing or retrying any more (everything recovered or was removed)."""
        return not any(f.kind in (FlipKind.FAILURE, FlipKind.RETRY) for f in self.latest.values())


def accumulate(incident: Incident, plan: AlertPlan) -> Incident:
    """Fold one refresh's plan into the incident: each registry's newest flip replaces the
    older one. A failure that alerted clears the registry's flapping mark."""
    latest = dict(incident.latest)
    flapping = set(incident.flapping)
    flapped = {f.registry_id for f in plan.flapping}
    for flip in plan.in_order():
        old = latest.get(flip.registry_id)
        if old is None or old.at <= flip.at:
            latest[flip.registry_id] = flip
    flapping |= flapped
    flapping -= {f.registry_id for f in plan.failures} - flapped
    return Incident(latest=latest, flapping=frozenset(flapping))
