"""Work a Slack listener leaves running after its ack.

Slack wants every command, button and event acknowledged within 3 seconds, and with
``process_before_response`` Bolt sends the acknowledgement only when the listener returns.
So a listener acknowledges and hands anything that may wait (on HSS, the call budget,
Redis or Slack's Web API) to :class:`Background`, which keeps the task (so that shutdown can
stop it), logs an unexpected error once, and lets tests wait until everything is done.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond

logger = logging.getLogger(__name__)

#: A button's work after its ack: the request body and the message's response_url.
ClickWork = Callable[[dict[str, Any], AsyncRespond], Awaitable[None]]
#: An event's work (Bolt acknowledges events itself).
EventWork = Callable[[dict[str, Any]], Awaitable[None]]


class Background:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    def spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``work`` in its own task (it copies the request's context: same request id)."""
        task = asyncio.create_task(_logged(work))
        self._tasks.add(task)
        self._idle.clear()
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not self._tasks:
            self._idle.set()

    def clicks(self, work: ClickWork) -> Callable[..., Awaitable[None]]:
        """A button listener: acknowledge at once, then ``work`` in the background."""

        async def listener(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
            await ack()
            self.spawn(_call(work, body, respond))

        return listener

    def events(self, work: EventWork) -> Callable[..., Awaitable[None]]:
        """An event listener: ``work`` in the background, so the event is acknowledged now."""

        async def listener(event: dict[str, Any]) -> None:
            self.spawn(_call_event(work, event))

        return listener

    async def settled(self) -> None:
        """Return once no work is running (work that starts more work counts until that ends)."""
        while self._tasks:
            await self._idle.wait()

    def running(self) -> int:
        return len(self._tasks)

    async def aclose(self) -> None:
        """Stop everything still running (shutdown)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def _call(work: ClickWork, body: dict[str, Any], respond: AsyncRespond) -> None:
    await work(body, respond)


async def _call_event(work: EventWork, event: dict[str, Any]) -> None:
    await work(event)


async def _logged(work: Coroutine[Any, Any, None]) -> None:
    try:
        await work
    except asyncio.CancelledError:
        raise
    except Exception:  # no Bolt error handler above work that runs after the ack: log it once
        logger.exception("unhandled error after acknowledging a Slack request")
