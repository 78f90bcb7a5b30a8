"""Button values: the request and page a button stands for (a lookup's, or a ``tasks``
list's), as compact JSON.

:func:`encode_action_value` writes what :mod:`bot.slack.render` puts on a button; Slack hands it
back untrusted, so :func:`decode_action_value` re-validates everything and turns anything
else into one :class:`CommandError` sentence.
"""

from __future__ import annotations

import json
from typing import Any

from bot.errors import CommandError
from bot.models import REGISTRY_TYPES, LookupRequest, SyncStatus
from bot.runs import RunKind
from bot.slack.command import validate_request
from bot.slack.tasks_command import ListTasks, validate_run_name

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


def _load(
    value: str,
    *,
    mark: str = "v",
    version: int = _VALUE_VERSION,
    known: frozenset[str] = _VALUE_KEYS,
) -> dict[str, Any]:
    """A JSON object of ``known`` keys whose ``mark`` is ``version``: one kind of value."""
    if not isinstance(value, str) or len(value) > BUTTON_VALUE_MAX:
        raise CommandError(_BAD_VALUE)
    try:
        doc = json.loads(value)
    except (ValueError, RecursionError):
        raise CommandError(_BAD_VALUE) from None
    if not isinstance(doc, dict) or doc.get(mark) != version or set(doc) - known:
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


# --- the run list's paging buttons ---

_TASKS_VERSION = 1
_TASKS_KEYS = frozenset({"r", "k", "n", "f", "p"})


def encode_tasks_value(query: ListTasks, page: int) -> str:
    """A ``tasks`` list's filters and page, as compact JSON (``r`` marks the kind of value:
    a lookup's button value is never taken for one of these, nor the other way round)."""
    doc: dict[str, Any] = {"r": _TASKS_VERSION, "p": min(max(page, 0), MAX_PAGE)}
    if query.kind is not None:
        doc["k"] = query.kind.value
    if query.name is not None:
        doc["n"] = validate_run_name(query.name)
    if query.failed:
        doc["f"] = 1
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


def decode_tasks_value(value: str) -> tuple[ListTasks, int]:
    """Inverse of :func:`encode_tasks_value`; raises :class:`CommandError` on anything else."""
    doc = _load(value, mark="r", version=_TASKS_VERSION, known=_TASKS_KEYS)
    page, kind, failed = doc.get("p"), doc.get("k"), doc.get("f", 0)
    if type(page) is not int or not 0 <= page <= MAX_PAGE or failed not in (0, 1):
        raise CommandError(_BAD_VALUE)
    if type(failed) is not int:
        raise CommandError(_BAD_VALUE)
    try:
        query = ListTasks(
            kind=None if kind is None else RunKind(kind),
            name=None if doc.get("n") is None else validate_run_name(_optional_str(doc, "n") or ""),
            failed=bool(failed),
        )
    except (CommandError, ValueError, TypeError):
        raise CommandError(_BAD_VALUE) from None
    return query, page
