"""Sync runs for the HSS simulator (ListImageScanTask): pure, on the simulator's clock.

One project's registries (``RunsConfig.registries`` of them, seeded by one identity for every
run, so the registry that failed last night is the same registry tonight) are synced by runs:

- scheduled (``autoSync``) every ``every`` seconds, on a grid half a period off the
  simulator's start: ``history`` of them began before it, the next begins half a period
  after it;
- started on demand (:meth:`RunBook.start`): manual (``manualSync``) runs, or an extra
  scheduled one.

A run goes through its registries in row order over ``duration`` seconds: one not reached
yet is ``running``, one reached is ``finished``, or ``failed`` if it is in the run's failing
set. ``task_status`` is the share reached (0-99), 100 once all are, or -1/-2/-3 when the run
was ended early (:meth:`RunBook.end`): every registry not reached then fails, with a reason
saying why. The failing set is about ``failure_rate`` of the registries: half of the
previous run of the same kind's carried over, the rest new (not failing in that run), all
from the seed, so two simulators with one seed list the same runs.

A run's counts (``failed_num``, ``success_num``, ``total_num``) are what
ListAssociateRegistries answers for its ``task_id`` at that moment. Its registries are built
(a ``TaskData``) only when someone asks for them, and counted from there on, so changes
made by hand (``/_sim/flip``) show in the counts too; until then the same numbers come from
the plan.
"""

from __future__ import annotations

import math
import random
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bot.sandbox.simdata import (
    FAILED,
    FINISHED,
    HOSTILE_NAMES,
    STATUSES,
    InvalidParameter,
    TaskData,
    int_param,
    seeded_rng,
    text_param,
    unique_params,
)

AUTO, MANUAL = "autoSync", "manualSync"
#: What ``start`` and ``/_sim/run`` accept for a kind.
KINDS = {"auto": AUTO, "manual": MANUAL, AUTO: AUTO, MANUAL: MANUAL}
#: The early ends a run can be given, and the reason its unreached registries fail with.
END_REASONS = {
    -1: "the sync task was stopped",
    -2: "the sync task timed out",
    -3: "the sync task ended with an error",
}
#: HSS lists at most this many tasks (``total_num`` is capped there too).
LISTED_MAX = 1000
#: Every run syncs the same registries: they are seeded by this, not by the run's id.
IDENTITY = "project-registries"
_SYNC_TYPES = ("image_sync", "image_scan")
_TASK_TYPES = (AUTO, MANUAL, "cycle", "manual")  # the last two are scans'


@dataclass(frozen=True, kw_only=True)
class RunsConfig:
    seed: int = 0
    registries: int = 500
    #: Seconds between scheduled runs; None: none are scheduled.
    every: float | None = 86400.0
    duration: float = 1800.0
    history: int = 3
    failure_rate: float = 0.02
    hostile: bool = False


@dataclass(frozen=True, slots=True)
class RunQuery:
    """One validated ListImageScanTask query."""

    offset: int = 0
    limit: int = 10
    #: ``type`` image_sync (or none given); ``image_scan`` lists scans, which are not here.
    sync: bool = True
    task_type: str | None = None
    task_name: str | None = None
    task_id: str | None = None


def parse_run_query(pairs: Sequence[tuple[str, str]]) -> RunQuery:
    """Validate decoded query pairs as HSS does; unknown parameters are ignored."""
    seen = unique_params(pairs)
    kind, task_type = seen.get("type"), seen.get("task_type")
    if kind is not None and kind not in _SYNC_TYPES:
        raise InvalidParameter(f"type must be one of {', '.join(_SYNC_TYPES)}")
    if task_type is not None and task_type not in _TASK_TYPES:
        raise InvalidParameter(f"task_type must be one of {', '.join(_TASK_TYPES)}")
    for name in ("task_name", "task_id", "enterprise_project_id"):
        if name in seen:
            text_param(name, seen[name], 256)
    return RunQuery(
        offset=int_param("offset", seen.get("offset", "0"), 0, 2_000_000),
        limit=int_param("limit", seen.get("limit", "10"), 10, 200),
        sync=kind != "image_scan",
        task_type=task_type,
        task_name=seen.get("task_name"),
        task_id=seen.get("task_id"),
    )


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


class SimRun:
    """One run: its plan, how far it got, and (once asked for) its registries."""

    def __init__(
        self,
        *,
        config: RunsConfig,
        task_id: str,
        task_name: str,
        task_type: str,
        begin: float,
        duration: float,
        failing: frozenset[int],
    ) -> None:
        self.task_id = task_id
        self.task_name = task_name
        self.task_type = task_type
        self.begin = begin
        self.duration = duration
        self.failing = failing
        self.size = config.registries
        self._config = config
        #: Set by ``end``: the early status, when, and how many registries had been reached.
        self.end_status: int | None = None
        self.ended_at: float | None = None
        self._stopped_at: int | None = None
        self._data: TaskData | None = None
        self._settled = 0  # registries of ``_data`` given their outcome so far
        self._closed = False  # the unreached ones of an ended run failed

    def reached(self, now: float) -> int:
        """Registries the run has got to by ``now``."""
        if self._stopped_at is not None:
            return self._stopped_at
        share = (now - self.begin) / self.duration if self.duration > 0 else 1.0
        return max(0, min(self.size, math.floor(self.size * share)))

    def status(self, now: float) -> int:
        if self.end_status is not None:
            return self.end_status
        reached = self.reached(now)
        return 100 if reached >= self.size else reached * 100 // self.size

    def end_time(self, now: float) -> float | None:
        if self.ended_at is not None:
            return self.ended_at
        return self.begin + self.duration if self.status(now) == 100 else None

    def end(self, status: int, now: float) -> None:
        if status not in END_REASONS:
            raise ValueError(f"status must be one of {', '.join(map(str, END_REASONS))}")
        if self.end_time(now) is not None:
            raise ValueError(f"run {self.task_id} has ended already")
        self._stopped_at = self.reached(now)
        self.end_status, self.ended_at = status, now

    def failures(self) -> list[tuple[str, float]]:
        """The registries this run fails as planned, in the order it reaches them: each
        one's name and the moment it fails (when ``reached`` passes it)."""
        data = self.registries(self.begin)
        found = []
        for serial in sorted(self.failing):
            row = data.row_of(data.registry_id(serial))
            if row is not None:  # None: removed by hand
                at = self.begin + self.duration * (serial + 1) / self.size
                found.append((data.registry_at(row).registry_name, at))
        return found

    def failing_names(self) -> list[str]:
        """The names of the registries this run fails (as planned), in the order it reaches
        them."""
        return [name for name, _ in self.failures()]

    def registries(self, now: float) -> TaskData:
        """What ListAssociateRegistries answers for this run at ``now``."""
        if self._data is None:
            self._data = TaskData(
                seed=self._config.seed,
                task_id=self.task_id,
                size=self.size,
                hostile=self._config.hostile,
                identity=IDENTITY,
                status="running",
            )
        self._settle(self._data, now)
        return self._data

    def _settle(self, data: TaskData, now: float) -> None:
        reached = self.reached(now)
        for serial in range(self._settled, reached):
            outcome = FAILED if serial in self.failing else FINISHED
            self._give(data, serial, STATUSES[outcome], None)
        self._settled = max(self._settled, reached)
        if self.end_status is not None and not self._closed:
            for serial in range(reached, self.size):
                self._give(data, serial, "failed", END_REASONS[self.end_status])
            self._closed = True

    @staticmethod
    def _give(data: TaskData, serial: int, status: str, reason: str | None) -> None:
        row = data.row_of(data.registry_id(serial))
        if row is not None:  # None: removed by hand
            data.set_status(row, status, reason)

    def counts(self, now: float) -> tuple[int, int, int]:
        """(failed, finished, all) registries at ``now``."""
        if self._data is not None:
            data = self.registries(now)
            return data.count("failed"), data.count("finished"), len(data)
        reached = self.reached(now)
        failed_reached = sum(1 for serial in self.failing if serial < reached)
        unreached_failed = self.size - reached if self.end_status is not None else 0
        return failed_reached + unreached_failed, reached - failed_reached, self.size

    def info(self, now: float) -> dict[str, Any]:
        """The run as an ``ImageScanTaskInfo``."""
        failed, finished, total = self.counts(now)
        end = self.end_time(now)
        left = 0.0 if end is not None else self.begin + self.duration - now
        return {
            "task_id": self.task_id,
            "task_name": self.task_name,
            "task_type": self.task_type,
            "begin_time": _ms(self.begin),
            "end_time": 0 if end is None else _ms(end),
            "remain_min": max(0, math.ceil(left / 60)),
            "task_status": self.status(now),
            "failed_num": failed,
            "success_num": finished,
            "total_num": total,
            "failed_reason": END_REASONS.get(self.end_status or 0, ""),
        }


def failing_set(
    rng: random.Random, size: int, rate: float, previous: frozenset[int]
) -> frozenset[int]:
    """About ``rate`` of ``size`` registries: half carried over from ``previous``, the rest
    drawn from those not in it."""
    target = min(size, round(size * rate))
    carried = rng.sample(sorted(previous), min(len(previous), target // 2))
    wanted = min(target - len(carried), size - len(previous))
    fresh: set[int] = set()
    while len(fresh) < wanted:  # rejection sampling: a few draws, whatever the size
        serial = rng.randrange(size)
        if serial not in previous:
            fresh.add(serial)
    return frozenset(carried) | frozenset(fresh)


class RunBook:
    """Every run so far, on the clock the caller passes in (no clock of its own)."""

    def __init__(self, config: RunsConfig, *, start: float) -> None:
        self.config = config
        self._runs: list[SimRun] = []  # in the order they began
        self._by_id: dict[str, SimRun] = {}
        self._last: dict[str, SimRun] = {}  # kind -> its newest run
        self._numbers: Counter[str] = Counter()
        every = config.every
        self._grid = None if every is None else start - (config.history - 0.5) * every
        self._scheduled = 0  # grid points that have become runs
        self.catch_up(start)

    def __len__(self) -> int:
        return len(self._runs)

    def next_scheduled_at(self) -> float | None:
        every = self.config.every
        if self._grid is None or every is None:
            return None
        return self._grid + self._scheduled * every

    def catch_up(self, now: float) -> None:
        """Start the scheduled runs whose time has come."""
        while (at := self.next_scheduled_at()) is not None and at <= now:
            self._add(AUTO, at, self.config.duration)
            self._scheduled += 1

    def start(self, kind: str, now: float, *, duration: float | None = None) -> SimRun:
        """A run of ``kind`` (``auto``/``manual`` or the API's names) beginning ``now``."""
        if kind not in KINDS:
            raise ValueError("kind must be auto or manual")
        if duration is not None and not duration >= 0:
            raise ValueError("duration must be 0 or more seconds")
        self.catch_up(now)
        return self._add(KINDS[kind], now, self.config.duration if duration is None else duration)

    def end(self, task_id: str, status: int, now: float) -> SimRun:
        run = self.get(task_id, now)
        if run is None:
            raise KeyError(f"no run {task_id!r}")
        run.end(status, now)
        return run

    def get(self, task_id: str, now: float) -> SimRun | None:
        self.catch_up(now)
        return self._by_id.get(task_id)

    def previous(self, run: SimRun) -> SimRun | None:
        """The run of the same kind that began before ``run``, whose failures it carries."""
        earlier = self._runs[: self._runs.index(run)]
        return next((r for r in reversed(earlier) if r.task_type == run.task_type), None)

    def new_and_still(self, run: SimRun) -> tuple[list[str], list[str]]:
        """The names of the registries ``run`` fails (as planned) that did not fail in the
        previous run of its kind (new), and those that did (still failing)."""
        previous = self.previous(run)
        before = set(previous.failing_names()) if previous is not None else set()
        failing = run.failing_names()
        return [n for n in failing if n not in before], [n for n in failing if n in before]

    def newest_first(self, now: float) -> list[SimRun]:
        self.catch_up(now)
        return self._runs[::-1]

    def query(self, query: RunQuery, now: float) -> tuple[int, list[dict[str, Any]]]:
        """(total_num, page) as HSS lists them: newest first, at most 1000."""
        if not query.sync or query.task_type in ("cycle", "manual"):
            return 0, []
        matches = [run for run in self.newest_first(now) if _matches(run, query)][:LISTED_MAX]
        page = matches[query.offset : query.offset + query.limit]
        return len(matches), [run.info(now) for run in page]

    def _add(self, kind: str, begin: float, duration: float) -> SimRun:
        number = self._numbers[kind]
        self._numbers[kind] += 1
        seed = self.config.seed
        task_id = str(uuid.UUID(bytes=seeded_rng(seed, "run", kind, number).randbytes(16)))
        previous = self._last.get(kind)
        failing = failing_set(
            seeded_rng(seed, "failing", task_id),
            self.config.registries,
            self.config.failure_rate,
            previous.failing if previous is not None else frozenset(),
        )
        run = SimRun(
            config=self.config,
            task_id=task_id,
            task_name=self._name(kind, begin, number),
            task_type=kind,
            begin=begin,
            duration=duration,
            failing=failing,
        )
        self._runs.append(run)
        self._by_id[task_id] = run
        self._last[kind] = run
        return run

    def _name(self, kind: str, begin: float, number: int) -> str:
        when = datetime.fromtimestamp(begin, UTC).strftime("%Y%m%d-%H%M%S")
        name = f"{'auto' if kind == AUTO else 'manual'}-sync-{when}"
        if self.config.hostile and number % 3 == 1:
            name = f"{HOSTILE_NAMES[number // 3 % len(HOSTILE_NAMES)]} {name}"
        return name


def _matches(run: SimRun, query: RunQuery) -> bool:
    if query.task_type is not None and run.task_type != query.task_type:
        return False
    if query.task_id is not None and run.task_id != query.task_id:
        return False
    return query.task_name is None or query.task_name.casefold() in run.task_name.casefold()
