"""Answering lookups from the mirror, and refreshing it through the call budget.

``peek`` never calls HSS: it answers from the mirror with the data's age. ``refresh`` brings
the mirror to the wanted freshness with the fewest calls: identical refreshes in this process
share one fetch, and across replicas a per-view lock in Redis makes the others wait for the
winner's result instead of spending calls of their own.

A lookup a person asks for goes one way, whoever asks (Slack, the CLI, an alert's buttons):
``ask`` peeks, and a fresh answer ends it; otherwise the caller shows what it likes (Slack
acks with the older data, the CLI says it waits) and ``follow_up`` refreshes. Each question
is logged and counted once, with its last answer: ``fresh``, ``refreshed``, ``failed`` or
``gave_up``. ``lookup`` is the two in a row, for callers with nothing to show in between.

A follow-up that gives up in a way another try may mend can be kept
(:mod:`bot.kept_questions`); it is logged once more when it ends. ``refresh_cost`` says
what a refresh would spend before anything is spent.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from bot.config import RateLimit
from bot.errors import (
    BotError,
    StoreError,
    TooManyQuestions,
)
from bot.hss.budget import CallBudget, Priority, Ticket, asker, on_grant
from bot.hss.client import FetchResult, HssClient
from bot.hss.guards import AuthGate
from bot.mirror import (
    LARGE_SNAPSHOT,
    Change,
    Snapshot,
    View,
    choose_view,
    covering_view,
    covers,
    is_fresh,
    matching_rows,
    merge,
    pages,
    parse_view_key,
    registries_of,
    row_matches,
    sampled_pages,
    task_size,
    totals,
    view_key,
    with_task_size,
)
from bot.models import (
    PAGE_LIMIT_MAX,
    Answer,
    ApiFilter,
    LookupRequest,
    Registry,
    RegistryPage,
    TaskRef,
)
from bot.ops import metrics
from bot.storage.lease import keep_alive
from bot.storage.mirror_store import MirrorStore, ViewLock
from bot.storage.transact import Contended

logger = logging.getLogger(__name__)

#: A Refresh click within this many seconds of the last fetch costs nothing.
MIN_REFRESH_AGE = 5.0
#: How long a refresh lock lives without renewal (its owner renews it every third of this):
#: a replica that dies mid-fetch frees the view this fast. Short, because watched tasks are
#: taken over within two poll intervals; a stall longer than this costs a duplicate fetch.
LOCK_TTL = 6.0
POLL_OTHERS = 0.1
#: How long a peek may reuse the snapshot it last read without asking Redis: a burst of
#: commands costs one round trip, and another replica's refresh shows within this time.
PEEK_REUSE = 0.25
#: Redis connections the view locks of this process's fetches use at once (see ``_InTurn``).
LOCK_CONNECTIONS = 4
_CACHED_ANSWERS = 256
_CACHED_ROWS = 200_000


@dataclass(frozen=True, slots=True)
class Peek:
    answer: Answer
    fresh: bool
    #: The snapshot the answer came from: the same object means the same answer.
    source: Snapshot = field(default_factory=Snapshot, compare=False)


@dataclass(frozen=True, slots=True)
class Question:
    """A lookup a person asked for: what the mirror said then, and when (monotonic) they
    asked. ``peek.fresh``: answered and recorded; else :meth:`LookupService.follow_up`."""

    peek: Peek
    started: float


def answer_from(snap: Snapshot, request: LookupRequest, view: View | None) -> Answer:
    if view is None:
        return Answer(request=request, totals=totals(snap))
    return Answer(
        request=request,
        registries=registries_of(matching_rows(snap, request)),
        totals=totals(snap),
        fetched_at=view.fetched_at,
    )


class LookupService:
    def __init__(
        self,
        *,
        store: MirrorStore,
        client: HssClient,
        budget: CallBudget,
        auth: AuthGate,
        limit: RateLimit,
        project_id: str,
        default_ep: str | None,
        fresh_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._client = client
        self._budget = budget
        # The client's gate: the lock-out is about one AK/SK pair, so a corrected secret
        # may call at once.
        self._auth = auth
        self._limit = limit
        self._project_id = project_id
        self._default_ep = default_ep
        self.fresh_seconds = fresh_seconds
        self._clock = clock
        self._inflight: dict[tuple[TaskRef, str], asyncio.Task[None]] = {}
        #: In-flight fetches whose HSS call has begun (``drain`` finishes these).
        self._calling: set[tuple[TaskRef, str]] = set()
        self._recent: OrderedDict[TaskRef, tuple[float, Snapshot]] = OrderedDict()
        self._loading: dict[TaskRef, asyncio.Future[Snapshot]] = {}
        #: Fetches of tasks of unknown size: set once their first page told the size.
        self._sizing: dict[TaskRef, asyncio.Event] = {}
        #: Their first page (registries, total) until they end.
        self._samples: dict[TaskRef, tuple[tuple[Registry, ...], int]] = {}
        self._answers: OrderedDict[LookupRequest, tuple[Snapshot, Answer]] = OrderedDict()
        #: What fetches waiting for their turn (view locks held or wanted) may use of the
        #: Redis pool at once: hundreds of them renew and release together.
        self._lock_turns = asyncio.Semaphore(LOCK_CONNECTIONS)

    def ref(self, request: LookupRequest) -> TaskRef:
        return TaskRef(
            project_id=self._project_id,
            task_id=request.task_id,
            enterprise_project_id=request.ep or self._default_ep,
        )

    async def peek(self, request: LookupRequest) -> Peek:
        """The mirror's answer, no call: ``fresh`` when younger than ``fresh_seconds``."""
        ref = self.ref(request)
        snap = await self._recent_snapshot(ref)
        view = covering_view(snap, request.api_filter)
        fresh = is_fresh(view, now=self._clock(), max_age=self.fresh_seconds)
        answer = await self._answer(snap, request, view)
        return Peek(answer=answer, fresh=fresh, source=snap)

    async def _recent_snapshot(self, ref: TaskRef) -> Snapshot:
        seen = self._recent.get(ref)
        if seen is not None and time.monotonic() - seen[0] < PEEK_REUSE:
            return seen[1]
        # Commands arrive in bursts: one read of Redis serves everyone waiting for it.
        loading = self._loading.get(ref)
        if loading is None:
            loading = asyncio.ensure_future(self._store.load(ref))
            self._loading[ref] = loading
            loading.add_done_callback(lambda _: self._loading.pop(ref, None))
        snap = await asyncio.shield(loading)
        self._remember(ref, snap)
        return snap

    def _remember(self, ref: TaskRef, snap: Snapshot) -> None:
        now = time.monotonic()
        self._recent[ref] = (now, snap)
        self._recent.move_to_end(ref)
        # Oldest first: drop what no peek may reuse any more, so nothing big lingers here.
        while self._recent and now - next(iter(self._recent.values()))[0] >= PEEK_REUSE:
            self._recent.popitem(last=False)

    async def _answer(self, snap: Snapshot, request: LookupRequest, view: View | None) -> Answer:
        # Filtering and sorting thousands of rows per command is the costly part of an ack;
        # an answer stays valid as long as its snapshot object does.
        cached = self._answers.get(request)
        if cached is not None and cached[0] is snap:
            return cached[1]
        if len(snap.rows) > LARGE_SNAPSHOT:
            answer = await asyncio.to_thread(answer_from, snap, request, view)
        else:
            answer = answer_from(snap, request, view)
        self._answers[request] = (snap, answer)
        self._answers.move_to_end(request)
        while len(self._answers) > 1 and (
            len(self._answers) > _CACHED_ANSWERS
            or sum(len(a.registries) for _, a in self._answers.values()) > _CACHED_ROWS
        ):
            self._answers.popitem(last=False)
        return answer

    async def lookup(
        self, request: LookupRequest, *, priority: Priority = Priority.INTERACTIVE
    ) -> Answer:
        """Ask, and follow up unless the mirror was fresh: one lookup, recorded once."""
        question = await self.ask(request)
        if question.peek.fresh:
            return question.peek.answer
        return await self.follow_up(question, priority=priority)

    async def ask(self, request: LookupRequest, *, started: float | None = None) -> Question:
        """Peek for a person (no call). A fresh answer is their last, so it is recorded here.
        ``started`` (monotonic): when they asked, if that was before this call."""
        started = time.monotonic() if started is None else started
        question = Question(peek=await self.peek(request), started=started)
        if question.peek.fresh:
            self.record(question, question.peek.answer, "fresh")
        return question

    async def follow_up(
        self,
        question: Question,
        *,
        priority: Priority = Priority.INTERACTIVE,
        max_age: float | None = None,
        max_wait: float | None = None,
    ) -> Answer:
        """Refresh for ``question`` (see :meth:`refresh` for ``max_age``) and record how it
        ended: ``refreshed``; ``failed``, raising the ``BotError`` (or the unexpected error);
        or ``gave_up`` past ``max_wait`` seconds, raising ``TimeoutError``."""
        stale = question.peek.answer
        try:
            async with asyncio.timeout(max_wait):
                answer = await self.refresh(stale.request, priority=priority, max_age=max_age)
        except BotError as exc:
            self.record(question, stale, "failed", error=exc)
            raise
        except TimeoutError:
            self.record(question, stale, "gave_up")
            raise
        except Exception as exc:  # not one the bot explains (the caller logs it): counted too
            self.record(question, stale, "failed", error=exc)
            raise
        self.record(question, answer, "refreshed")
        return answer

    def record(
        self, question: Question, answer: Answer, outcome: str, error: BaseException | None = None
    ) -> None:
        """Log and count how ``question`` ended (one of ``metrics.LOOKUP_OUTCOMES``)."""
        _note_lookup(answer, outcome, started=question.started, now=self._clock(), error=error)

    async def refresh(
        self,
        request: LookupRequest,
        *,
        priority: Priority = Priority.INTERACTIVE,
        max_age: float | None = None,
    ) -> Answer:
        """Fetch what the request needs unless the mirror already holds it younger than
        ``max_age`` (default ``fresh_seconds``). Raises ``HssError``/``BudgetTimeout``."""
        wanted = self.fresh_seconds if max_age is None else max_age
        ref, query = self.ref(request), request.api_filter
        snap = await self._store.load(ref)
        had = _age_mark(covering_view(snap, query))
        # Newer covering data ends the wait, however long the budget queue made it take:
        # repeating a fetch because it waited would spend calls on data nobody has seen.
        # More rounds happen only when a size probe switched to a view that does not cover
        # this query, or a fetch we joined was for another filter.
        for round_no in range(3):
            view = covering_view(snap, query)
            if is_fresh(view, now=self._clock(), max_age=wanted) or _age_mark(view) > had:
                break
            # A narrow question joins a wider fetch under way once; if that fails, or lands
            # without covering it (a size probe switched views), it fetches on its own.
            if not (round_no == 0 and await self._join_covering(ref, query)):
                await self._shared_fetch(ref, snap, query, priority)
            snap = await self._store.load(ref)
        return await self._answer(snap, request, covering_view(snap, query))

    async def wait_estimate(self, request: LookupRequest) -> float:
        """Seconds until a refresh of ``request`` is likely done, from budget and task size."""
        snap = await self._store.load(self.ref(request))
        size = task_size(snap)
        flt = choose_view(snap, request.api_filter)
        calls = pages(size) if size is not None and flt.is_full else 1
        spacing = self._limit.window / self._limit.calls
        return await self._budget.next_slot_in() + (calls - 1) * spacing

    @property
    def call_spacing(self) -> float:
        """Seconds between two calls when the budget is used evenly (12 s at 5 a minute)."""
        return self._limit.window / self._limit.calls

    async def refresh_cost(self, request: LookupRequest) -> RefreshCost:
        """What a refresh of ``request`` would spend and how long it would take, from the
        task's size and the budget, before anything is spent (no call)."""
        snap = await self._store.load(self.ref(request))
        calls = _calls_for(snap, request.api_filter)
        view = covering_view(snap, request.api_filter)
        age = None if view is None else max(0.0, self._clock() - view.fetched_at)
        # The first call waits for a slot; the rest come as the window frees them, except
        # those the calls left right now can start at once.
        queued = max(0, calls - max(1, await self._budget.calls_left()))
        wait = await self._budget.next_slot_in() + queued * self.call_spacing
        return RefreshCost(calls=calls, wait=wait, age=age, limit=self._limit)

    async def drain(self, timeout: float) -> None:
        """Shutdown: let the fetches whose HSS call has begun finish and save (for up to
        ``timeout`` s: the call is paid for and its answer may hold a flip), and stop those
        still waiting for a call slot, which another replica or the next start will make."""
        calling = [t for k, t in self._inflight.items() if k in self._calling]
        for key, task in list(self._inflight.items()):
            if key not in self._calling:
                task.cancel()
        if calling:
            await asyncio.wait(calling, timeout=max(0.0, timeout))
        await self.aclose()

    async def aclose(self) -> None:
        """Stop fetches nobody will wait for any more (on shutdown)."""
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def auth_lock(self) -> dict[str, Any] | None:
        """The authentication lock-out in force (error code, HSS request id, when), if any."""
        return await self._auth.lock_info()

    async def reset_auth(self) -> bool:
        """Operator action: allow calls again after an authentication failure."""
        had = await self._auth.lock_info() is not None
        await self._auth.set_lock(None)
        return had

    # --- fetching ---

    async def _join_covering(self, ref: TaskRef, query: ApiFilter) -> bool:
        """A ``name=`` or ``type=`` question waits for a fetch of a view that holds its answer
        (the whole task, or its status), in this process or another replica, instead of
        spending a call of its own; so does a status question unless its own view is one
        call (shortest first). True when such a fetch landed; False when none is under way,
        it failed, or its first page showed that the question is one call of its own."""
        narrow = query.registry_name is not None or bool(query.registry_types)
        if not narrow and (query.sync_status is None or await self._one_call(ref, query)):
            return False
        for (other, view), task in list(self._inflight.items()):
            if other == ref and covers(parse_view_key(view), query):
                if not narrow and await self._cheaper_once_sized(ref, query, task):
                    return False
                try:
                    await asyncio.shield(task)
                except Exception as exc:  # its asker is told; this question asks on its own
                    logger.info("covering fetch failed (%s): fetching on our own", exc)
                    return False
                return True
        for flt in _wider_views(query):
            view = view_key(flt)
            snap = await self._store.load(ref)
            before = _fetched_at(snap, view)
            # Another replica holds the view's lock while it fetches: wait for its save.
            while await self._store.locked(ref, view):
                if await self._landed(ref, view, before):
                    return True
                await asyncio.sleep(POLL_OTHERS)
            if await self._landed(ref, view, before):
                return True
        return False

    async def _shared_fetch(
        self, ref: TaskRef, snap: Snapshot, query: ApiFilter, priority: Priority
    ) -> None:
        flt = choose_view(snap, query)
        key = (ref, view_key(flt))
        task = self._inflight.get(key)
        sizing = flt.is_full and task_size(snap) is None
        if task is None:
            if sizing:
                self._sizing[ref] = asyncio.Event()
            # The fetch task inherits this hook: it marks the fetch as calling HSS once the
            # budget grants its first slot (see ``drain``).
            hook = on_grant.set(functools.partial(self._calling.add, key))
            try:
                task = asyncio.create_task(self._fetch_once(key, ref, snap, query, flt, priority))
            finally:
                on_grant.reset(hook)
            self._inflight[key] = task
            task.add_done_callback(_retrieve_exception)
        elif sizing and await self._cheaper_once_sized(ref, query, task):
            return  # the caller plans again, with the task's size known
        try:
            await asyncio.shield(task)
        except TooManyQuestions as exc:
            # Joined someone else's question as it was refused for their cap: not ours to
            # show; the caller's next round fetches on our own account.
            if exc.asker == (asker.get() or ""):
                raise

    async def _cheaper_once_sized(
        self, ref: TaskRef, query: ApiFilter, task: asyncio.Task[None]
    ) -> bool:
        """Joining a fetch of a task of unknown size (everything, a page at a time): wait
        until its first page tells the size. True when, with the size known, a cheaper view
        answers ``query``: a one-call question then asks for it instead of waiting for
        every page of the whole task."""
        sized = self._sizing.get(ref)
        if sized is None:
            return False
        probe = asyncio.ensure_future(sized.wait())
        try:
            await asyncio.wait({task, probe}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            probe.cancel()
        if task.done():
            return False
        wider = choose_view(await self._store.load(ref), query).is_full
        return not wider and await self._one_call(ref, query)

    async def _one_call(self, ref: TaskRef, query: ApiFilter) -> bool:
        """The view that would answer ``query`` is one call, as far as the mirror knows, or
        as the first page of a fetch of the whole task under way suggests (a sample)."""
        snap = await self._store.load(ref)
        flt = choose_view(snap, query)
        known = _view_calls(snap, flt, unknown=0)
        if known or flt.is_full:
            return known == 1
        sample = self._samples.get(ref)
        return sample is not None and sampled_pages(sample[0], sample[1], flt) == 1

    async def _fetch_once(
        self,
        key: tuple[TaskRef, str],
        ref: TaskRef,
        snap: Snapshot,
        query: ApiFilter,
        flt: ApiFilter,
        priority: Priority,
    ) -> None:
        try:
            await self._locked_fetch(ref, snap, query, flt, priority)
        finally:
            if (sized := self._sizing.pop(ref, None)) is not None:
                sized.set()
            self._samples.pop(ref, None)
            # Leave before waiters wake: a caller that comes next must start a new fetch,
            # not "join" this finished one.
            if self._inflight.get(key) is asyncio.current_task():
                del self._inflight[key]
                self._calling.discard(key)

    async def _locked_fetch(
        self, ref: TaskRef, snap: Snapshot, query: ApiFilter, flt: ApiFilter, priority: Priority
    ) -> None:
        view = view_key(flt)
        owner = uuid.uuid4().hex
        lock = _InTurn(
            lock=ViewLock(store=self._store, ref=ref, view=view, owner=owner, ttl=LOCK_TTL),
            turns=self._lock_turns,
        )
        before = _fetched_at(snap, view)
        while not await lock.acquire():
            await asyncio.sleep(POLL_OTHERS)
            # Another replica is fetching this view: its result is ours when it lands.
            if await self._landed(ref, view, before):
                return
        if await self._landed(ref, view, before):
            # It landed between our last look and taking the lock.
            await lock.release()
            return
        # Losing the lock (a stall, an outage) does not stop the fetch: the call is paid for
        # and the save re-merges onto whatever another replica saved meanwhile.
        async with keep_alive(lock):
            await self._fetch_and_merge(ref, snap, query, flt, priority)

    async def _landed(self, ref: TaskRef, view: str, before: float | None) -> bool:
        """Another fetch of ``view`` has saved since ``before``."""
        async with self._lock_turns:
            snap = await self._store.load(ref)
        return _fetched_at(snap, view) != before

    async def _fetch_and_merge(
        self, ref: TaskRef, snap: Snapshot, query: ApiFilter, flt: ApiFilter, priority: Priority
    ) -> None:
        # The client checks the lock-out before queuing for a slot and again once granted.
        result, flt, size = await self._fetch(ref, snap, query, flt, priority)
        await self._merge_save(ref, flt, result, size)

    async def _fetch(
        self, ref: TaskRef, snap: Snapshot, query: ApiFilter, flt: ApiFilter, priority: Priority
    ) -> tuple[FetchResult, ApiFilter, int | None]:
        """The fetch, the filter it used, and the task's size if a probe learned it. All its
        calls are one question in the budget's queue (one ticket)."""
        # Its size, as far as the mirror knows it: the first page of an unknown task or view
        # is one call. The client corrects it from the first page.
        ticket = Ticket(calls=_view_calls(snap, flt, unknown=1))
        client = self._client
        if not (flt.is_full and task_size(snap) is None):
            return await client.fetch_all(ref, flt, priority=priority, ticket=ticket), flt, None
        # Size unknown: the first full page tells it, and is all of a small task.
        first = await client.list_page(
            ref, flt, limit=PAGE_LIMIT_MAX, priority=priority, ticket=ticket
        )
        await self._note_size(ref, first)
        narrower = choose_view(snap, query, size_hint=first.total_num)
        if narrower.is_full:
            full = await client.fetch_all(ref, flt, priority=priority, first=first, ticket=ticket)
            return full, flt, None
        logger.info("task has %d registries: fetching only %s", first.total_num, view_key(narrower))
        ticket.calls = 1  # a view of unknown size: its first page is one call
        narrow = await client.fetch_all(ref, narrower, priority=priority, ticket=ticket)
        return narrow, narrower, first.total_num

    async def _note_size(self, ref: TaskRef, first: RegistryPage) -> None:
        """Save the task's size as soon as a first page tells it, so that questions asked
        meanwhile (here or on other replicas) plan their own view; keep the page as a
        sample of the task until this fetch ends, to tell which views are one call."""
        self._samples[ref] = (first.registries, first.total_num)
        try:
            new, _ = await self._store.update(ref, _sized(first.total_num))
        except StoreError as exc:  # planning without it only costs time
            logger.info("task size not saved (%s)", exc)
        else:
            self._remember(ref, new)
        if (sized := self._sizing.pop(ref, None)) is not None:
            sized.set()

    async def _merge_save(
        self, ref: TaskRef, flt: ApiFilter, result: FetchResult, size: int | None
    ) -> None:
        async def merged(snap: Snapshot) -> tuple[Snapshot, list[Change]]:
            merging = functools.partial(
                merge,
                snap,
                flt,
                result.registries,
                total=result.total_num,
                started_at=result.started_at,
                finished_at=result.finished_at,
                task_total=size,
            )
            big = len(snap.rows) + len(result.registries) > LARGE_SNAPSHOT
            return await asyncio.to_thread(merging) if big else merging()

        # Another replica may save while we merge: the store merges again onto its snapshot.
        try:
            new, changes = await self._store.update(ref, merged)
        except Contended:
            raise StoreError("The mirror kept changing under this refresh; try again.") from None
        self._remember(ref, new)
        if changes:
            logger.info("task %s: %d status changes", ref.task_id, len(changes))


@dataclass(frozen=True, slots=True)
class RefreshCost:
    """What refreshing a request's view takes: HSS ``calls``, the ``wait`` (s) until the
    fresh data is likely in, the ``age`` (s) of the data it would replace (None: no data),
    and the budget it is spent from."""

    calls: int
    wait: float
    age: float | None
    limit: RateLimit


def _calls_for(snap: Snapshot, query: ApiFilter) -> int:
    """Calls a refresh of ``query`` would make: pages of the view it would fetch, sized by
    its last fetch, else by the mirror's rows (when a wider view holds them all), else by
    the task."""
    size = task_size(snap)
    return _view_calls(snap, choose_view(snap, query), unknown=pages(size) if size else 1)


def _view_calls(snap: Snapshot, flt: ApiFilter, *, unknown: int) -> int:
    """Pages of a fetch of ``flt`` as far as the mirror knows (``unknown`` if it does not)."""
    size = task_size(snap)
    if flt.is_full:
        return pages(size) if size is not None else 1
    known = snap.views.get(view_key(flt))
    if known is not None:
        return pages(known.total)
    if covering_view(snap, flt) is not None:
        return pages(sum(1 for row in snap.rows.values() if row_matches(flt, row)))
    return unknown


def _sized(total: int) -> Callable[[Snapshot], Awaitable[tuple[Snapshot, list[Change]]]]:
    async def change(snap: Snapshot) -> tuple[Snapshot, list[Change]]:
        return with_task_size(snap, total), []

    return change


def _note_lookup(
    answer: Answer,
    outcome: str,
    *,
    started: float,
    now: float,
    error: BaseException | None = None,
) -> None:
    """One log line and one count per lookup a person asked for, when its last answer is
    shown. ``outcome`` is one of ``metrics.LOOKUP_OUTCOMES``; ``started`` is monotonic."""
    request = answer.request
    age = None if answer.fetched_at is None else max(0.0, now - answer.fetched_at)
    ms = (time.monotonic() - started) * 1000
    status = request.status.value if request.status is not None else "all"
    why = getattr(error, "error_code", None) or (type(error).__name__ if error else None)
    metrics.LOOKUPS.labels(outcome).inc()
    logger.info(
        "lookup task=%r status=%s -> %s%s, data age %s, %.0f ms",
        request.task_id,
        status,
        outcome,
        f" ({why})" if why else "",
        "none" if age is None else f"{age:.0f} s",
        ms,
        extra={
            "event": "lookup",
            "task": request.task_id,
            "status_filter": status,
            "outcome": outcome,
            "error": why,
            "age_s": None if age is None else round(age, 1),
            "ms": round(ms, 1),
        },
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class _InTurn:
    """A view lock (a ``bot.storage.lease.Lease``) whose Redis calls take turns: a fetch
    holds its lock while it waits for a call slot, so 200 waiting fetches would otherwise
    renew (and, at shutdown, release) 200 locks at once, each on a connection of its own,
    and run the pool out."""

    lock: ViewLock
    turns: asyncio.Semaphore

    @property
    def name(self) -> str:
        return self.lock.name

    @property
    def ttl(self) -> float:
        return self.lock.ttl

    async def acquire(self) -> bool:
        async with self.turns:
            return await self.lock.acquire()

    async def extend(self) -> bool:
        async with self.turns:
            return await self.lock.extend()

    async def release(self) -> bool:
        async with self.turns:
            return await self.lock.release()


def _retrieve_exception(task: asyncio.Task[None]) -> None:
    # Retrieved here so that a failure nobody awaited is not logged as lost.
    if not task.cancelled():
        task.exception()


def _wider_views(query: ApiFilter) -> list[ApiFilter]:
    """The views that hold every answer to a narrow ``query``: the whole task, its status."""
    views = [ApiFilter()]
    if query.sync_status is not None:
        views.append(ApiFilter(sync_status=query.sync_status))
    return views


def _age_mark(view: View | None) -> float:
    return view.fetched_at if view is not None else float("-inf")


def _fetched_at(snap: Snapshot, view: str) -> float | None:
    done = snap.views.get(view)
    return done.fetched_at if done is not None else None
