"""One way to change Redis under ``WATCH``/``MULTI``: :func:`transact`.

The body reads with the ``watch`` keys WATCHed (and may WATCH more while it reads), then
calls ``pipe.multi()`` and queues its writes; :func:`transact` runs ``EXEC``. If a WATCHed
key changed in between, nothing is written and the body runs again from its reads. So a body
computes only from what it read in that run, and does nothing a rerun would repeat (log
lines, counters, other writes): those come after :func:`transact` returns. A body that
decides to write nothing returns without calling ``multi()``.

How many times: each lost race means another writer's transaction went through, so the
rounds a body can lose are bounded by the writers contending for its keys (a few replicas'
alerting loops, refreshes or watch commands). :data:`ATTEMPTS` is far above that: reaching
it means a livelock or a bug rather than load, and :func:`transact` then raises
:class:`Contended`, which each caller turns into its own "try again" or its next round.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import WatchError

from bot.errors import StoreError

T = TypeVar("T")

#: Lost races in a row after which a transaction gives up.
ATTEMPTS = 50


class Contended(StoreError):
    """A transaction lost its race ``attempts`` times in a row."""

    def __init__(self, attempts: int) -> None:
        super().__init__(f"Redis kept changing under this update ({attempts} tries); try again.")
        self.attempts = attempts


async def transact(
    redis: aioredis.Redis,
    body: Callable[[Pipeline], Awaitable[T]],
    *,
    watch: Sequence[str] = (),
    attempts: int = ATTEMPTS,
) -> T:
    """Run ``body`` in a transaction, from its reads again each time a WATCHed key changed
    before ``EXEC``; its result once its writes (if any) went through."""
    if attempts < 1:
        raise ValueError("a transaction needs at least one attempt")
    for _ in range(attempts):
        try:
            async with redis.pipeline(transaction=True) as pipe:
                if watch:
                    await pipe.watch(*watch)
                result = await body(pipe)
                if pipe.explicit_transaction:
                    await pipe.execute()
                return result
        except WatchError:
            continue
    raise Contended(attempts)
