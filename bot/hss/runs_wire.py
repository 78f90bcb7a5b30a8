"""What goes over the wire for ListImageScanTask (the sync runs), as pure functions.

``GET /v5/{project_id}/image/tasks?type=image_sync&...``: parameters checked before any call
is spent, the request target, and a response read into a :class:`~bot.runs.RunPage` or the
``HssError`` tree, with :mod:`bot.hss.wire`'s rules (same gateway, same errors). Numbers HSS
sends as strings or whole floats are taken; anything else where a number belongs makes the
answer malformed, as a broken ``total_num`` does. Nothing here does I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import httpx

from bot.errors import CommandError, HssNotFoundError, HssRequestError
from bot.hss.signer import canonical_query, encoded_path
from bot.hss.wire import check_int, check_text, error_for, field_text, list_body, malformed
from bot.models import EP_ID_MAX, OFFSET_MAX, PAGE_LIMIT_MAX, PAGE_LIMIT_MIN, PROJECT_ID_MAX
from bot.runs import RUN_NAME_MAX, RunFilter, RunKind, RunPage, SyncRun

#: ``type``: we only ever list image-sync tasks (``image_scan`` lists scans).
SYNC_TYPE = "image_sync"
_WHOLE = re.compile(r"-?[0-9]+")


def validate(flt: RunFilter, *, offset: int, limit: int, ep: str | None, project_id: str) -> None:
    """Raise ``CommandError`` (before any call) for what HSS would reject."""
    check_text("project id", project_id, PROJECT_ID_MAX)
    if flt.kind is not None and flt.kind not in tuple(RunKind):
        kinds = ", ".join(RunKind)
        raise CommandError(f"Unknown run kind {flt.kind!r}; use {kinds}.")
    if flt.name is not None:
        check_text("task name", flt.name, RUN_NAME_MAX)
    if ep is not None:
        check_text("enterprise project id", ep, EP_ID_MAX)
    check_int("offset", offset, 0, OFFSET_MAX)
    check_int("limit", limit, PAGE_LIMIT_MIN, PAGE_LIMIT_MAX)


def request_target(
    flt: RunFilter, *, offset: int, limit: int, ep: str | None, project_id: str
) -> str:
    """The encoded path and canonical query of one page request."""
    if project_id in (".", ".."):
        raise CommandError('A project id cannot be "." or "..".')
    path = encoded_path(["v5", project_id, "image", "tasks"])
    params = [("type", SYNC_TYPE), ("offset", str(offset)), ("limit", str(limit))]
    if flt.kind is not None:
        params.append(("task_type", RunKind(flt.kind).value))
    if flt.name is not None:
        params.append(("task_name", flt.name))
    if ep is not None:
        params.append(("enterprise_project_id", ep))
    return f"{path}?{canonical_query(params)}"


def read_response(
    response: httpx.Response, *, offset: int, limit: int, secrets: Sequence[str]
) -> RunPage:
    """The page a 2xx carries; otherwise raise its ``HssError`` with ``secrets`` scrubbed.

    A 404 or ``HSS.0011`` here is not "no such task" (a list names none): it is raised as a
    refused request, so nobody is told to check a task id they never gave."""
    if response.is_success:
        return _parse(response, offset=offset, limit=limit)
    err = error_for(response, secrets)
    if isinstance(err, HssNotFoundError):
        raise HssRequestError(
            error_code=err.error_code,
            error_msg=err.error_msg,
            request_id=err.request_id,
            status=err.status,
        )
    raise err


def _parse(response: httpx.Response, *, offset: int, limit: int) -> RunPage:
    body = list_body(response, offset=offset, limit=limit)
    try:
        runs = tuple(_run(raw) for raw in body.rows)
    except _NotANumber as exc:
        raise malformed(f"a run's {exc} is not a number", response) from None
    return RunPage(total_num=body.total_num, runs=runs, request_id=body.request_id)


def _run(raw: Mapping[str, object]) -> SyncRun:
    return SyncRun(
        task_id=field_text(raw.get("task_id")),
        task_name=field_text(raw.get("task_name")),
        task_type=field_text(raw.get("task_type")),
        begin_time=_number(raw, "begin_time"),
        end_time=_number(raw, "end_time"),
        task_status=_number(raw, "task_status"),
        failed_num=_count(raw, "failed_num"),
        success_num=_count(raw, "success_num"),
        total_num=_count(raw, "total_num"),
        failed_reason=field_text(raw.get("failed_reason")),
    )


class _NotANumber(ValueError):
    """The named field should have been a number (a missing one is fine)."""


def _number(raw: Mapping[str, object], name: str) -> int | None:
    """A whole number as an int (``7``, ``7.0``, ``"7"``, ``"-1"``); None when absent."""
    value = raw.get(name)
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _WHOLE.fullmatch(value.strip()):
        return int(value)
    raise _NotANumber(name)


def _count(raw: Mapping[str, object], name: str) -> int:
    """A count: 0 when absent; a negative one is as wrong as a word."""
    value = _number(raw, name)
    if value is not None and value < 0:
        raise _NotANumber(name)
    return value or 0
