"""Sync runs as plain data (``bot.runs``) and ListImageScanTask's wire format
(``bot.hss.runs_wire``): tables of runs, requests and responses, all pure."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

import httpx
import pytest

from bot.errors import (
    CommandError,
    HssAuthError,
    HssError,
    HssRequestError,
    HssThrottledError,
    HssUnavailableError,
)
from bot.hss import runs_wire
from bot.models import HssApi
from bot.ops import metrics
from bot.runs import RunFilter, RunKind, SyncRun, latest, newest_first

PROJECT = "0123456789abcdef0123456789abcdef"


def run(task_id: str = "t", **fields: Any) -> SyncRun:
    return SyncRun(task_id=task_id, **fields)


# --- SyncRun ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "end_time", "ended", "outcome"),
    [
        (0, 0, False, "running 0%"),
        (40, None, False, "running 40%"),
        (99, 0, False, "running 99%"),
        (100, 1_700_000_000_000, True, "finished"),
        (100, None, True, "finished"),  # the status is believed over a missing end time
        (-1, 1_700_000_000_000, True, "stopped"),
        (-2, 0, True, "timed out"),
        (-3, None, True, "error"),
        (-7, None, True, "ended (-7)"),
        (None, None, False, "unknown"),
        (None, 1_700_000_000_000, True, "ended"),
        (140, 0, False, "unknown"),  # out of range: as if absent
    ],
)
def test_outcome_and_ended(
    status: int | None, end_time: int | None, ended: bool, outcome: str
) -> None:
    got = run(task_status=status, end_time=end_time)
    assert (got.ended, got.outcome) == (ended, outcome)


def test_kind_is_the_api_task_type_or_none() -> None:
    assert run(task_type="autoSync").kind is RunKind.AUTO
    assert run(task_type="manualSync").kind is RunKind.MANUAL
    odd = run(task_type="cycle")
    assert odd.kind is None and odd.task_type == "cycle"  # kept as HSS sent it


def test_as_api_dict_has_the_api_field_names() -> None:
    full = run(
        "id-1",
        task_name="nightly <b>",
        task_type="autoSync",
        begin_time=1,
        end_time=2,
        task_status=100,
        failed_num=3,
        success_num=4,
        total_num=7,
        failed_reason="why",
    )
    assert full.as_api_dict() == {
        "task_id": "id-1",
        "task_name": "nightly <b>",
        "task_type": "autoSync",
        "begin_time": 1,
        "end_time": 2,
        "task_status": 100,
        "failed_num": 3,
        "success_num": 4,
        "total_num": 7,
        "failed_reason": "why",
    }


def test_newest_first_and_latest() -> None:
    auto_old = run("a-old", task_type="autoSync", begin_time=1_000)
    auto_new = run("a-new", task_type="autoSync", begin_time=3_000)
    manual = run("m", task_type="manualSync", begin_time=2_000)
    tie = run("a-tie", task_type="autoSync", begin_time=3_000)
    undated = run("u", task_type="manualSync")
    runs = [undated, auto_old, manual, auto_new, tie]
    assert [r.task_id for r in newest_first(runs)] == ["a-new", "a-tie", "m", "a-old", "u"]
    assert latest(runs) == auto_new
    assert latest(runs, RunKind.AUTO) == auto_new
    assert latest(runs, RunKind.MANUAL) == manual
    assert latest([undated], RunKind.MANUAL) == undated
    assert latest([auto_old], RunKind.MANUAL) is None
    assert latest([]) is None


def test_metrics_label_every_api() -> None:
    assert tuple(api.value for api in HssApi) == metrics.APIS


# --- requests --------------------------------------------------------------------------------


def query_of(flt: RunFilter, **kwargs: Any) -> list[tuple[str, str]]:
    kwargs.setdefault("offset", 0)
    kwargs.setdefault("limit", 200)
    kwargs.setdefault("ep", None)
    target = runs_wire.request_target(flt, project_id=PROJECT, **kwargs)
    path, _, query = target.partition("?")
    assert path == f"/v5/{PROJECT}/image/tasks"
    return [(unquote(k), unquote(v)) for k, _, v in (p.partition("=") for p in query.split("&"))]


REQUESTS: list[tuple[RunFilter, dict[str, Any], list[tuple[str, str]]]] = [
    (RunFilter(), {}, [("limit", "200"), ("offset", "0"), ("type", "image_sync")]),
    (
        RunFilter(kind=RunKind.AUTO),
        {"offset": 400, "limit": 10},
        [("limit", "10"), ("offset", "400"), ("task_type", "autoSync"), ("type", "image_sync")],
    ),
    (
        RunFilter(kind=RunKind.MANUAL, name="nightly sync & 同步"),
        {"ep": "all_granted_eps"},
        [
            ("enterprise_project_id", "all_granted_eps"),
            ("limit", "200"),
            ("offset", "0"),
            ("task_name", "nightly sync & 同步"),
            ("task_type", "manualSync"),
            ("type", "image_sync"),
        ],
    ),
]


@pytest.mark.parametrize(("flt", "kwargs", "params"), REQUESTS)
def test_request_target(
    flt: RunFilter, kwargs: dict[str, Any], params: list[tuple[str, str]]
) -> None:
    # Sorted, as the signature's canonical query is sent as it is signed.
    assert query_of(flt, **kwargs) == params


def test_spaces_are_percent_encoded_not_plus() -> None:
    target = runs_wire.request_target(
        RunFilter(name="a b+c"), offset=0, limit=10, ep=None, project_id=PROJECT
    )
    assert "task_name=a%20b%2Bc" in target


BAD_REQUESTS: list[tuple[str, RunFilter, dict[str, Any], str]] = [
    ("empty name", RunFilter(name=""), {}, "1-256"),
    ("long name", RunFilter(name="n" * 257), {}, "1-256"),
    ("unknown kind", RunFilter(kind="auto"), {}, "autoSync"),  # type: ignore[arg-type]
    ("scan kind", RunFilter(kind="cycle"), {}, "manualSync"),  # type: ignore[arg-type]
    ("empty ep", RunFilter(), {"ep": ""}, "1-256"),
    ("long ep", RunFilter(), {"ep": "e" * 257}, "1-256"),
    ("negative offset", RunFilter(), {"offset": -1}, "0 to 2,000,000"),
    ("huge offset", RunFilter(), {"offset": 2_000_001}, "0 to 2,000,000"),
    ("small limit", RunFilter(), {"limit": 9}, "10 to 200"),
    ("big limit", RunFilter(), {"limit": 201}, "10 to 200"),
    ("bool limit", RunFilter(), {"limit": True}, "10 to 200"),
    ("empty project", RunFilter(), {"project_id": ""}, "1-256"),
]


@pytest.mark.parametrize(
    ("flt", "kwargs", "accepted"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
def test_what_hss_would_refuse_is_refused_first(
    flt: RunFilter, kwargs: dict[str, Any], accepted: str
) -> None:
    params: dict[str, Any] = {"offset": 0, "limit": 200, "ep": None, "project_id": PROJECT}
    params.update(kwargs)
    with pytest.raises(CommandError, match=accepted):
        runs_wire.validate(flt, **params)


def test_boundaries_are_accepted() -> None:
    for offset, limit in ((0, 10), (2_000_000, 200)):
        runs_wire.validate(
            RunFilter(name="n" * 256), offset=offset, limit=limit, ep="e" * 256, project_id=PROJECT
        )


# --- responses -------------------------------------------------------------------------------


def respond(
    body: object, *, status: int = 200, headers: dict[str, str] | None = None, limit: int = 10
) -> Any:
    response = httpx.Response(status, json=body, headers=headers)
    return runs_wire.read_response(response, offset=0, limit=limit, secrets=["AKSECRET123"])


def test_a_full_row_is_read_field_by_field() -> None:
    row = {
        "task_id": "5f2c",
        "task_name": "auto-sync-20261127",
        "task_type": "autoSync",
        "sync_task_type": "all",
        "begin_time": 1_796_000_000_000,
        "end_time": 1_796_001_800_000,
        "remain_min": 0,
        "task_status": 100,
        "failed_num": 10,
        "success_num": 490,
        "total_num": 500,
        "failed_reason": "",
        "failed_images": [{"registry_id": "r", "failed_reason": "x"}],
    }
    page = respond({"total_num": 1, "data_list": [row]}, headers={"X-Request-Id": "rid"})
    assert page.total_num == 1 and page.request_id == "rid"
    assert page.runs == (
        SyncRun(
            task_id="5f2c",
            task_name="auto-sync-20261127",
            task_type="autoSync",
            begin_time=1_796_000_000_000,
            end_time=1_796_001_800_000,
            task_status=100,
            failed_num=10,
            success_num=490,
            total_num=500,
        ),
    )


TOLERATED: list[tuple[object, SyncRun]] = [
    ({"task_id": "a"}, SyncRun(task_id="a")),  # every other field missing: the defaults
    (
        {"task_id": 7, "task_name": None, "begin_time": None, "end_time": 0, "task_status": 0},
        SyncRun(task_id="7", begin_time=None, end_time=0, task_status=0),
    ),
    (
        {"task_id": "b", "task_status": "-2", "failed_num": "3", "begin_time": 5.0},
        SyncRun(task_id="b", task_status=-2, failed_num=3, begin_time=5),
    ),
    (
        {"task_id": "c", "task_name": ["x"], "task_type": {"a": 1}, "failed_reason": 12},
        SyncRun(task_id="c", failed_reason="12"),  # text that is not text: empty
    ),
]


@pytest.mark.parametrize(("row", "expected"), TOLERATED)
def test_missing_and_odd_fields_are_tolerated(row: object, expected: SyncRun) -> None:
    assert respond({"total_num": 1, "data_list": [row]}).runs == (expected,)


@pytest.mark.parametrize(
    ("body", "total", "count"),
    [
        ({"total_num": 3, "data_list": None}, 3, 0),
        ({"data_list": [{"task_id": "a"}]}, 1, 1),  # a short page without a total is the end
        ({}, 0, 0),
        ({"total_num": "12", "data_list": []}, 12, 0),
    ],
)
def test_totals(body: object, total: int, count: int) -> None:
    page = respond(body)
    assert (page.total_num, len(page.runs)) == (total, count)


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ([], "not a JSON object"),
        ({"total_num": 1, "data_list": {"task_id": "a"}}, "list of objects"),
        ({"total_num": 1, "data_list": ["a"]}, "list of objects"),
        ({"data_list": [{"task_id": str(i)} for i in range(10)]}, "total_num is missing"),
        ({"total_num": 1, "data_list": [{"task_id": "a", "task_status": "done"}]}, "task_status"),
        ({"total_num": 1, "data_list": [{"task_id": "a", "begin_time": 1.5}]}, "begin_time"),
        ({"total_num": 1, "data_list": [{"task_id": "a", "failed_num": True}]}, "failed_num"),
        ({"total_num": 1, "data_list": [{"task_id": "a", "total_num": -1}]}, "total_num"),
        ({"total_num": 1, "data_list": [{"task_id": "a", "end_time": [1]}]}, "end_time"),
        ({"total_num": 1, "data_list": [{"task_id": "a", "success_num": "٣"}]}, "success_num"),
    ],
)
def test_numbers_that_are_not_numbers_make_the_answer_malformed(body: object, why: str) -> None:
    with pytest.raises(HssUnavailableError) as info:
        respond(body)
    assert info.value.error_code == "MALFORMED_RESPONSE"
    assert why in info.value.error_msg


ERRORS: list[tuple[int, dict[str, str], type[HssError], str]] = [
    (401, {"error_code": "APIGW.0301", "error_msg": "bad AKSECRET123"}, HssAuthError, "APIGW.0301"),
    (403, {"error_code": "APIGW.0302", "error_msg": "no"}, HssAuthError, "APIGW.0302"),
    (429, {"error_code": "APIGW.0308", "error_msg": "slow"}, HssThrottledError, "APIGW.0308"),
    (400, {"error_code": "HSS.0001", "error_msg": "bad"}, HssRequestError, "HSS.0001"),
    (503, {}, HssUnavailableError, "HTTP 503"),
    # A list names no task: "not found" is not "check your task id".
    (404, {"error_code": "APIGW.0101", "error_msg": "no API"}, HssRequestError, "APIGW.0101"),
    (400, {"error_code": "HSS.0011", "error_msg": "gone"}, HssRequestError, "HSS.0011"),
]


@pytest.mark.parametrize(("status", "body", "kind", "code"), ERRORS)
def test_errors_are_the_hss_error_tree(
    status: int, body: dict[str, str], kind: type[HssError], code: str
) -> None:
    with pytest.raises(HssError) as info:
        respond(body, status=status, headers={"X-Request-Id": "rid-9"})
    assert type(info.value) is kind
    assert (info.value.error_code, info.value.status, info.value.request_id) == (
        code,
        status,
        "rid-9",
    )
    assert "AKSECRET123" not in str(info.value)  # echoed secrets are scrubbed
    assert "does not know this task" not in info.value.user_message()
