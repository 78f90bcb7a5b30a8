"""HSS ListAssociateRegistries over httpx: call budget, signing, timeouts, retries, paging.

Every HTTP attempt (retries included) first takes a slot from the shared ``CallBudget``: HSS
allows 5 calls a minute per IAM user, across every replica. The pages and retries of one fetch
are one question in the budget's queue (one ``Ticket``). With guards (:mod:`bot.hss.guards`),
a task HSS said lately does not exist is answered without a call, and each attempt passes the
authentication gate after its slot is granted. Parameters are checked (no call spent) and
responses read by :mod:`bot.hss.wire`; every failure leaves this boundary as one of the
``HssError`` tree:

    401/403                 HssAuthError         never retried (5 failures lock the AK/SK)
    429                     HssThrottledError    a wait, not a failure: retried after
                                                 Retry-After, budget penalized; given up
                                                 after ``max_throttles`` 429s for one page
    5xx, timeout, network,  HssUnavailableError  retried: exponential backoff, full jitter;
    malformed 200 body                           given up after ``max_attempts`` of them
    404 or HSS.0011         HssNotFoundError     not retried
    other 4xx, 3xx          HssRequestError      not retried
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from urllib.parse import urlsplit

import httpx

from bot.errors import HssError, HssNotFoundError, HssThrottledError, HssUnavailableError
from bot.hss import wire as hss_wire
from bot.hss.budget import CallBudget, Priority, Ticket
from bot.hss.guards import AuthGate, MissingTasks
from bot.hss.signer import Credentials, HssAuth
from bot.models import OFFSET_MAX, ApiFilter, Registry, RegistryPage, TaskRef
from bot.ops import metrics

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
    """ListAssociateRegistries for one project with one AK/SK (one 5-calls/minute budget)."""

    def __init__(
        self,
        *,
        endpoint: str,
        project_id: str,
        credentials: Credentials,
        budget: CallBudget | None = None,
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
        self._budget = budget
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
            sweep = _Sweep(place)
            consistent = await self._sweep(
                sweep, task, flt, priority=priority, limit=limit, first=first
            )
            calls += sweep.calls
            if consistent:
                return FetchResult(
                    registries=tuple(sweep.rows.values()),
                    total_num=sweep.total,
                    calls=calls,
                    # The data is as old as its first page; time spent waiting for budget
                    # slots before that must not count against its freshness.
                    started_at=sweep.first_sent_at,
                    finished_at=time.time(),
                )
            logger.warning(
                "HSS pages inconsistent for task=%r (round %d): total_num %s, %d unique rows",
                task.task_id,
                round_no,
                "/".join(str(t) for t in sweep.totals_seen),
                len(sweep.rows),
            )
            first = None  # the restart must not reuse a page from the inconsistent view
        raise HssUnavailableError(
            error_code="INCONSISTENT_PAGES",
            error_msg=(
                "the registry list changed while it was being paged through, twice; "
                "no complete snapshot could be taken"
            ),
        )

    async def _sweep(
        self,
        sweep: _Sweep,
        task: TaskRef,
        flt: ApiFilter,
        *,
        priority: Priority,
        limit: int,
        first: RegistryPage | None,
    ) -> bool:
        """One pass over every page into ``sweep``; True when the pass is self-consistent."""
        if first is None:
            first, sweep.calls = await self._list_page(
                task, flt, offset=0, limit=limit, priority=priority, ticket=sweep.ticket
            )
            offset = limit
        else:
            # A given page 0 may have been fetched with another limit: go on after its rows.
            offset = len(first.registries)
        sweep.add(first)
        sweep.first_sent_at = first.sent_at or time.time()
        while offset < sweep.total and offset <= OFFSET_MAX:
            page, attempts = await self._list_page(
                task, flt, offset=offset, limit=limit, priority=priority, ticket=sweep.ticket
            )
            sweep.calls += attempts
            sweep.add(page)
            if len(sweep.totals_seen) > 1 or not page.registries:
                break  # the list changed under us: this pass is lost, stop spending calls
            offset += limit
        return len(sweep.totals_seen) == 1 and len(sweep.rows) == sweep.total

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
        url = f"{self._endpoint}{target}"
        await self._refuse_before_queuing(task)
        retries = _Retries()
        for attempt in itertools.count(1):
            try:
                page = await self._guarded(
                    url, task, offset=offset, limit=limit, attempt=attempt, slot=(priority, ticket)
                )
                return page, attempt
            except (HssThrottledError, HssUnavailableError) as err:
                await self._after_retryable(err, retries)
        raise AssertionError("unreachable: the attempts are endless until one re-raises")

    async def _refuse_before_queuing(self, task: TaskRef) -> None:
        """What the guards know already, before a place in the budget's queue is taken."""
        known = None if self._missing is None else await self._missing.known(task)
        if known is not None:
            raise known
        if self._auth is not None:
            await self._auth.raise_if_locked()

    async def _take_slot(self, priority: Priority, ticket: Ticket) -> None:
        if self._budget is None:
            return
        asked = time.monotonic()
        await self._budget.acquire(priority, ticket=ticket)
        # Measured here, by the caller: one sample per granted call, whichever budget
        # (shared, in-process, failing over between them) granted it.
        metrics.BUDGET_WAIT.labels(priority.name.lower()).observe(time.monotonic() - asked)

    async def _guarded(
        self,
        url: str,
        task: TaskRef,
        *,
        offset: int,
        limit: int,
        attempt: int,
        slot: tuple[Priority, Ticket],
    ) -> RegistryPage:
        """A budget slot, then one attempt, through the authentication gate (which checks
        the lock-out again once the slot is granted); a missing task is remembered."""
        try:
            if self._auth is None:
                await self._take_slot(*slot)
                return await self._sent(url, task, offset=offset, limit=limit, attempt=attempt)
            async with self._auth.calling(lambda: self._take_slot(*slot)):
                return await self._sent(url, task, offset=offset, limit=limit, attempt=attempt)
        except HssNotFoundError as err:
            if self._missing is not None and err.error_code == "HSS.0011":
                await self._missing.add(task, err)
            raise

    async def _sent(
        self, url: str, task: TaskRef, *, offset: int, limit: int, attempt: int
    ) -> RegistryPage:
        sent_at = time.time()
        page = await self._attempt(url, task, offset=offset, limit=limit, attempt=attempt)
        return dataclasses.replace(page, sent_at=sent_at)

    async def _after_retryable(self, err: HssError, retries: _Retries) -> None:
        """Wait before the next attempt, or re-raise ``err`` when retrying is pointless."""
        if isinstance(err, HssThrottledError):
            retries.throttles += 1
            if self._budget is not None:
                # Tell every replica sharing the budget, even when we give up ourselves.
                await self._budget.penalize(err.retry_after)
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

    async def _attempt(
        self, url: str, task: TaskRef, *, offset: int, limit: int, attempt: int
    ) -> RegistryPage:
        started = time.monotonic()
        call = _CallOutcome()
        try:
            response = await self._send(url)
            call.status = response.status_code
            call.request_id = response.headers.get("X-Request-Id", "")
            page = hss_wire.read_response(
                response, offset=offset, limit=limit, secrets=self._secrets
            )
            call.request_id = page.request_id
            return page
        except HssError as err:
            call.request_id = err.request_id or call.request_id
            call.error_code = err.error_code
            raise
        except asyncio.CancelledError:
            call.error_code = "CANCELLED"  # the slot is spent all the same: count it
            raise
        finally:
            self._log_call(url, task, offset, limit, attempt, call, time.monotonic() - started)

    def _log_call(
        self,
        url: str,
        task: TaskRef,
        offset: int,
        limit: int,
        attempt: int,
        call: _CallOutcome,
        seconds: float,
    ) -> None:
        """One line and one count per HTTP attempt. The query is left out of ``path``: it
        only repeats task, offset and limit, and a URL is where credentials would sit if a
        gateway ever wanted them there."""
        status = metrics.hss_status_label(call.status, call.error_code)
        metrics.HSS_CALLS.labels(status).inc()
        shown = " ".join(part for part in (str(call.status or ""), call.error_code) if part)
        logger.info(
            "HSS GET registries task=%r offset=%d limit=%d -> %s in %.0f ms "
            "(attempt %d, HSS request id %s)",
            task.task_id,
            offset,
            limit,
            shown or "error",
            seconds * 1000,
            attempt,
            call.request_id or "-",
            extra={
                "event": "hss_call",
                "method": "GET",
                "path": urlsplit(url).path,
                "task": task.task_id,
                "status": status,
                "error_code": call.error_code or None,
                "ms": round(seconds * 1000, 1),
                "attempt": attempt,
                "hss_request_id": call.request_id or None,
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


class _Sweep:
    """What one pass over the pages saw, and the question its pages belong to."""

    def __init__(self, ticket: Ticket) -> None:
        self.ticket = ticket
        self.rows: dict[object, Registry] = {}
        self.totals_seen: list[int] = []
        self.calls = 0
        self.first_sent_at = 0.0

    @property
    def total(self) -> int:
        return self.totals_seen[-1]

    def add(self, page: RegistryPage) -> None:
        if not self.totals_seen or self.totals_seen[-1] != page.total_num:
            self.totals_seen.append(page.total_num)
        for row in page.registries:
            # Later sightings win: they are newer. A row without an id cannot be matched,
            # so only an identical copy of it counts as a duplicate.
            self.rows[row.registry_id or row] = row


__all__ = ["DEFAULT_TIMEOUT", "FetchResult", "HssClient"]
