"""Refused requests in the log: one short line each, but never a flood.

A client sending junk to ``/slack/events`` (or a misconfigured proxy) could otherwise write
a line per request. The first ``burst`` refusals of each ``window`` are logged one by one;
the rest are counted and summed up in one line when the next window opens, so a flood of
any size writes at most ``burst + 1`` lines a window. Lines name a fixed reason, never what
the request held.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)


class RefusalLog:
    def __init__(
        self,
        *,
        burst: int = 5,
        window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._burst = burst
        self._window = window
        self._clock = clock
        self._opened = clock()
        self._logged = 0
        self._unlogged = 0

    def refused(self, status: int, reason: str) -> None:
        """Note one refused request: answered ``status`` for ``reason`` (a fixed phrase)."""
        now = self._clock()
        if now - self._opened >= self._window:
            self._summarise()
            self._opened, self._logged = now, 0
        if self._logged >= self._burst:
            self._unlogged += 1
            return
        self._logged += 1
        logger.warning(
            "refused a Slack request (HTTP %d): %s",
            status,
            reason,
            extra={"event": "slack_refused", "status": status, "reason": reason},
        )

    def _summarise(self) -> None:
        if self._unlogged:
            logger.warning(
                "refused %d more Slack requests in %.0f s, not logged one by one",
                self._unlogged,
                self._window,
                extra={"event": "slack_refused", "unlogged": self._unlogged},
            )
        self._unlogged = 0
