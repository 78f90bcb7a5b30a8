"""Whether Redis is answering, shared by every part that falls back when it is not.

The mirror store and the call budget both switch to in-process stand-ins during an outage.
Sharing one ``RedisHealth`` gives one warning per outage (not one per part), and while Redis
is down only one caller per ``probe_interval`` tries it: the others go straight to the
fallback instead of each paying a connection timeout inside Slack's 3-second ack.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import redis.exceptions as rex

logger = logging.getLogger(__name__)

#: Errors that mean "Redis is unreachable or not serving right now", not "we sent nonsense".
REDIS_OUTAGE: tuple[type[BaseException], ...] = (
    rex.ConnectionError,  # includes BusyLoadingError (a restarted server loading its data)
    rex.TimeoutError,
    rex.ReadOnlyError,  # a replica promoted/demoted under us
    rex.TryAgainError,
    rex.ClusterDownError,
    OSError,
)


class RedisHealth:
    def __init__(
        self, *, probe_interval: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._probe_interval = probe_interval
        self._clock = clock
        self._down = False
        self._next_probe = 0.0

    @property
    def down(self) -> bool:
        return self._down

    def should_try(self) -> bool:
        """True when Redis is up, or down and this caller may probe it (claims the probe)."""
        if not self._down:
            return True
        if self._clock() < self._next_probe:
            return False
        self._next_probe = self._clock() + self._probe_interval
        return True

    def failed(self, exc: BaseException) -> None:
        self._next_probe = self._clock() + self._probe_interval
        if not self._down:
            self._down = True
            logger.warning(
                "Redis is unreachable (%s); the mirror and the HSS call budget are kept in "
                "this process until it is back",
                type(exc).__name__,
            )

    def succeeded(self) -> None:
        if self._down:
            self._down = False
            logger.info("Redis is reachable again; mirror and call budget are shared again")
