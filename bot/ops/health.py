"""Readiness: may this replica take traffic? ``/readyz`` answers from :class:`Readiness`.

Readiness is for routing: a replica that answers 503 is taken out of the load balancer, so
503 means "send this traffic to another replica", and is kept for what stops *this* replica
from serving. A fault every replica shares, that still leaves the bot answering, is
reported as *degraded* instead (200, ``"degraded": [...]``): taking every replica out at
once would turn a partial outage into a whole one (no Slack request reaches any of them).

Not ready (503, ``"reasons": [...]``):

- shutting down (SIGTERM received: finishing work in hand, new traffic goes elsewhere);
- Slack's ``auth.test`` failed for the bot token (Bolt then refuses every request; checked
  at start-up, a failure re-tried when a probe comes and the last try is 10 s old, a pass
  re-checked every 5 minutes);
- Socket Mode only: Slack's WebSocket is not connected (no request reaches this replica).

Degraded (200, ``"degraded": [...]``), each also a ``checks`` entry:

- Redis does not answer PING within a second: lookups go on from this replica's memory
  (its own mirror copy and call budget), while watches, alerts and the shared budget wait
  for Redis. Alert on ``hss_sync_redis_up == 0`` in ``/metrics``;
- HSS is in an authentication lock-out (the lookup service's lock, set on a 401/403): the
  bot answers from the mirror, with the data's age, but fetches nothing new until the
  credentials are fixed. Alert on ``hss_sync_hss_calls_total{status=~"401|403"}`` rising
  and on ``hss_sync_mirror_age_seconds``.

The configuration is valid too, but is not checked here: ``run`` refuses to start without
what it needs, so ``checks.config`` is always ``ok``.

:func:`readiness` and :func:`degradations` turn the check results into reasons, pure.
Reasons name what is wrong with error codes and exception class names only, never a message
that could quote a URL, a token or a key.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.lookup import LookupService
from bot.storage.outage import PING_FAILED, STORE_UNAVAILABLE

logger = logging.getLogger(__name__)

REDIS_TIMEOUT = 1.0
SLACK_TIMEOUT = 3.0
#: A failed auth.test is tried again by a probe at most this often.
SLACK_RETRY_FAILED = 10.0
#: A passed auth.test is confirmed this often (a token can be revoked while we run).
SLACK_RECHECK_PASSED = 300.0
NOT_CHECKED = "not_checked_yet"
_CODE = re.compile(r"[^A-Za-z0-9_.-]")
#: Reading the HSS lock failed or took too long: not known this time.
_LOCK_UNKNOWN: tuple[type[BaseException], ...] = (TimeoutError, *STORE_UNAVAILABLE)


def _code(text: str) -> str:
    """An error code as it may appear in a reason: short, no spaces, nothing quoted."""
    return _CODE.sub("_", text)[:48] or "unknown"


@dataclass(frozen=True, slots=True)
class CheckResults:
    """What each check found: None means fine, a string is a short error code."""

    redis: str | None = None
    slack: str | None = None
    hss_auth: str | None = None
    #: SIGTERM received: finishing work in hand; send new traffic elsewhere.
    stopping: bool = False
    #: Socket Mode only: Slack's WebSocket is not (or no longer) connected.
    socket_down: bool = False


def readiness(results: CheckResults) -> tuple[bool, list[str]]:
    """(ready, the reasons it is not), pure: only what stops this replica from serving."""
    reasons = []
    if results.stopping:
        reasons.append("shutting down")
    if results.slack is not None:
        reasons.append(f"slack auth.test failed ({results.slack})")
    if results.socket_down:
        reasons.append("slack socket mode not connected (see the log for why)")
    return not reasons, reasons


def degradations(results: CheckResults) -> list[str]:
    """What is wrong while the replica still serves, pure (see the module docstring)."""
    degraded = []
    if results.redis is not None:
        degraded.append(
            f"redis unreachable ({results.redis}): lookups answer from this replica's memory; "
            "watches and alerts wait for Redis"
        )
    if results.hss_auth is not None:
        degraded.append(
            f"hss authentication locked out after {results.hss_auth}: answers come from the "
            "mirror only; a corrected AK/SK pair lifts it, or run hss-sync-bot reset-auth "
            "once the cause is fixed"
        )
    return degraded


def body(results: CheckResults) -> tuple[int, dict[str, Any]]:
    """The ``/readyz`` HTTP status and JSON body: 200 when ready (``degraded`` listed when
    something is), else 503 with the ``reasons``."""
    ready, reasons = readiness(results)
    degraded = degradations(results)
    checks = {
        "config": "ok",  # kept in the body that monitors read; see the module docstring
        "redis": results.redis or "ok",
        "slack": results.slack or "ok",
        "hss_auth": results.hss_auth or "ok",
        "shutdown": "stopping" if results.stopping else "no",
        "socket_mode": "down" if results.socket_down else "ok",
    }
    doc: dict[str, Any] = {"ready": ready}
    if not ready:
        doc["reasons"] = reasons
    if degraded:
        doc["degraded"] = degraded
    doc["checks"] = checks
    return (200 if ready else 503), doc


class SlackAuth:
    """The bot token's ``auth.test``, remembered between probes."""

    def __init__(
        self,
        client: AsyncWebClient,
        *,
        timeout: float = SLACK_TIMEOUT,
        retry_failed: float = SLACK_RETRY_FAILED,
        recheck_passed: float = SLACK_RECHECK_PASSED,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._timeout = timeout
        self._retry_failed = retry_failed
        self._recheck_passed = recheck_passed
        self._clock = clock
        self._lock = asyncio.Lock()
        self.error: str | None = NOT_CHECKED
        self._checked_at: float | None = None

    async def check(self) -> str | None:
        """Call ``auth.test`` now; the error code, or None when it passed."""
        async with self._lock:
            return await self._check()

    async def current(self) -> str | None:
        """The last result, checked again first when it is due."""
        async with self._lock:  # concurrent probes share one call
            if self._due():
                return await self._check()
            return self.error

    def _due(self) -> bool:
        if self._checked_at is None:
            return True
        every = self._recheck_passed if self.error is None else self._retry_failed
        return self._clock() - self._checked_at >= every

    async def _check(self) -> str | None:
        error = await self._auth_test()
        self._checked_at = self._clock()
        if error != self.error:
            if error is None:
                logger.info("Slack auth.test passed")
            else:
                logger.warning("Slack auth.test failed: %s", error)
        self.error = error
        return error

    async def _auth_test(self) -> str | None:
        try:
            async with asyncio.timeout(self._timeout):
                await self._client.auth_test()
        except SlackApiError as exc:
            return _code(str(exc.response.get("error") or f"http_{exc.response.status_code}"))
        except TimeoutError:
            return "timeout"
        except (aiohttp.ClientError, OSError) as exc:
            return _code(type(exc).__name__)
        return None


class Readiness:
    """Runs the checks for ``/readyz``. ``slack`` None: Slack is not checked (no Slack)."""

    def __init__(
        self,
        *,
        redis: aioredis.Redis,
        lookups: LookupService,
        slack: SlackAuth | None,
        redis_timeout: float = REDIS_TIMEOUT,
    ) -> None:
        self._redis = redis
        self._lookups = lookups
        self.slack = slack
        self._redis_timeout = redis_timeout
        #: Set when shutdown begins; ``/readyz`` then answers 503 until the listener closes.
        self.stopping = False
        #: Socket Mode: whether Slack's WebSocket is up (None in HTTP mode: nothing to ask).
        self.socket_connected: Callable[[], Awaitable[bool]] | None = None

    async def results(self) -> CheckResults:
        redis_error, slack_error, hss_auth = await asyncio.gather(
            self._ping(), self._slack(), self._hss_lock()
        )
        return CheckResults(
            redis=redis_error,
            slack=slack_error,
            hss_auth=hss_auth,
            stopping=self.stopping,
            socket_down=await self._socket_down(),
        )

    async def _socket_down(self) -> bool:
        if self.socket_connected is None:
            return False
        try:
            return not await self.socket_connected()
        except Exception:  # a client in the middle of reconnecting: not connected
            return True

    async def _ping(self) -> str | None:
        try:
            async with asyncio.timeout(self._redis_timeout):
                await self._redis.ping()
        except TimeoutError:
            return "timeout"
        except PING_FAILED as exc:  # refused, reset, NOAUTH...: all "unreachable"
            return _code(type(exc).__name__)
        return None

    async def _slack(self) -> str | None:
        return await self.slack.current() if self.slack is not None else None

    async def _hss_lock(self) -> str | None:
        """The lock the lookups obey: Redis's, or while Redis is down this process's copy."""
        try:
            async with asyncio.timeout(self._redis_timeout):
                info = await self._lookups.auth_lock()
        except _LOCK_UNKNOWN:  # unknown right now; the Redis check says why
            return None
        if info is None:
            return None
        return _code(str(info.get("error_code") or f"http_{info.get('status', 401)}"))
