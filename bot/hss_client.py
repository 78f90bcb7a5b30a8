"""HSS ListAssociateRegistries over httpx: validation, signing, retries, typed errors, paging.

Every HTTP attempt (retries included) first takes a slot from the shared ``CallBudget``: HSS
allows 5 calls a minute per IAM user, across every replica. Failures are translated here, at
the boundary, into the ``HssError`` tree:

    401/403                 HssAuthError         never retried (5 failures lock the AK/SK)
    429                     HssThrottledError    retried after Retry-After; budget penalized
    5xx, timeout, network,  HssUnavailableError  retried: exponential backoff, full jitter
    malformed 200 body
    404 or HSS.0011         HssNotFoundError     not retried
    other 4xx, 3xx          HssRequestError      not retried
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any

import httpx

from bot.budget import CallBudget, Priority
from bot.errors import (
    CommandError,
    HssAuthError,
    HssError,
    HssNotFoundError,
    HssRequestError,
    HssThrottledError,
    HssUnavailableError,
)
from bot.models import (
    EP_ID_MAX,
    OFFSET_MAX,
    PAGE_LIMIT_MAX,
    PAGE_LIMIT_MIN,
    PROJECT_ID_MAX,
    REGISTRY_NAME_MAX,
    REGISTRY_TYPES,
    TASK_ID_MAX,
    ApiFilter,
    Registry,
    RegistryPage,
    SyncStatus,
    TaskRef,
)
from bot.signer import Credentials, HssAuth, canonical_query, encoded_path

logger = logging.getLogger(__name__)

#: A chat user is waiting: fail over to the mirror quickly instead of the SDK's 60 s / 120 s.
DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=3.0, pool=3.0)
#: Wall-clock bound on one attempt (connect + send + whole body), whatever trickles in.
DEFAULT_ATTEMPT_TIMEOUT = 15.0
#: A Retry-After longer than this is not waited out in-line; the caller gets the 429.
DEFAULT_MAX_RETRY_WAIT = 60.0
#: Longest error text kept from a response body (gateways may send whole HTML pages).
_MAX_ERROR_TEXT = 300

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
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        max_attempts: int = 3,
        attempt_timeout: float = DEFAULT_ATTEMPT_TIMEOUT,
        backoff_base: float = 0.5,
        backoff_max: float = 8.0,
        max_retry_wait: float = DEFAULT_MAX_RETRY_WAIT,
        sleep: Sleep = asyncio.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._endpoint = endpoint.rstrip("/")
        self._project_id = project_id
        self._budget = budget
        self._max_attempts = max_attempts
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
    ) -> RegistryPage:
        """One page; raises ``CommandError`` (no call made) for out-of-range parameters."""
        page, _ = await self._list_page(task, flt, offset=offset, limit=limit, priority=priority)
        return page

    async def fetch_all(
        self,
        task: TaskRef,
        flt: ApiFilter,
        *,
        priority: Priority = Priority.INTERACTIVE,
        limit: int = 200,
        first: RegistryPage | None = None,
    ) -> FetchResult:
        """All pages, de-duplicated by ``registry_id``; complete and consistent or an error.

        If ``total_num`` moves between pages or the unique rows do not add up to it, the
        whole fetch restarts once from offset 0; a second inconsistency raises
        ``HssUnavailableError``. ``first`` is an already fetched page 0: paging continues
        after its rows (so it may have been fetched with a smaller limit); a restart does not
        reuse it. Counting cannot see a move that keeps both numbers (one row leaves ahead
        of the cursor while another joins behind it); the next refresh corrects that.
        """
        self._validate(task, flt, offset=0, limit=limit)
        calls = 0
        for round_no in (1, 2):
            sweep = _Sweep()
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
                task, flt, offset=0, limit=limit, priority=priority
            )
            offset = limit
        else:
            # A given page 0 may have been fetched with another limit: go on after its rows.
            offset = len(first.registries)
        sweep.add(first)
        sweep.first_sent_at = first.sent_at or time.time()
        while offset < sweep.total and offset <= OFFSET_MAX:
            page, attempts = await self._list_page(
                task, flt, offset=offset, limit=limit, priority=priority
            )
            sweep.calls += attempts
            sweep.add(page)
            if len(sweep.totals_seen) > 1 or not page.registries:
                break  # the list changed under us: this pass is lost, stop spending calls
            offset += limit
        return len(sweep.totals_seen) == 1 and len(sweep.rows) == sweep.total

    async def _list_page(
        self, task: TaskRef, flt: ApiFilter, *, offset: int, limit: int, priority: Priority
    ) -> tuple[RegistryPage, int]:
        """One page and the number of HTTP attempts it took."""
        self._validate(task, flt, offset=offset, limit=limit)
        path = encoded_path(
            ["v5", task.project_id, "image", "image-sync", "tasks", task.task_id, "registries"]
        )
        url = f"{self._endpoint}{path}?{canonical_query(_query(task, flt, offset, limit))}"
        for attempt in range(1, self._max_attempts + 1):
            if self._budget is not None:
                await self._budget.acquire(priority)
            sent_at = time.time()
            try:
                page = await self._attempt(url, task, offset=offset, limit=limit, attempt=attempt)
                return dataclasses.replace(page, sent_at=sent_at), attempt
            except (HssThrottledError, HssUnavailableError) as err:
                await self._after_retryable(err, attempt)
        raise AssertionError("unreachable: the last attempt re-raises")

    async def _after_retryable(self, err: HssError, attempt: int) -> None:
        """Wait before the next attempt, or re-raise ``err`` when retrying is pointless."""
        wait = self._backoff(attempt)
        if isinstance(err, HssThrottledError):
            if self._budget is not None:
                # Tell every replica sharing the budget, even when we give up ourselves.
                await self._budget.penalize(err.retry_after)
            if err.retry_after is not None:
                wait = err.retry_after
        if attempt >= self._max_attempts or wait > self._max_retry_wait:
            raise err
        await self._sleep(wait)

    def _backoff(self, attempt: int) -> float:
        # Full jitter: replicas that failed together do not retry together.
        return self._rng() * min(self._backoff_max, self._backoff_base * 2.0 ** (attempt - 1))

    async def _attempt(
        self, url: str, task: TaskRef, *, offset: int, limit: int, attempt: int
    ) -> RegistryPage:
        started = time.monotonic()
        outcome = "error"
        request_id = ""
        try:
            response = await self._send(url)
            outcome = str(response.status_code)
            request_id = response.headers.get("X-Request-Id", "")
            page = self._translate(response, offset=offset, limit=limit)
            request_id = page.request_id
            return page
        except HssError as err:
            request_id = err.request_id or request_id
            outcome = f"{outcome} {err.error_code}"
            raise
        finally:
            logger.info(
                "HSS GET registries task=%r offset=%d limit=%d -> %s in %.0f ms "
                "(attempt %d/%d, request id %s)",
                task.task_id,
                offset,
                limit,
                outcome,
                (time.monotonic() - started) * 1000,
                attempt,
                self._max_attempts,
                request_id or "-",
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

    def _translate(self, response: httpx.Response, *, offset: int, limit: int) -> RegistryPage:
        if response.is_success:
            return _parse_page(response, offset=offset, limit=limit)
        raise self._error_for(response)

    def _error_for(self, response: httpx.Response) -> HssError:
        status = response.status_code
        body = _json_or_none(response)
        fields = body if isinstance(body, dict) else {}
        code = _text(fields.get("error_code")) or f"HTTP {status}"
        msg = _text(fields.get("error_msg")) or response.reason_phrase or "no error message"
        kwargs: dict[str, Any] = {
            "error_code": self._scrub(code)[:_MAX_ERROR_TEXT],
            "error_msg": self._scrub(msg)[:_MAX_ERROR_TEXT],
            "request_id": response.headers.get("X-Request-Id") or _text(fields.get("request_id")),
            "status": status,
        }
        if status in (401, 403):
            return HssAuthError(**kwargs)
        if status == 429:
            return HssThrottledError(retry_after=_retry_after(response), **kwargs)
        if status == 404 or code == "HSS.0011":
            return HssNotFoundError(**kwargs)
        if status >= 500:
            return HssUnavailableError(**kwargs)
        return HssRequestError(**kwargs)

    def _scrub(self, text: str) -> str:
        # A gateway may echo the Access key or a token back; never pass it on.
        for secret in self._secrets:
            text = text.replace(secret, "********")
        return text

    def _validate(self, task: TaskRef, flt: ApiFilter, *, offset: int, limit: int) -> None:
        _check_text("project id", task.project_id, PROJECT_ID_MAX)
        if task.project_id != self._project_id:
            raise CommandError(
                f"Project id {task.project_id!r} is not the project this bot is configured "
                f"for ({self._project_id!r})."
            )
        _check_text("task id", task.task_id, TASK_ID_MAX)
        if task.enterprise_project_id is not None:
            _check_text("enterprise project id", task.enterprise_project_id, EP_ID_MAX)
        if flt.registry_name is not None:
            _check_text("registry name", flt.registry_name, REGISTRY_NAME_MAX)
        _canonical_types(flt.registry_types)
        _check_status(flt.sync_status)
        _check_int("offset", offset, 0, OFFSET_MAX)
        _check_int("limit", limit, PAGE_LIMIT_MIN, PAGE_LIMIT_MAX)


class _Sweep:
    """What one pass over the pages saw."""

    def __init__(self) -> None:
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


# --- request building and validation (pure) ---


def _query(task: TaskRef, flt: ApiFilter, offset: int, limit: int) -> list[tuple[str, str]]:
    params = [("offset", str(offset)), ("limit", str(limit))]
    if task.enterprise_project_id is not None:
        params.append(("enterprise_project_id", task.enterprise_project_id))
    if flt.registry_name is not None:
        params.append(("registry_name", flt.registry_name))
    types = _canonical_types(flt.registry_types)
    if types:
        params.append(("registry_type", types))
    if flt.sync_status is not None:
        params.append(("sync_status", SyncStatus(flt.sync_status).value))
    return params


def _check_text(what: str, value: object, maximum: int) -> None:
    if not isinstance(value, str) or not 1 <= len(value) <= maximum:
        got = f"{len(value)} characters" if isinstance(value, str) else type(value).__name__
        raise CommandError(f"The {what} must be 1-{maximum} characters long (got {got}).")


def _check_int(what: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise CommandError(
            f"The {what} must be a whole number from {low} to {high:,} (got {value!r})."
        )


def _check_status(status: object) -> None:
    accepted = [s.value for s in SyncStatus]
    if status is not None and status not in accepted:
        raise CommandError(f"Unknown sync status {status!r}; use one of {', '.join(accepted)}.")


def _canonical_types(types: frozenset[str]) -> str:
    """Comma-joined, sorted API spellings; registry types are matched case-insensitively."""
    spelling = {t.lower(): t for t in REGISTRY_TYPES}
    unknown = sorted(repr(t) for t in types if not isinstance(t, str) or t.lower() not in spelling)
    if unknown:
        raise CommandError(
            f"Unknown registry type {', '.join(unknown)}; use any of {', '.join(REGISTRY_TYPES)}."
        )
    return ",".join(sorted({spelling[t.lower()] for t in types}))


# --- response parsing (pure) ---


def _malformed(why: str, response: httpx.Response) -> HssUnavailableError:
    return HssUnavailableError(
        error_code="MALFORMED_RESPONSE",
        error_msg=f"HSS answered {response.status_code} but {why}",
        request_id=response.headers.get("X-Request-Id", ""),
        status=response.status_code,
    )


def _json_or_none(response: httpx.Response) -> object:
    try:
        return response.json()
    except ValueError:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
        return None


def _parse_page(response: httpx.Response, *, offset: int, limit: int) -> RegistryPage:
    body = _json_or_none(response)
    if not isinstance(body, dict):
        raise _malformed("the body is not a JSON object", response)
    raw_rows = body.get("data_list")
    if raw_rows is None:
        raw_rows = []
    if not isinstance(raw_rows, list) or not all(isinstance(r, dict) for r in raw_rows):
        raise _malformed("data_list is not a list of objects", response)
    rows = tuple(_registry(r) for r in raw_rows)
    total = _total_num(body.get("total_num"), offset=offset, limit=limit, rows=len(rows))
    if total is None:
        raise _malformed("total_num is missing on a full page", response)
    request_id = response.headers.get("X-Request-Id") or _text(body.get("request_id"))
    return RegistryPage(total_num=total, registries=rows, request_id=request_id)


def _total_num(raw: object, *, offset: int, limit: int, rows: int) -> int | None:
    """``total_num`` as an int; when absent it is inferred only from a short (last) page."""
    if isinstance(raw, str) and raw.strip().isdigit():
        raw = int(raw)
    if isinstance(raw, float) and raw.is_integer():
        raw = int(raw)
    if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0:
        return raw
    # Without a count we only know where the list ends if this page came back short.
    return offset + rows if rows < limit else None


def _registry(raw: Mapping[str, object]) -> Registry:
    return Registry(
        registry_id=_text(raw.get("registry_id")),
        registry_name=_text(raw.get("registry_name")),
        registry_type=_text(raw.get("registry_type")),
        sync_status=_text(raw.get("sync_status")),
        failed_reason=_text(raw.get("failed_reason")),
    )


def _text(value: object) -> str:
    """Strings as-is, numbers as their text, anything else (null, lists, objects) empty."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return ""


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds from ``Retry-After`` (delta-seconds or HTTP date); None when absent/invalid."""
    raw = response.headers.get("Retry-After", "").strip()
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(raw).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


__all__ = ["DEFAULT_TIMEOUT", "FetchResult", "HssClient"]
