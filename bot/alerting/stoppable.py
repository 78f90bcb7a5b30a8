"""One background step that shutting down may abandon.

A step of the scheduler or the run follower may wait minutes for background call slots;
shutdown must not wait with it, and the next leader redoes the step.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


async def unless_stopped(
    work: Coroutine[Any, Any, T], stopping: asyncio.Task[Any]
) -> asyncio.Task[T] | None:
    """Run ``work`` until it ends or ``stopping`` does; the ended task (its result or error
    to read), or None when ``work`` was abandoned (cancelled, and awaited so it cleans up)."""
    step = asyncio.create_task(work)
    try:
        await asyncio.wait({step, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not step.done():
            step.cancel()
            await asyncio.wait({step})
    return None if step.cancelled() else step
