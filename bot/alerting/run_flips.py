"""Following sync runs, the rules: pure functions over runs and their failed registries.

A run's failed registries are compared with the failed registries of the previous run of
the same kind (:func:`compare`):

- **new**: failing now, not failing in the previous run;
- **still failing**: failing now and in the previous run;
- **recovered**: failing in the previous run, finished in this one. While a run goes on,
  only registries the mirror saw finish count; once it has finished all its registries
  (``task_status`` 100), every earlier failure not failing now has finished.

A watch's registry-type and name filters apply to both sides, as they do to task alerts.

What each channel is told about a run is planned by :func:`plan_channel` from what it was
told before (:class:`ChannelRun`): one message per run and channel, posted at the first
failure (or, for a run with none, one short "all recovered" message when it recovered
everything the previous run failed), updated as failures come in, with later changes and the
run's end in its thread. :func:`is_stuck` and :func:`missed_run` are the two notices about
runs that do not move or do not come.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field, replace
from typing import Literal

from bot.alerting.flips import Flip, FlipKind, by_name
from bot.mirror import name_matches
from bot.runs import DONE_STATUS, RunKind, SyncRun

#: A followed run whose progress and counts stayed put this long is stuck (seconds).
STUCK_AFTER_SECONDS = 7200.0
#: No new scheduled run this long after the last one began is a missed run (26 h).
MISSED_RUN_AFTER_SECONDS = 93_600.0

NEW = "new"
STILL_FAILING = "still failing"


def failed_flip(registry_id: str, name: str, rtype: str, reason: str, at: float) -> Flip:
    """A failed registry of a run, as the alert helpers show one."""
    return Flip(FlipKind.FAILURE, registry_id, name, rtype, reason, at)


def matches(flip: Flip, *, types: Collection[str], name: str | None) -> bool:
    """A watch's filters: types (empty = all) and a case-insensitive name substring."""
    return (not types or flip.type in types) and name_matches(name, flip.name)


@dataclass(frozen=True, slots=True)
class RunDiff:
    """A run's failures against the previous run of its kind, each sorted by name."""

    new: tuple[Flip, ...] = ()
    still: tuple[Flip, ...] = ()
    recovered: tuple[Flip, ...] = ()
    #: How many registries (through the watch's filters) the previous run failed.
    previous_failed: int = 0

    @property
    def failing(self) -> tuple[Flip, ...]:
        return self.new + self.still

    def mark(self, registry_id: str) -> str:
        """``new`` or ``still failing`` for a failing registry."""
        return STILL_FAILING if any(f.registry_id == registry_id for f in self.still) else NEW

    @property
    def all_recovered(self) -> bool:
        """Nothing failing, and everything the previous run failed has recovered."""
        return (
            not self.failing
            and self.previous_failed > 0
            and len(self.recovered) == self.previous_failed
        )

    def digest(self) -> str:
        """A short name for what a message shows of this diff (outbox dedup ids)."""
        parts = [",".join(sorted(f.registry_id for f in group)) for group in self._groups()]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]

    def _groups(self) -> tuple[tuple[Flip, ...], ...]:
        return (self.new, self.still, self.recovered)


def compare(
    failed: Iterable[Flip],
    previous: Iterable[Flip],
    *,
    complete: bool,
    finished: Collection[str] = frozenset(),
    types: Collection[str] = frozenset(),
    name: str | None = None,
) -> RunDiff:
    """Classify a run's ``failed`` registries against the ``previous`` run's failures.

    ``complete``: the run has finished all its registries, so an earlier failure that is not
    failing now has finished. ``finished``: ids of registries the mirror saw finish in this
    run (the recovered ones while it goes on).
    """
    now = {f.registry_id: f for f in failed if matches(f, types=types, name=name)}
    before = {f.registry_id: f for f in previous if matches(f, types=types, name=name)}
    new = [f for rid, f in now.items() if rid not in before]
    still = [f for rid, f in now.items() if rid in before]
    recovered = [f for rid, f in before.items() if rid not in now and (complete or rid in finished)]
    return RunDiff(
        new=tuple(sorted(new, key=by_name)),
        still=tuple(sorted(still, key=by_name)),
        recovered=tuple(sorted(recovered, key=by_name)),
        previous_failed=len(before),
    )


def complete(run: SyncRun) -> bool:
    """The run got through every registry (finished, with or without failures). A run of
    no registries (``total_num`` 0) synced nothing, so nothing the previous run failed can
    have recovered in it: it is not complete in this sense."""
    return run.task_status == DONE_STATUS and run.total_num > 0


def previous_run(runs: Iterable[SyncRun], run: SyncRun) -> SyncRun | None:
    """The newest run of ``run``'s kind that began before it."""
    if run.begin_time is None:
        return None
    earlier = [
        r
        for r in runs
        if r.task_id != run.task_id
        and r.task_type == run.task_type
        and r.begin_time is not None
        and (r.begin_time, r.task_id) < (run.begin_time, run.task_id)
    ]
    return max(earlier, key=lambda r: (r.begin_time or 0, r.task_id), default=None)


def began_at(run: SyncRun) -> float | None:
    """The run's begin time in epoch seconds (HSS sends milliseconds)."""
    return None if run.begin_time is None else run.begin_time / 1000


def follows(kind: RunKind | None, created_at: float, run: SyncRun) -> bool:
    """A watch of ``kind`` (None: every run) made at ``created_at`` follows ``run``: runs
    that began before the watch was made are its baseline (compared in HSS's milliseconds:
    a run begun in the millisecond the watch was made is followed)."""
    if run.begin_time is None or run.begin_time < math.floor(created_at * 1000):
        return False
    return kind is None or run.kind == kind


def progress(run: SyncRun) -> tuple[int | None, int, int, int]:
    """What must move for a run not to be stuck: its status and its counts."""
    return (run.task_status, run.failed_num, run.success_num, run.total_num)


def is_stuck(run: SyncRun, *, changed_at: float, now: float, after: float) -> bool:
    """A run still going whose progress last changed ``after`` seconds or more ago."""
    return not run.ended and now - changed_at >= after


@dataclass(frozen=True, slots=True)
class Missed:
    """A scheduled run is overdue: ``last`` began (None: no scheduled run is known, and
    ``since`` is when the watch was made) ``since``; ``mark`` names this absence, so one
    notice is sent per absence."""

    last: SyncRun | None
    since: float

    @property
    def mark(self) -> str:
        return self.last.task_id if self.last is not None else f"watch@{self.since!r}"


def missed_run(
    runs: Iterable[SyncRun], *, created_at: float, now: float, after: float
) -> Missed | None:
    """For a channel following scheduled runs since ``created_at``: no scheduled run began
    in the ``after`` seconds since the last one did (or since the watch was made)."""
    scheduled = [r for r in runs if r.kind == RunKind.AUTO and r.begin_time is not None]
    last = max(scheduled, key=lambda r: (r.begin_time or 0, r.task_id), default=None)
    start = began_at(last) if last is not None else None
    since = max(start, created_at) if start is not None else created_at
    if now - since < after:
        return None
    return Missed(last=last, since=since)


# --- what a channel is told ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChannelRun:
    """What one channel has been told about one run."""

    posted: bool = False
    #: ``RunDiff.digest`` of what the message shows.
    shown: str = ""
    #: Ids the message shows failing (the thread tells what changed since).
    failing: frozenset[str] = frozenset()
    ended: bool = False
    stuck: bool = False
    #: Nothing more will be said (the run ended and that was handled).
    closed: bool = False


class Say:
    """What to send: the kinds of message the renderer knows."""

    ALERT = "alert"
    CHANGES = "changes"
    END = "end"
    ALL_RECOVERED = "all_recovered"
    STUCK = "stuck"


#: The outbox's item kinds (``bot.alerting.outbox.Kind``).
SendKind = Literal["post", "update", "thread"]


@dataclass(frozen=True, slots=True)
class Send:
    """One outbox item to queue: ``kind`` post/update/thread, ``say`` what it shows, and
    for thread lines of changes the registries newly failing and no longer failing."""

    kind: SendKind
    say: str
    added: tuple[Flip, ...] = ()
    gone: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ChannelStep:
    state: ChannelRun
    sends: tuple[Send, ...] = field(default_factory=tuple)


def plan_channel(
    state: ChannelRun, run: SyncRun, diff: RunDiff | None, *, loud: bool, stuck: bool
) -> ChannelStep:
    """What to tell a channel about ``run`` now. ``diff`` is None when the run's failures
    are not known this round (nothing to post or update from); ``loud`` False for muted or
    paused watches (nothing is said, and an ended run is closed so nothing comes later);
    ``stuck`` when :func:`is_stuck` holds."""
    if state.closed:
        return ChannelStep(state)
    if not loud:
        return ChannelStep(replace(state, closed=True) if run.ended else state)
    sends: list[Send] = []
    if diff is not None:
        state = _tell(state, run, diff, sends)
    if stuck and not state.stuck and not state.closed and not run.ended:
        sends.append(Send("thread" if state.posted else "post", Say.STUCK))
        state = replace(state, stuck=True)
    return ChannelStep(state, tuple(sends))


def _tell(state: ChannelRun, run: SyncRun, diff: RunDiff, sends: list[Send]) -> ChannelRun:
    ids = frozenset(f.registry_id for f in diff.failing)
    if not state.posted:
        if diff.failing:
            sends.append(Send("post", Say.ALERT))
            state = replace(state, posted=True, shown=diff.digest(), failing=ids)
        elif run.ended:
            if diff.all_recovered and complete(run):
                sends.append(Send("post", Say.ALL_RECOVERED))
            return replace(state, closed=True)
        else:
            return state
    elif diff.digest() != state.shown:
        added = tuple(f for f in diff.failing if f.registry_id not in state.failing)
        gone = tuple(sorted(state.failing - ids))
        sends.append(Send("update", Say.ALERT))
        if added or gone:
            sends.append(Send("thread", Say.CHANGES, added=added, gone=gone))
        state = replace(state, shown=diff.digest(), failing=ids)
    if run.ended and not state.ended:
        if not any(s.kind == "update" for s in sends) and not any(s.kind == "post" for s in sends):
            sends.append(Send("update", Say.ALERT))  # the header says how it ended
        sends.append(Send("thread", Say.END))
        state = replace(state, ended=True, closed=True)
    return state
