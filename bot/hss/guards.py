"""What stops an HSS call before it is sent, shared in Redis by every replica and CLI run
(each process keeps its own copy, used while Redis is away):

- :class:`AuthGate`, per AK/SK pair (the auth scope). HSS locks an AK/SK for 5 minutes after
  more than 5 authentication failures in a row, so:

  - after a 401/403 nobody calls with the pair until an operator clears the lock-out
    (``reset-auth``) or the pair changes (a new scope);
  - until a call has got past the gateway with the pair (a 200, or an ``HSS.*`` error from
    the service behind it), at most one call is in flight: the others wait for its outcome.
    A burst of lookups with a wrong secret costs one 401, not one per call slot;
  - the lock-out is read again after the budget grants the slot, right before sending: a
    caller that queued before another's 401 does not send after it.

  "Proven" is kept in Redis (``keys.auth_proven``) for a day after the last success, so a
  restart does not put every replica back on probation; a 401 after success (a revoked
  key) locks as any other and clears the proof.
- :class:`MissingTasks`: tasks HSS said do not exist (``HSS.0011``), remembered for a short
  TTL: the same unknown id costs one call per TTL, not one per question.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.lock import Lock

from bot.errors import HssAuthError, HssError, HssNotFoundError
from bot.models import TaskRef
from bot.storage import keys
from bot.storage.lease import RedisLease, keep_alive
from bot.storage.outage import Away, RedisHealth, on_redis

logger = logging.getLogger(__name__)


#: A proof lasts this long after the last call that got past the gateway.
PROOF_TTL = 24 * 3600.0
#: The probe (the one call of an unproven pair) lives this long unless renewed: its holder
#: renews it while it waits for a slot and calls; a dead holder's expires by itself.
PROBE_TTL = 10.0
#: How often a process waiting for another's probe looks at its outcome (one waiter per
#: process looks; the others wait for it in the process).
PROBE_POLL = 0.1
#: How long "HSS says this task does not exist" is believed.
MISSING_TTL = 60.0


def passed_the_gateway(err: HssError) -> bool:
    """The service behind the gateway answered: the credentials were accepted."""
    return err.error_code.startswith("HSS.")


def lock_info(err: HssAuthError, now: float) -> dict[str, Any]:
    return {
        "error_code": err.error_code,
        "request_id": err.request_id,
        "status": err.status,
        "at": now,
    }


class LockedOut(HssAuthError):
    """The lock-out's error, raised instead of calling: not an answer HSS gave this call."""


def locked_error(info: dict[str, Any]) -> HssAuthError:
    """The error a caller gets instead of calling while the lock-out is in force."""
    return LockedOut(
        error_code=str(info.get("error_code", "APIGW.0301")),
        error_msg="calls stopped after an earlier authentication failure",
        request_id=str(info.get("request_id", "")),
        status=int(info.get("status", 401)),
    )


@dataclass(slots=True)
class _Probe:
    """This caller is the one call of an unproven pair (``lock``: its Redis probe, None
    while Redis is away and the process's turn is all there is)."""

    lock: Lock | None


class AuthGate:
    """The lock-out and the probation of one AK/SK pair (see the module docstring)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        scope: str,
        health: RedisHealth,
        clock: Callable[[], float] = time.time,
        probe_ttl: float = PROBE_TTL,
        poll: float = PROBE_POLL,
    ) -> None:
        self._redis = redis
        self._health = health
        self._clock = clock
        self._probe_ttl = probe_ttl
        self._poll = poll
        self._lock_key = keys.auth_lock(scope)
        self._proof_key = keys.auth_proven(scope)
        self._probe_key = keys.auth_probe(scope)
        # What Redis said last, and what this process learnt since it was away.
        self._locked: dict[str, Any] | None = None
        self._proven = False
        # One caller of this process contends for the probe; the others wait here.
        self._turn = asyncio.Lock()

    async def lock_info(self) -> dict[str, Any] | None:
        """The lock-out in force (error code, HSS request id, when), if any."""
        return (await self._state())[0]

    async def raise_if_locked(self) -> None:
        info = await self.lock_info()
        if info is not None:
            raise locked_error(info)

    async def set_lock(self, info: dict[str, Any] | None) -> None:
        """Lock calls out (``info`` of the failure) or allow them again (None); either way
        the pair has to prove itself again."""
        self._locked, self._proven = info, False

        async def write() -> None:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(self._proof_key)
                if info is None:
                    pipe.delete(self._lock_key)
                else:
                    pipe.set(self._lock_key, json.dumps(info))
                await pipe.execute()

        await on_redis(self._health, write)

    @contextlib.asynccontextmanager
    async def calling(
        self, take_slot: Callable[[], Awaitable[None]], *, forbidden_locks: bool = True
    ) -> AsyncIterator[None]:
        """Around one HTTP attempt: raises the lock-out's ``HssAuthError`` instead of
        calling, before ``take_slot`` (the budget's) and again once it is granted; while the
        pair is unproven, waits for and holds the probe first (so the slot's call is sent
        as soon as it is granted). A 401/403 locks calls out; an answer from past the
        gateway proves the pair. ``forbidden_locks=False``: a 403 (the user lacks this one
        API) neither locks nor proves: another API may still be granted."""
        probe = await self._admit()
        try:
            async with self._kept(probe):
                await take_slot()
                await self.raise_if_locked()
                try:
                    yield
                except HssAuthError as err:
                    if err.status != 403 or forbidden_locks:
                        await self.set_lock(lock_info(err, self._clock()))
                    raise
                except HssError as err:
                    if passed_the_gateway(err):
                        await self._prove()
                    raise
                await self._prove()
        finally:
            if probe is not None:
                self._turn.release()

    @staticmethod
    def _kept(probe: _Probe | None) -> contextlib.AbstractAsyncContextManager[object]:
        """The probe's lease, renewed while its holder waits for a slot and calls."""
        if probe is None or probe.lock is None:
            return contextlib.nullcontext()
        return keep_alive(RedisLease(probe.lock))

    async def _state(self) -> tuple[dict[str, Any] | None, bool]:
        got = await on_redis(
            self._health, lambda: self._redis.mget(self._lock_key, self._proof_key)
        )
        if not isinstance(got, Away):
            raw_lock, raw_proof = got
            self._locked = json.loads(raw_lock) if raw_lock else None
            self._proven = raw_proof is not None
        return self._locked, self._proven

    async def _cleared(self) -> bool:
        """True when proven; raises when locked out; False while on probation."""
        locked, proven = await self._state()
        if locked is not None:
            raise locked_error(locked)
        return proven

    async def _admit(self) -> _Probe | None:
        """None when the pair is proven; else wait for the probe and hold it."""
        if await self._cleared():
            return None
        await self._turn.acquire()
        try:
            while not await self._cleared():
                probe = await self._take_probe()
                if probe is not None:
                    return probe  # the process's turn is released after the call
                await asyncio.sleep(self._poll)
        except BaseException:
            self._turn.release()
            raise
        self._turn.release()
        return None

    async def _take_probe(self) -> _Probe | None:
        lock = self._redis.lock(self._probe_key, timeout=self._probe_ttl, blocking=False)
        taken = await on_redis(self._health, lock.acquire)
        if isinstance(taken, Away):
            return _Probe(lock=None)  # Redis away: this process's turn is the probe
        return _Probe(lock=lock) if taken else None

    async def _prove(self) -> None:
        self._proven = True
        stamp = json.dumps({"at": self._clock()})
        await on_redis(
            self._health, lambda: self._redis.set(self._proof_key, stamp, px=_ms(PROOF_TTL))
        )


class MissingTasks:
    """Tasks HSS said do not exist, for ``ttl`` seconds, across replicas."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        health: RedisHealth,
        ttl: float = MISSING_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis
        self._health = health
        self._ttl = ttl
        self._clock = clock
        self._local: dict[TaskRef, tuple[float, dict[str, Any]]] = {}

    async def known(self, task: TaskRef) -> HssNotFoundError | None:
        """HSS's answer for ``task`` when it said lately that the task does not exist."""
        raw = await on_redis(self._health, lambda: self._redis.get(keys.missing_task(task)))
        if isinstance(raw, Away):
            info = self._remembered(task)
        elif raw:
            info = json.loads(raw)
        else:
            info = None
        return None if info is None else HssNotFoundError(**info)

    async def add(self, task: TaskRef, err: HssNotFoundError) -> None:
        info = {
            "error_code": err.error_code,
            "error_msg": err.error_msg,
            "request_id": err.request_id,
            "status": err.status,
        }
        now = self._clock()
        self._local = {t: v for t, v in self._local.items() if v[0] > now}
        self._local[task] = (now + self._ttl, info)
        key = keys.missing_task(task)
        await on_redis(
            self._health, lambda: self._redis.set(key, json.dumps(info), px=_ms(self._ttl))
        )

    def _remembered(self, task: TaskRef) -> dict[str, Any] | None:
        until, info = self._local.get(task, (0.0, None))
        return info if until > self._clock() else None


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


__all__ = [
    "AuthGate",
    "LockedOut",
    "MissingTasks",
    "lock_info",
    "locked_error",
    "passed_the_gateway",
]
