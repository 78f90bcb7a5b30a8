"""Button values: the request and page a button stands for, as compact JSON.

:func:`encode_action_value` writes what :mod:`bot.slack.render` puts on a button; Slack hands it
back untrusted, so :func:`decode_action_value` re-validates everything and turns anything
else into one :class:`CommandError` sentence.
"""

from __future__ import annotations

import json
from typing import Any

from bot.errors import CommandError
from bot.models import REGISTRY_TYPES, LookupRequest, SyncStatus
from bot.slack.command import validate_request

#: Far beyond any real task (HSS offsets stop at 2,000,000); bounds decoded page numbers.
MAX_PAGE = 100_000
#: Slack's limit on a button value.
BUTTON_VALUE_MAX = 2000

_VALUE_VERSION = 1
_VALUE_KEYS = frozenset({"v", "t", "p", "s", "y", "n", "e"})


def encode_action_value(request: LookupRequest, page: int) -> str:
    """Compact JSON for a button value; at most ~1,100 characters for the longest request.

    Raises :class:`CommandError` for a request the parser would not have produced.
    """
    validate_request(request)
    doc: dict[str, Any] = {
        "v": _VALUE_VERSION,
        "t": request.task_id,
        "p": min(max(page, 0), MAX_PAGE),
    }
    if request.status is not None:
        doc["s"] = request.status.value
    if request.types:
        doc["y"] = [t for t in REGISTRY_TYPES if t in request.types]
    if request.name is not None:
        doc["n"] = request.name
    if request.ep is not None:
        doc["e"] = request.ep
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


_BAD_VALUE = "This button's data is out of date or damaged; run /hss-sync again."


def _load(value: str) -> dict[str, Any]:
    if not isinstance(value, str) or len(value) > BUTTON_VALUE_MAX:
        raise CommandError(_BAD_VALUE)
    try:
        doc = json.loads(value)
    except (ValueError, RecursionError):
        raise CommandError(_BAD_VALUE) from None
    if not isinstance(doc, dict) or doc.get("v") != _VALUE_VERSION or set(doc) - _VALUE_KEYS:
        raise CommandError(_BAD_VALUE)
    return doc


def _optional_str(doc: dict[str, Any], key: str) -> str | None:
    value = doc.get(key)
    if value is not None and not isinstance(value, str):
        raise CommandError(_BAD_VALUE)
    return value


def _types(doc: dict[str, Any]) -> frozenset[str]:
    value = doc.get("y", [])
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise CommandError(_BAD_VALUE)
    if "y" in doc and not value:
        raise CommandError(_BAD_VALUE)
    return frozenset(value)


def _status(doc: dict[str, Any]) -> SyncStatus | None:
    value = _optional_str(doc, "s")
    try:
        return None if value is None else SyncStatus(value)
    except ValueError:
        raise CommandError(_BAD_VALUE) from None


def decode_action_value(value: str) -> tuple[LookupRequest, int]:
    """Inverse of :func:`encode_action_value`; raises :class:`CommandError` on anything else."""
    doc = _load(value)
    task_id, page = doc.get("t"), doc.get("p")
    if not isinstance(task_id, str) or type(page) is not int or not 0 <= page <= MAX_PAGE:
        raise CommandError(_BAD_VALUE)
    request = LookupRequest(
        task_id=task_id,
        status=_status(doc),
        types=_types(doc),
        name=_optional_str(doc, "n"),
        ep=_optional_str(doc, "e"),
    )
    try:
        return validate_request(request), page
    except CommandError as exc:
        raise CommandError(_BAD_VALUE) from exc
