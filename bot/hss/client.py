"""HSS over httpx: call budgets, signing, timeouts, retries, paging, for two APIs:
ListAssociateRegistries (one task's registries) and ListImageScanTask (the sync runs).

Every HTTP attempt (retries included) first takes a slot from its API's ``CallBudget``: HSS
allows 5 calls a minute per API and IAM user, across every replica. The pages and retries of
one fetch are one question in the budget's queue (one ``Ticket``). With guards
(:mod:`bot.hss.guards`), a task HSS said lately does not exist is answered without a call,
and each attempt passes the authentication gate after its slot is granted; the gate is the
AK/SK pair's, so both APIs pass the same one (a 401 on either stops both). Parameters are
checked (no call spent) and responses read by :mod:`bot.hss.wire` and
:mod:`bot.hss.runs_wire`; every failure leaves this boundary as one of the ``HssError`` tree:

    401/403                 HssAuthError         never retried (5 failures lock the AK/SK);
                                                 a 403 on the run list does not lock
    429                     HssThrottledError    a wait, not a failure: retried after
                                                 Retry-After, budget penalized; given up
                                                 after ``max_throttles`` 429s for one page
    5xx, timeout, network,  HssUnavailableError  retried: exponential backoff, full jitter;
    malformed 200 body                           given up after ``max_attempts`` of them
    404 or HSS.0011         HssNotFoundError     not retried (the runs list: HssRequestError)
    other 4xx, 3xx          HssRequestError      not retried
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import itertools
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Generic, Protocol, TypeVar
from urllib.parse import urlsplit

import httpx

from bot.errors import HssError, HssNotFoundError, HssThrottledError, HssUnavailableError
from bot.hss import runs_wire
from bot.hss import wire as hss_wire
from bot.hss.budget import CallBudget, Priority, Ticket
from bot.hss.guards import AuthGate, MissingTasks
from bot.hss.signer import Credentials, HssAuth
from bot.models import OFFSET_MAX, ApiFilter, HssApi, Registry, RegistryPage, TaskRef
from bot.ops import metrics
from bot.runs import FetchedRuns, RunFilter, RunPage, SyncRun, newest_first

logger = logging.getLogger(__name__)

#: A chat user is waiting: fail over to the mirror quickly instead of the SDK's 60 s / 120 s.
DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=3.0, pool=3.0)
#: Wall-clock bound on one attempt (connect + send + whole body), whatever trickles in.
DEFAULT_ATTEMPT_TIMEOUT = 15.0
#: A Retry-After longer than this is not waited out in-line; the caller gets the 429.
DEFAULT_MAX_RETRY_WAIT = 60.0
#: 429s one page may wait out. Each also holds the whole budget back (a Retry-After or a
#: window), so a permanently throttled API ends a page after about this many windows.
DEFAULT_MAX_THROTTLES = 3

Sleep = Callable[[float], Awaitable[None]]


class _Answer(Protocol):
    @property
    def request_id(self) -> str: ...


A = TypeVar("A", bound=_Answer)
R = TypeVar("R")


@dataclass(frozen=True)
class FetchResult:
    """Every registry of one filtered view, complete and de-duplicated.

    ``calls`` counts HTTP attempts made by this fetch (retries included, a given ``first``
    page not), i.e. call-budget slots spent. Times are epoch seconds (``time.time()``).
    """

    registries: tuple[Registry, ...]
    total_num: int
    calls: int
    started_at: float
    finished_at: float


class HssClient:
    """ListAssociateRegistries and ListImageScanTask for one project with one AK/SK; each API
    has its own 5-calls/minute budget (``budget``, ``tasks_budget``; None: calls unbudgeted)."""

    def __init__(
        self,
        *,
        endpoint: str,
        project_id: str,
        credentials: Credentials,
        budget: CallBudget | None = None,
        tasks_budget: CallBudget | None = None,
        auth: AuthGate | None = None,
        missing: MissingTasks | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        max_attempts: int = 3,
        max_throttles: int = DEFAULT_MAX_THROTTLES,
        attempt_timeout: float = DEFAULT_ATTEMPT_TIMEOUT,
        backoff_base: float = 0.5,
        backoff_max: float = 8.0,
        max_retry_wait: float = DEFAULT_MAX_RETRY_WAIT,
        sleep: Sleep = asyncio.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        """``max_attempts``: failed attempts (5xx, timeouts...) one page may take;
        ``max_throttles``: 429s one page may wait out (they are not failed attempts)."""
        if max_attempts < 1 or max_throttles < 1:
            raise ValueError("max_attempts and max_throttles must be at least 1")
        self._endpoint = endpoint.rstrip("/")
        self._project_id = project_id
        self._budgets = {HssApi.REGISTRIES: budget, HssApi.TASKS: tasks_budget}
        self._auth = auth
        self._missing = missing
        self._max_attempts = max_attempts
        self._max_throttles = max_throttles
        self._attempt_timeout = attempt_timeout
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._max_retry_wait = max_retry_wait
        self._sleep = sleep
        self._rng = rng
        # Kept only to scrub them out of any text HSS might echo back to us.
        self._secrets = tuple(
            s for s in (credentials.ak, credentials.sk, credentials.security_token) if s
        )
        self._http = httpx.AsyncClient(
            auth=HssAuth(credentials, project_id=project_id),
            transport=transport,
            timeout=timeout,
            follow_redirects=False,
            headers={"User-Agent": "hss-sync-bot"},
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> HssClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def list_page(
        self,
        task: TaskRef,
        flt: ApiFilter,
        *,
        offset: int = 0,
        limit: int = 200,
        priority: Priority = Priority.INTERACTIVE,
        ticket: Ticket | None = None,
    ) -> RegistryPage:
        """One page; raises ``CommandError`` (no call made) for out-of-range parameters.
        ``ticket``: the question this page belongs to (see ``fetch_all``)."""
        place = Ticket() if ticket is None else ticket
        page, _ = await self._list_page(
            task, flt, offset=offset, limit=limit, priority=priority, ticket=place
        )
        return page

    async def fetch_all(
        self,
        task: TaskRef,
        flt: ApiFilter,
        *,
        priority: Priority = Priority.INTERACTIVE,
        limit: int = 200,
        first: RegistryPage | None = None,
        ticket: Ticket | None = None,
    ) -> FetchResult:
        """All pages, de-duplicated by ``registry_id``; complete and consistent or an error.
        Every page is one question in the budget's queue: ``ticket``, if the question began
        with another call (``first``), else a new one.

        If ``total_num`` moves between pages or the unique rows do not add up to it, the
        whole fetch restarts once from offset 0; a second inconsistency raises
        ``HssUnavailableError``. ``first`` is an already fetched page 0: paging continues
        after its rows (so it may have been fetched with a smaller limit); a restart does not
        reuse it. Counting cannot see a move that keeps both numbers (one row leaves ahead
        of the cursor while another joins behind it); the next refresh corrects that.
        """
        hss_wire.validate(task, flt, offset=0, limit=limit, project_id=self._project_id)
        place = Ticket() if ticket is None else ticket
        calls = 0
        for round_no in (1, 2):
            sweep: _Sweep[Registry] = _Sweep(place)
            await self._sweep(sweep, task, flt, priority=priority, limit=limit, first=first)
            calls += sweep.calls
            if sweep.consistent:
                return FetchResult(
                    registries=tuple(sweep.rows.values()),
                    total_num=sweep.total,
                    calls=calls,
                    # The data is as old as its first page; time spent waiting for budget
                    # slots before that must not count against its freshness.
                    started_at=sweep.first_sent_at,
                    finished_at=time.time(),
                )
            sweep.log_inconsistent(f"task={task.task_id!r}", round_no)
            first = None  # the restart must not reuse a page from the inconsistent view
        raise _inconsistent("registry list")

    async def _sweep(
        self,
        sweep: _Sweep[Registry],
        task: TaskRef,
        flt: ApiFilter,
        *,
        priority: Priority,
        limit: int,
        first: RegistryPage | None,
    ) -> None:
        """One pass over every page into ``sweep``."""
        if first is None:
            first, sweep.calls = await self._list_page(
                task, flt, offset=0, limit=limit, priority=priority, ticket=sweep.ticket
            )
            offset = limit
        else:
            # A given page 0 may have been fetched with another limit: go on after its rows.
            offset = len(first.registries)
        sweep.add(first.total_num, _by_registry_id(first.registries))
        sweep.first_sent_at = first.sent_at or time.time()
        # The first page tells the question's size: its other pages queue as a longer
        # question (after one-call ones) from now on.
        sweep.ticket.calls = 1 + math.ceil(max(0, first.total_num - offset) / limit)
        while offset < sweep.total and offset <= OFFSET_MAX:
            page, attempts = await self._list_page(
                task, flt, offset=offset, limit=limit, priority=priority, ticket=sweep.ticket
            )
            sweep.calls += attempts
            sweep.add(page.total_num, _by_registry_id(page.registries))
            if sweep.moved or not page.registries:
                break  # the list changed under us: this pass is lost, stop spending calls
            offset += limit

    async def _list_page(
        self,
        task: TaskRef,
        flt: ApiFilter,
        *,
        offset: int,
        limit: int,
        priority: Priority,
        ticket: Ticket,
    ) -> tuple[RegistryPage, int]:
        """One page and the number of HTTP attempts it took."""
        hss_wire.validate(task, flt, offset=offset, limit=limit, project_id=self._project_id)
        target = hss_wire.request_target(task, flt, offset=offset, limit=limit)

        def read(response: httpx.Response, sent_at: float) -> RegistryPage:
            page = hss_wire.read_response(
                response, offset=offset, limit=limit, secrets=self._secrets
            )
            return dataclasses.replace(page, sent_at=sent_at)

        call = _Call(
            api=HssApi.REGISTRIES,
            url=f"{self._endpoint}{target}",
            read=read,
            summary=f"task={task.task_id!r} offset={offset} limit={limit}",
            task=task,
        )
        return await self._request(call, priority=priority, ticket=ticket)

    # --- ListImageScanTask: the sync runs ---

    async def list_runs(
        self,
        flt: RunFilter,
        *,
        offset: int = 0,
        limit: int = 200,
        priority: Priority = Priority.INTERACTIVE,
        ep: str | None = None,
        ticket: Ticket | None = None,
    ) -> RunPage:
        """One page of image-sync runs, through the tasks budget; raises ``CommandError``
        (no call made) for out-of-range parameters. ``ep``: the enterprise project (None:
        HSS's default)."""
        place = Ticket() if ticket is None else ticket
        page, _ = await self._runs_page(
            flt, offset=offset, limit=limit, priority=priority, ep=ep, ticket=place
        )
        return page

    async def fetch_runs(
        self,
        flt: RunFilter,
        *,
        priority: Priority = Priority.INTERACTIVE,
        ep: str | None = None,
        limit: int = 200,
        ticket: Ticket | None = None,
    ) -> FetchedRuns:
        """Every run HSS lists (it lists at most 1000), de-duplicated by ``task_id``, newest
        first: complete and consistent or an error, with ``fetch_all``'s rules (one restart
        when the list moves between pages, then ``HssUnavailableError``). The pages are one
        question in the tasks budget's queue (``ticket``, if given, must be of that budget)."""
        runs_wire.validate(flt, offset=0, limit=limit, ep=ep, project_id=self._project_id)
        place = Ticket() if ticket is None else ticket
        calls = 0
        for round_no in (1, 2):
            sweep: _Sweep[SyncRun] = _Sweep(place)
            await self._sweep_runs(sweep, flt, priority=priority, ep=ep, limit=limit)
            calls += sweep.calls
            if sweep.consistent:
                return FetchedRuns(
                    runs=newest_first(sweep.rows.values()),
                    total_num=sweep.total,
                    calls=calls,
                    started_at=sweep.first_sent_at,
                    finished_at=time.time(),
                )
            kind = flt.kind.value if flt.kind is not None else "any"
            sweep.log_inconsistent(f"runs kind={kind} name={flt.name!r}", round_no)
        raise _inconsistent("run list")

    async def _sweep_runs(
        self,
        sweep: _Sweep[SyncRun],
        flt: RunFilter,
        *,
        priority: Priority,
        ep: str | None,
        limit: int,
    ) -> None:
        """One pass over every page of runs into ``sweep``."""
        offset = 0
        while True:
            page, attempts = await self._runs_page(
                flt, offset=offset, limit=limit, priority=priority, ep=ep, ticket=sweep.ticket
            )
            sweep.calls += attempts
            if offset == 0:
                sweep.first_sent_at = page.sent_at or time.time()
            # A run without an id cannot be matched: only an identical copy is a duplicate.
            sweep.add(page.total_num, ((run.task_id or run, run) for run in page.runs))
            offset += limit
            if sweep.moved or not page.runs or offset >= sweep.total or offset > OFFSET_MAX:
                return

    async def _runs_page(
        self,
        flt: RunFilter,
        *,
        offset: int,
        limit: int,
        priority: Priority,
        ep: str | None,
        ticket: Ticket,
    ) -> tuple[RunPage, int]:
        """One page of runs and the number of HTTP attempts it took."""
        project = self._project_id
        runs_wire.validate(flt, offset=offset, limit=limit, ep=ep, project_id=project)
        target = runs_wire.request_target(
            flt, offset=offset, limit=limit, ep=ep, project_id=project
        )

        def read(response: httpx.Response, sent_at: float) -> RunPage:
            page = runs_wire.read_response(
                response, offset=offset, limit=limit, secrets=self._secrets
            )
            return dataclasses.replace(page, sent_at=sent_at)

        kind = flt.kind.value if flt.kind is not None else "any"
        call = _Call(
            api=HssApi.TASKS,
            url=f"{self._endpoint}{target}",
            read=read,
            summary=f"kind={kind} offset={offset} limit={limit}",
        )
        return await self._request(call, priority=priority, ticket=ticket)

    # --- the machinery both APIs share ---

    async def _request(
        self, call: _Call[A], *, priority: Priority, ticket: Ticket
    ) -> tuple[A, int]:
        """``call``'s answer, retried as the module docstring says, and the number of HTTP
        attempts it took."""
        await self._refuse_before_queuing(call.task)
        retries = _Retries()
        for attempt in itertools.count(1):
            try:
                answer = await self._guarded(call, attempt=attempt, slot=(priority, ticket))
                return answer, attempt
            except (HssThrottledError, HssUnavailableError) as err:
                await self._after_retryable(call.api, err, retries)
        raise AssertionError("unreachable: the attempts are endless until one re-raises")

    async def _refuse_before_queuing(self, task: TaskRef | None) -> None:
        """What the guards know already, before a place in the budget's queue is taken."""
        known = None if self._missing is None or task is None else await self._missing.known(task)
        if known is not None:
            raise known
        if self._auth is not None:
            await self._auth.raise_if_locked()

    async def _take_slot(self, api: HssApi, priority: Priority, ticket: Ticket) -> None:
        budget = self._budgets[api]
        if budget is None:
            return
        asked = time.monotonic()
        await budget.acquire(priority, ticket=ticket)
        # Measured here, by the caller: one sample per granted call, whichever budget
        # (shared, in-process, failing over between them) granted it.
        waited = time.monotonic() - asked
        metrics.BUDGET_WAIT.labels(api.value, priority.name.lower()).observe(waited)

    async def _guarded(self, call: _Call[A], *, attempt: int, slot: tuple[Priority, Ticket]) -> A:
        """A budget slot, then one attempt, through the authentication gate (which checks
        the lock-out again once the slot is granted); a missing task is remembered."""
        try:
            if self._auth is None:
                await self._take_slot(call.api, *slot)
                return await self._attempt(call, attempt)
            # A 403 on the run list means this user lacks that API, not a bad secret:
            # lookups by task id (the other API) must go on.
            forbidden_locks = call.api != HssApi.TASKS
            take_slot = functools.partial(self._take_slot, call.api, *slot)
            async with self._auth.calling(take_slot, forbidden_locks=forbidden_locks):
                return await self._attempt(call, attempt)
        except HssNotFoundError as err:
            missing, task = self._missing, call.task
            if missing is not None and task is not None and err.error_code == "HSS.0011":
                await missing.add(task, err)
            raise

    async def _after_retryable(self, api: HssApi, err: HssError, retries: _Retries) -> None:
        """Wait before the next attempt, or re-raise ``err`` when retrying is pointless."""
        budget = self._budgets[api]
        if isinstance(err, HssThrottledError):
            retries.throttles += 1
            if budget is not None:
                # Tell every replica sharing the budget, even when we give up ourselves.
                await budget.penalize(err.retry_after)
            wait = self._backoff(retries.throttles)
            if err.retry_after is not None:
                wait = err.retry_after
            spent = retries.throttles >= self._max_throttles
        else:
            retries.failures += 1
            wait = self._backoff(retries.failures)
            spent = retries.failures >= self._max_attempts
        if spent or wait > self._max_retry_wait:
            raise err
        await self._sleep(wait)

    def _backoff(self, attempt: int) -> float:
        # Full jitter: replicas that failed together do not retry together.
        return self._rng() * min(self._backoff_max, self._backoff_base * 2.0 ** (attempt - 1))

    async def _attempt(self, call: _Call[A], attempt: int) -> A:
        started = time.monotonic()
        sent_at = time.time()
        outcome = _CallOutcome()
        try:
            response = await self._send(call.url)
            outcome.status = response.status_code
            outcome.request_id = response.headers.get("X-Request-Id", "")
            answer = call.read(response, sent_at)
            outcome.request_id = answer.request_id
            return answer
        except HssError as err:
            outcome.request_id = err.request_id or outcome.request_id
            outcome.error_code = err.error_code
            raise
        except asyncio.CancelledError:
            outcome.error_code = "CANCELLED"  # the slot is spent all the same: count it
            raise
        finally:
            self._log_call(call, attempt, outcome, time.monotonic() - started)

    def _log_call(
        self, call: _Call[A], attempt: int, outcome: _CallOutcome, seconds: float
    ) -> None:
        """One line and one count per HTTP attempt. The query is left out of ``path``: it
        only repeats the summary's parameters, and a URL is where credentials would sit if
        a gateway ever wanted them there."""
        status = metrics.hss_status_label(outcome.status, outcome.error_code)
        metrics.HSS_CALLS.labels(call.api.value, status).inc()
        shown = " ".join(part for part in (str(outcome.status or ""), outcome.error_code) if part)
        logger.info(
            "HSS GET %s %s -> %s in %.0f ms (attempt %d, HSS request id %s)",
            call.api.value,
            call.summary,
            shown or "error",
            seconds * 1000,
            attempt,
            outcome.request_id or "-",
            extra={
                "event": "hss_call",
                "api": call.api.value,
                "method": "GET",
                "path": urlsplit(call.url).path,
                "task": call.task.task_id if call.task is not None else None,
                "status": status,
                "error_code": outcome.error_code or None,
                "ms": round(seconds * 1000, 1),
                "attempt": attempt,
                "hss_request_id": outcome.request_id or None,
            },
        )

    async def _send(self, url: str) -> httpx.Response:
        try:
            async with asyncio.timeout(self._attempt_timeout):
                return await self._http.get(url)
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise HssUnavailableError(
                error_code="TIMEOUT", error_msg="HSS did not answer in time"
            ) from exc
        except httpx.RequestError as exc:
            raise HssUnavailableError(
                error_code="NETWORK",
                error_msg=f"could not reach HSS ({type(exc).__name__})",
            ) from exc


@dataclass(frozen=True)
class _Call(Generic[A]):
    """One request of either API: where it goes, how its answer is read (from the response
    and the time it was sent), and what its log line says."""

    api: HssApi
    url: str
    read: Callable[[httpx.Response, float], A]
    #: The log line's parameters (``task='t' offset=0 limit=200``).
    summary: str
    #: ListAssociateRegistries' task: what the missing-task guard remembers.
    task: TaskRef | None = None


@dataclass(slots=True)
class _CallOutcome:
    """What one HTTP attempt got, filled in as it goes."""

    status: int | None = None
    error_code: str = ""
    request_id: str = ""


@dataclass(slots=True)
class _Retries:
    """What one page's retries have cost so far: failed attempts, and 429s waited out."""

    failures: int = 0
    throttles: int = 0


class _Sweep(Generic[R]):
    """What one pass over the pages saw, and the question its pages belong to."""

    def __init__(self, ticket: Ticket) -> None:
        self.ticket = ticket
        self.rows: dict[object, R] = {}
        self.totals_seen: list[int] = []
        self.calls = 0
        self.first_sent_at = 0.0

    @property
    def total(self) -> int:
        return self.totals_seen[-1]

    @property
    def moved(self) -> bool:
        """``total_num`` changed between pages: this pass is lost."""
        return len(self.totals_seen) > 1

    @property
    def consistent(self) -> bool:
        return not self.moved and len(self.rows) == self.total

    def add(self, total_num: int, keyed: Iterable[tuple[object, R]]) -> None:
        if not self.totals_seen or self.totals_seen[-1] != total_num:
            self.totals_seen.append(total_num)
        for key, row in keyed:
            self.rows[key] = row  # later sightings win: they are newer

    def log_inconsistent(self, what: str, round_no: int) -> None:
        logger.warning(
            "HSS pages inconsistent for %s (round %d): total_num %s, %d unique rows",
            what,
            round_no,
            "/".join(str(t) for t in self.totals_seen),
            len(self.rows),
        )


def _by_registry_id(rows: Iterable[Registry]) -> Iterable[tuple[object, Registry]]:
    # A row without an id cannot be matched, so only an identical copy of it is a duplicate.
    return ((row.registry_id or row, row) for row in rows)


def _inconsistent(what: str) -> HssUnavailableError:
    return HssUnavailableError(
        error_code="INCONSISTENT_PAGES",
        error_msg=(
            f"the {what} changed while it was being paged through, twice; "
            "no complete snapshot could be taken"
        ),
    )


__all__ = ["DEFAULT_TIMEOUT", "FetchResult", "HssClient"]
