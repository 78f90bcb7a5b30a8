"""Helpers shared by the hand-run benchmarks: figures, percentiles, quiet logs, and a watcher
that timestamps every ``response_url`` post the bot makes to the Slack stand-in."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from bot.sandbox.slack_standin import SlackStandIn

INF = math.inf


def emit(name: str, value: float | int | str) -> None:
    """One figure, one line: ``name value``."""
    if isinstance(value, float):
        text = "inf" if math.isinf(value) else f"{value:.3f}"
    else:
        text = str(value)
    print(f"{name} {text}", flush=True)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100); ``inf`` entries count (unanswered)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def ms(seconds: float) -> float:
    return seconds * 1000.0


def ratio(a: float, b: float) -> float:
    return a / b if b else INF


def quiet(names: Iterable[str] = ()) -> None:
    """Only errors from the bot and libraries: the figures are the output."""
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    for name in names:
        logging.getLogger(name).setLevel(logging.CRITICAL)


class ResponseWatcher:
    """Timestamps each ``response_url`` post as the stand-in records it.

    One waiter on the stand-in (instead of one per request) keeps the cost per post O(1)
    however many lookups are in flight.
    """

    def __init__(self, standin: SlackStandIn) -> None:
        self._standin = standin
        self._seen = 0
        self.posts: dict[str, list[tuple[float, dict[str, Any]]]] = defaultdict(list)
        self._waiting: dict[str, list[asyncio.Future[None]]] = defaultdict(list)
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ResponseWatcher:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await self._standin.wait_for(lambda cs: len(cs) > self._seen, timeout=3600.0)
            now = time.perf_counter()
            calls = self._standin.calls
            for call in calls[self._seen :]:
                if call.kind == "response":
                    self.posts[call.name].append((now, call.body))
                    for fut in self._waiting.pop(call.name, []):
                        if not fut.done():
                            fut.set_result(None)
            self._seen = len(calls)

    async def first(self, ident: str, *, deadline: float) -> tuple[float, dict[str, Any]] | None:
        """The first post for ``ident`` (perf_counter time, body), or None by ``deadline``."""
        while not self.posts.get(ident):
            left = deadline - time.perf_counter()
            if left <= 0:
                return None
            fut = asyncio.get_running_loop().create_future()
            self._waiting[ident].append(fut)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(fut, left)
        return self.posts[ident][0]
