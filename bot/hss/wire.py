"""What goes over the wire for ListAssociateRegistries, as pure functions.

Checking parameters before any call is spent, building the request target, and reading a
response: a 2xx body into a :class:`RegistryPage`, anything else into the ``HssError`` tree
(which errors are retried is :mod:`bot.hss.client`'s business). Nothing here does I/O.
The public helpers (``check_text``, ``error_for``, ``list_body``...) are shared with
:mod:`bot.hss.runs_wire`: both APIs sit behind the same gateway and answer alike.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from bot.errors import (
    CommandError,
    HssAuthError,
    HssError,
    HssNotFoundError,
    HssRequestError,
    HssThrottledError,
    HssUnavailableError,
)
from bot.hss.signer import canonical_query, encoded_path
from bot.models import (
    DOT_SEGMENTS,
    EP_ID_MAX,
    OFFSET_MAX,
    PAGE_LIMIT_MAX,
    PAGE_LIMIT_MIN,
    PROJECT_ID_MAX,
    REGISTRY_NAME_MAX,
    REGISTRY_TYPES,
    TASK_ID_MAX,
    ApiFilter,
    Registry,
    RegistryPage,
    SyncStatus,
    TaskRef,
    task_id_problem,
)
from bot.retry_after import parse_retry_after

#: Longest error text kept from a response body (gateways may send whole HTML pages).
_MAX_ERROR_TEXT = 300


# --- request building and validation ---


def validate(task: TaskRef, flt: ApiFilter, *, offset: int, limit: int, project_id: str) -> None:
    """Raise ``CommandError`` (before any call) for what HSS would reject or another project."""
    check_text("project id", task.project_id, PROJECT_ID_MAX)
    if task.project_id != project_id:
        raise CommandError(
            f"Project id {task.project_id!r} is not the project this bot is configured "
            f"for ({project_id!r})."
        )
    check_text("task id", task.task_id, TASK_ID_MAX)
    # The last guard: every caller validates first, but a task id that is a dot segment
    # would make httpx call another path, and one with hidden characters is not what
    # anyone typed.
    problem = task_id_problem(task.task_id)
    if problem is not None:
        raise CommandError(problem)
    if task.enterprise_project_id is not None:
        check_text("enterprise project id", task.enterprise_project_id, EP_ID_MAX)
    if flt.registry_name is not None:
        check_text("registry name", flt.registry_name, REGISTRY_NAME_MAX)
    _canonical_types(flt.registry_types)
    _check_status(flt.sync_status)
    check_int("offset", offset, 0, OFFSET_MAX)
    check_int("limit", limit, PAGE_LIMIT_MIN, PAGE_LIMIT_MAX)


def request_target(task: TaskRef, flt: ApiFilter, *, offset: int, limit: int) -> str:
    """The encoded path and canonical query of one page request. A dot segment is refused
    here too: the path would be resolved to another API (``/tasks/../registries``)."""
    segments = ["v5", task.project_id, "image", "image-sync", "tasks", task.task_id, "registries"]
    if DOT_SEGMENTS.intersection(segments):
        raise CommandError('A project or task id cannot be "." or "..".')
    path = encoded_path(segments)
    return f"{path}?{canonical_query(_query(task, flt, offset, limit))}"


def _query(task: TaskRef, flt: ApiFilter, offset: int, limit: int) -> list[tuple[str, str]]:
    params = [("offset", str(offset)), ("limit", str(limit))]
    if task.enterprise_project_id is not None:
        params.append(("enterprise_project_id", task.enterprise_project_id))
    if flt.registry_name is not None:
        params.append(("registry_name", flt.registry_name))
    types = _canonical_types(flt.registry_types)
    if types:
        params.append(("registry_type", types))
    if flt.sync_status is not None:
        params.append(("sync_status", SyncStatus(flt.sync_status).value))
    return params


def check_text(what: str, value: object, maximum: int) -> None:
    if not isinstance(value, str) or not 1 <= len(value) <= maximum:
        got = f"{len(value)} characters" if isinstance(value, str) else type(value).__name__
        raise CommandError(f"The {what} must be 1-{maximum} characters long (got {got}).")


def check_int(what: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise CommandError(
            f"The {what} must be a whole number from {low} to {high:,} (got {value!r})."
        )


def _check_status(status: object) -> None:
    accepted = [s.value for s in SyncStatus]
    if status is not None and status not in accepted:
        raise CommandError(f"Unknown sync status {status!r}; use one of {', '.join(accepted)}.")


def _canonical_types(types: frozenset[str]) -> str:
    """Comma-joined, sorted API spellings; registry types are matched case-insensitively."""
    spelling = {t.lower(): t for t in REGISTRY_TYPES}
    unknown = sorted(repr(t) for t in types if not isinstance(t, str) or t.lower() not in spelling)
    if unknown:
        raise CommandError(
            f"Unknown registry type {', '.join(unknown)}; use any of {', '.join(REGISTRY_TYPES)}."
        )
    return ",".join(sorted({spelling[t.lower()] for t in types}))


# --- reading responses ---


def read_response(
    response: httpx.Response, *, offset: int, limit: int, secrets: Sequence[str]
) -> RegistryPage:
    """The page a 2xx carries; otherwise raise its ``HssError`` with ``secrets`` scrubbed."""
    if response.is_success:
        return _parse_page(response, offset=offset, limit=limit)
    raise error_for(response, secrets)


def error_for(response: httpx.Response, secrets: Sequence[str]) -> HssError:
    status = response.status_code
    body = _json_or_none(response)
    fields = body if isinstance(body, dict) else {}
    code = field_text(fields.get("error_code")) or f"HTTP {status}"
    msg = field_text(fields.get("error_msg")) or response.reason_phrase or "no error message"
    kwargs: dict[str, Any] = {
        "error_code": _scrub(code, secrets)[:_MAX_ERROR_TEXT],
        "error_msg": _scrub(msg, secrets)[:_MAX_ERROR_TEXT],
        "request_id": response.headers.get("X-Request-Id") or field_text(fields.get("request_id")),
        "status": status,
    }
    if status in (401, 403):
        return HssAuthError(**kwargs)
    if status == 429:
        retry_after = parse_retry_after(response.headers.get("Retry-After"), now=time.time())
        return HssThrottledError(retry_after=retry_after, **kwargs)
    if status == 404 or code == "HSS.0011":
        return HssNotFoundError(**kwargs)
    if status >= 500:
        return HssUnavailableError(**kwargs)
    return HssRequestError(**kwargs)


def _scrub(text: str, secrets: Sequence[str]) -> str:
    # A gateway may echo the Access key or a token back; never pass it on.
    for secret in secrets:
        text = text.replace(secret, "********")
    return text


def malformed(why: str, response: httpx.Response) -> HssUnavailableError:
    return HssUnavailableError(
        error_code="MALFORMED_RESPONSE",
        error_msg=f"HSS answered {response.status_code} but {why}",
        request_id=response.headers.get("X-Request-Id", ""),
        status=response.status_code,
    )


def _json_or_none(response: httpx.Response) -> object:
    try:
        return response.json()
    except ValueError:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
        return None


@dataclass(frozen=True, slots=True)
class ListBody:
    """A 2xx list answer, either API's: its rows (still raw), ``total_num`` and request id."""

    rows: list[Mapping[str, object]]
    total_num: int
    request_id: str


def list_body(response: httpx.Response, *, offset: int, limit: int) -> ListBody:
    """``{"total_num", "data_list": [{...}]}`` checked; raises a malformed-answer error."""
    body = _json_or_none(response)
    if not isinstance(body, dict):
        raise malformed("the body is not a JSON object", response)
    raw_rows = body.get("data_list")
    if raw_rows is None:
        raw_rows = []
    if not isinstance(raw_rows, list) or not all(isinstance(r, dict) for r in raw_rows):
        raise malformed("data_list is not a list of objects", response)
    total = _total_num(body.get("total_num"), offset=offset, limit=limit, rows=len(raw_rows))
    if total is None:
        raise malformed("total_num is missing on a full page", response)
    request_id = response.headers.get("X-Request-Id") or field_text(body.get("request_id"))
    return ListBody(rows=raw_rows, total_num=total, request_id=request_id)


def _parse_page(response: httpx.Response, *, offset: int, limit: int) -> RegistryPage:
    body = list_body(response, offset=offset, limit=limit)
    rows = tuple(_registry(r) for r in body.rows)
    return RegistryPage(total_num=body.total_num, registries=rows, request_id=body.request_id)


def _total_num(raw: object, *, offset: int, limit: int, rows: int) -> int | None:
    """``total_num`` as an int; when absent it is inferred only from a short (last) page."""
    if isinstance(raw, str) and raw.strip().isdigit():
        raw = int(raw)
    if isinstance(raw, float) and raw.is_integer():
        raw = int(raw)
    if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0:
        return raw
    # Without a count we only know where the list ends if this page came back short.
    return offset + rows if rows < limit else None


def _registry(raw: Mapping[str, object]) -> Registry:
    return Registry(
        registry_id=field_text(raw.get("registry_id")),
        registry_name=field_text(raw.get("registry_name")),
        registry_type=field_text(raw.get("registry_type")),
        sync_status=field_text(raw.get("sync_status")),
        failed_reason=field_text(raw.get("failed_reason")),
    )


def field_text(value: object) -> str:
    """Strings as-is, numbers as their text, anything else (null, lists, objects) empty."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return ""
