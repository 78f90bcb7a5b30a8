"""Redis outages: which errors mean one, and the gate that logs each outage once.

The errors, each tuple defined here and nowhere else:

- :data:`REDIS_OUTAGE`: Redis is unreachable or not serving right now (not "we sent
  nonsense"); what the parts with a fallback switch on;
- :data:`STORE_UNAVAILABLE`: that, or a :class:`~bot.errors.StoreError` (the watch store has
  no fallback and says so with one): what a loop or a reader of shared state catches to mean
  "not now, try again later";
- :data:`PING_FAILED`: whatever a ``PING`` can fail with; any of them means "Redis cannot
  serve us", which the health checks and ``reset-auth`` report.

:class:`OutageGate` is the one "log once per outage" switch: one warning when an outage
starts, one info line when it ends, in its user's logger and wording. :class:`RedisHealth`
is the gate the mirror store and the call budget share: one warning per outage for both
(not one per part), and while Redis is down only one caller per ``probe_interval`` tries
it; the others go straight to the fallback instead of each paying a connection timeout
inside Slack's 3-second ack.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.exceptions as rex

from bot.errors import StoreError

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Errors that mean "Redis is unreachable or not serving right now", not "we sent nonsense".
REDIS_OUTAGE: tuple[type[BaseException], ...] = (
    rex.ConnectionError,  # includes BusyLoadingError (a restarted server loading its data)
    rex.TimeoutError,
    rex.ReadOnlyError,  # a replica promoted/demoted under us
    rex.TryAgainError,
    rex.ClusterDownError,
    OSError,
)
#: An outage, or a store's ``StoreError`` about one: the work waits and is tried again.
STORE_UNAVAILABLE: tuple[type[BaseException], ...] = (StoreError, *REDIS_OUTAGE)
#: What a ``PING`` fails with: refused, reset, timed out, NOAUTH, a server still loading...
#: For a ping every one means "Redis cannot serve us", not a bug of ours.
PING_FAILED: tuple[type[BaseException], ...] = (rex.RedisError, OSError)


def class_name(exc: BaseException) -> str:
    """An outage's detail for a log line: the class only, never a message quoting a URL."""
    return type(exc).__name__


class OutageGate:
    """Whether an outage is on, logging its start once (``started`` % detail of the first
    failure, a warning) and its end once (``ended``, info), however often callers fail or
    succeed in between."""

    def __init__(
        self,
        *,
        logger: logging.Logger,
        started: str,
        ended: str,
        detail: Callable[[BaseException], object] = class_name,
    ) -> None:
        self._logger = logger
        self._started = started
        self._ended = ended
        self._detail = detail
        self._down = False

    @property
    def down(self) -> bool:
        return self._down

    def failed(self, exc: BaseException) -> None:
        if not self._down:
            self._down = True
            self._logger.warning(self._started, self._detail(exc))

    def succeeded(self) -> None:
        if self._down:
            self._down = False
            self._logger.info(self._ended)


class RedisHealth(OutageGate):
    """The outage gate shared by the mirror store and the call budget, probing Redis at most
    once per ``probe_interval`` while it is down."""

    def __init__(
        self, *, probe_interval: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__(
            logger=logger,
            started="Redis is unreachable (%s); the mirror and the HSS call budget are kept in "
            "this process until it is back",
            ended="Redis is reachable again; mirror and call budget are shared again",
        )
        self._probe_interval = probe_interval
        self._clock = clock
        self._next_probe = 0.0

    def should_try(self) -> bool:
        """True when Redis is up, or down and this caller may probe it (claims the probe)."""
        if not self.down:
            return True
        if self._clock() < self._next_probe:
            return False
        self._next_probe = self._clock() + self._probe_interval
        return True

    def failed(self, exc: BaseException) -> None:
        self._next_probe = self._clock() + self._probe_interval
        super().failed(exc)


class Away:
    """Marks "Redis did not answer" (``None`` is a valid answer)."""


AWAY = Away()


async def on_redis(health: RedisHealth, op: Callable[[], Awaitable[T]]) -> T | Away:
    """``op`` on Redis through ``health`` (the gate the mirror and the budgets share):
    :data:`AWAY` at once while another caller probes an outage, or when ``op`` meets one."""
    if not health.should_try():
        return AWAY
    try:
        result = await op()
    except REDIS_OUTAGE as exc:
        health.failed(exc)
        return AWAY
    health.succeeded()
    return result
