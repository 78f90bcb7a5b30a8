"""A channel's alert for a task, as stored: one hash (``keys.alert_state``), read and written
here and nowhere else.

Its fields: ``incident`` (JSON: the latest flip of each registry, the flapping ones),
``history`` (JSON: failure times that count for flapping), ``opened_at``, ``acked_by`` (the
Acknowledge button) and ``parent_ts`` (the ts of the alert's message, once the outbox posted
it). Who writes what:

- the alerting pipeline writes the state whole (:func:`queue_state`), in the ``MULTI`` that
  queues its alerts, under ``WATCH`` of the hash; a new incident has no ``acked_by``, so
  writing it clears the previous incident's acknowledgement. A state left by an earlier
  watch of the channel is dropped whole first (:func:`queue_reset`);
- the Acknowledge button sets ``acked_by`` (:func:`ack`); an ack landing while the pipeline
  works makes its ``EXEC`` fail, and it re-reads;
- the outbox records ``parent_ts`` when it posts the alert (:func:`queue_parent_ts`), in the
  ``MULTI`` that deletes the item, and reads it for the updates and thread lines.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from bot.alerting.flips import Flip, FlipKind, Incident
from bot.storage.replies import as_str

logger = logging.getLogger(__name__)

#: Field holding the ts of the alert's parent message.
PARENT_TS = "parent_ts"
ACKED_BY = "acked_by"


@dataclass(frozen=True, slots=True)
class AlertState:
    """One channel's alert for one task: the incident its message shows (None before the
    first), the failure times that count for flapping, who acknowledged, when it opened."""

    incident: Incident | None = None
    history: Mapping[str, Sequence[float]] = field(default_factory=dict)
    acked_by: str | None = None
    opened_at: float | None = None


# --- JSON -------------------------------------------------------------------------------------


def _flip_row(f: Flip) -> list[object]:
    return [f.kind.value, f.registry_id, f.name, f.type, f.reason, f.at, f.old]


def _flip_of(row: Sequence[Any]) -> Flip:
    kind, rid, name, rtype, reason, at, old = row
    return Flip(FlipKind(kind), str(rid), str(name), str(rtype), str(reason), float(at), str(old))


def encode_incident(incident: Incident) -> str:
    latest = [_flip_row(f) for _, f in sorted(incident.latest.items())]
    doc = {"v": 1, "latest": latest, "flapping": sorted(incident.flapping)}
    return json.dumps(doc, separators=(",", ":"))


def decode_incident(raw: bytes | str) -> Incident:
    doc = json.loads(raw)
    flips = (_flip_of(d) for d in doc["latest"])
    return Incident(latest={f.registry_id: f for f in flips}, flapping=frozenset(doc["flapping"]))


def encode_history(history: Mapping[str, Sequence[float]]) -> str:
    return json.dumps({rid: list(t) for rid, t in sorted(history.items())}, separators=(",", ":"))


def decode_history(raw: bytes | str) -> dict[str, list[float]]:
    return {str(rid): [float(t) for t in times] for rid, times in json.loads(raw).items()}


def decode_state(fields: Mapping[bytes, bytes] | Mapping[str, str]) -> AlertState:
    """The stored state, or a fresh one (logged) if it cannot be read."""
    d = {as_str(k): as_str(v) for k, v in fields.items()}
    try:
        return AlertState(
            incident=decode_incident(d["incident"]) if "incident" in d else None,
            history=decode_history(d["history"]) if "history" in d else {},
            acked_by=d.get(ACKED_BY) or None,
            opened_at=float(d["opened_at"]) if "opened_at" in d else None,
        )
    except (ValueError, KeyError, TypeError):
        logger.warning("unreadable alert state; starting a new one")
        return AlertState()


def encode_state(state: AlertState) -> dict[str, str | None]:
    """The state's fields; None for a field the state does not have (to be deleted)."""
    incident = state.incident
    return {
        "history": encode_history(state.history),
        "incident": encode_incident(incident) if incident is not None else None,
        "opened_at": repr(state.opened_at) if state.opened_at is not None else None,
        ACKED_BY: state.acked_by,
    }


# --- Redis ------------------------------------------------------------------------------------


async def read_state(redis: aioredis.Redis | Pipeline, key: str) -> AlertState:
    """The state in ``key`` (through a WATCHing pipeline, under its ``WATCH``)."""
    return decode_state(cast("dict[bytes, bytes]", await redis.hgetall(key)))


def queue_state(pipe: Pipeline, key: str, state: AlertState) -> None:
    """Queue writing ``state`` whole (after ``multi()``); ``parent_ts`` stays."""
    fields = encode_state(state)
    pipe.hset(key, mapping={k: v for k, v in fields.items() if v is not None})
    gone = [k for k, v in fields.items() if v is None]
    if gone:
        pipe.hdel(key, *gone)


def queue_reset(pipe: Pipeline, key: str) -> None:
    """Queue dropping the state whole, its parent message included (after ``multi()``)."""
    pipe.delete(key)


async def ack(redis: aioredis.Redis, key: str, user: str) -> None:
    """Record who acknowledged the alert."""
    await redis.hset(key, ACKED_BY, user)


async def parent_ts(redis: aioredis.Redis, key: str) -> str | None:
    """The ts of the alert's parent message, once the outbox has posted it."""
    raw = await redis.hget(key, PARENT_TS)
    return as_str(raw) if raw else None


def queue_parent_ts(pipe: Pipeline, key: str, ts: str) -> None:
    """Queue recording the parent message's ts (after ``multi()``)."""
    pipe.hset(key, PARENT_TS, ts)
