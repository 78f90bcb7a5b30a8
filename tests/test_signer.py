"""bot.hss.signer must be byte-identical to the official SDK signer (huaweicloudsdkcore 3.1.219).

Every case signs the same request twice, once with our pure signer and once with
``huaweicloudsdkcore.signer.signer.Signer``, and compares the Authorization header and the
URI that would be sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from urllib.parse import quote

import httpx
import pytest
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.sdk_request import SdkRequest
from huaweicloudsdkcore.signer.signer import Signer
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.hss import signer
from bot.models import REGISTRY_TYPES

AK = "AKTESTEXAMPLE0000000"
SK = "SKtestexample0000000000000000000000000000"
PROJECT = "0123456789abcdef0123456789abcdef"
HOST = "hss.ap-southeast-1.myhuaweicloud.com"
DATE = "20261127T101500Z"
FIXED_MOMENT = datetime(2026, 11, 27, 10, 15, 0, tzinfo=UTC)

Params = Sequence[tuple[str, str]]


def _segments(task_id: str, project_id: str = PROJECT) -> list[str]:
    return ["v5", project_id, "image", "image-sync", "tasks", task_id, "registries"]


def sdk_sign(
    task_id: str,
    params: Params,
    *,
    token: str | None = None,
    host: str = HOST,
    project_id: str = PROJECT,
) -> tuple[str, str]:
    """(Authorization, uri) exactly as the official SDK builds them for this request."""
    # The SDK client quotes path parameters with safe="" before handing the path to the signer.
    resource_path = (
        f"/v5/{quote(project_id, safe='')}/image/image-sync/tasks/"
        f"{quote(task_id, safe='')}/registries"
    )
    headers = {"X-Sdk-Date": DATE, "X-Project-Id": project_id, "Content-Type": "application/json"}
    if token is not None:
        headers["X-Security-Token"] = token
    request = SdkRequest(
        method="GET",
        schema="https",
        host=host,
        resource_path=resource_path,
        query_params=list(params),
        header_params=headers,
        body="",
    )
    Signer(BasicCredentials(AK, SK, project_id)).sign(request)
    return request.header_params["Authorization"], request.uri


def our_sign(
    task_id: str,
    params: Params,
    *,
    token: str | None = None,
    host: str = HOST,
    project_id: str = PROJECT,
) -> tuple[str, str]:
    segments = _segments(task_id, project_id)
    headers = {
        "Host": host,
        "X-Sdk-Date": DATE,
        "X-Project-Id": project_id,
        "Content-Type": "application/json",
    }
    if token is not None:
        headers["X-Security-Token"] = token
    query = signer.canonical_query(params)
    auth = signer.authorization(
        ak=AK,
        sk=SK,
        method="GET",
        canonical_path=signer.canonical_uri(segments),
        query=query,
        headers=headers,
    )
    path = signer.encoded_path(segments)
    return auth, f"{path}?{query}" if query else path


def test_official_test_vector() -> None:
    params = [("limit", "200"), ("offset", "0"), ("sync_status", "failed")]
    headers = {
        "Host": HOST,
        "X-Sdk-Date": DATE,
        "X-Project-Id": PROJECT,
        "Content-Type": "application/json",
    }
    to_sign = signer.string_to_sign(
        method="GET",
        canonical_path=signer.canonical_uri(_segments("task-42")),
        query=signer.canonical_query(params),
        headers=headers,
        body=b"",
    )
    assert to_sign.splitlines() == [
        "SDK-HMAC-SHA256",
        DATE,
        "5ef8e4a95a73cd599b00db7fc955f2f270bd7ab71d2ab52817cd0f5149fbb4ba",
    ]
    assert signer.signature(SK, to_sign) == (
        "890864a5bf2ca4319ec6a838ec2cf3ff3b98b598edd83b74b3fd6830a2b1d4ca"
    )
    auth, _ = our_sign("task-42", params)
    assert auth == (
        "SDK-HMAC-SHA256 Access=AKTESTEXAMPLE0000000, "
        "SignedHeaders=content-type;host;x-project-id;x-sdk-date, "
        "Signature=890864a5bf2ca4319ec6a838ec2cf3ff3b98b598edd83b74b3fd6830a2b1d4ca"
    )


TASK_IDS = [
    "task-42",
    "task with spaces",
    "100%done",
    "%2F-already-encoded",
    "a/b",
    "/leading-and-trailing/",
    "镜像同步任务",
    "naïve-ünïcode-🚀",
    "tilde~ok",
    "plus+and&amp=eq?q#frag",
    "x" * 64,
]


@pytest.mark.parametrize("task_id", TASK_IDS)
def test_task_ids_match_sdk(task_id: str) -> None:
    params = [("limit", "10"), ("offset", "0")]
    assert our_sign(task_id, params) == sdk_sign(task_id, params)


QUERIES: list[list[tuple[str, str]]] = [
    [],
    [("registry_type", "Harbor,Jfrog")],
    [("registry_type", ",".join(REGISTRY_TYPES))],
    [("enterprise_project_id", "all_granted_eps")],
    [("enterprise_project_id", "0"), ("registry_name", "harbor prod")],
    [("registry_name", "镜像 仓库 ~ %20 + & = ?")],
    [("sync_status", "running"), ("limit", "200"), ("offset", "2000000")],
    [
        ("enterprise_project_id", "ep-1 2/3"),
        ("registry_name", "<!channel> & co"),
        ("registry_type", "SwrPrivate,SwrShared,SwrEnterprise"),
        ("offset", "400"),
        ("limit", "200"),
        ("sync_status", "failed"),
    ],
    # Repeated keys: the SDK sorts raw pairs, not encoded ones ("~" sorts before "é" encoded).
    [("registry_name", "é"), ("registry_name", "~")],
]


@pytest.mark.parametrize("params", QUERIES)
def test_query_parameters_match_sdk(params: list[tuple[str, str]]) -> None:
    assert our_sign("task 1/é", params) == sdk_sign("task 1/é", params)


@pytest.mark.parametrize("token", ["FQoGZXIvYXdzEJr//////////wEaDM+temp=", "  padded-token  "])
def test_temporary_credentials_match_sdk(token: str) -> None:
    params = [("sync_status", "failed")]
    ours, sdks = our_sign("t", params, token=token), sdk_sign("t", params, token=token)
    assert ours == sdks
    assert "x-security-token" in ours[0]


def test_host_with_port_and_odd_project_match_sdk() -> None:
    host, project = "127.0.0.1:8443", "proj with space/é"
    assert our_sign("t", [], host=host, project_id=project) == sdk_sign(
        "t", [], host=host, project_id=project
    )


def test_header_with_underscore_is_never_signed() -> None:
    names = signer.signed_header_names({"X-Sdk-Date": DATE, "X_Custom": "1", "Host": HOST})
    assert names == ["host", "x-sdk-date"]


def test_changing_any_signed_part_changes_the_signature() -> None:
    base = our_sign("t", [("limit", "10")])[0]
    assert our_sign("u", [("limit", "10")])[0] != base
    assert our_sign("t", [("limit", "11")])[0] != base
    assert our_sign("t", [("limit", "10")], host="other")[0] != base
    assert our_sign("t", [("limit", "10")], token="tok")[0] != base


text_no_surrogates = st.text(
    alphabet=st.characters(exclude_categories=["Cs"]), min_size=1, max_size=64
)
param_names = st.sampled_from(
    ["enterprise_project_id", "registry_name", "registry_type", "offset", "limit", "sync_status"]
)


@settings(max_examples=150, deadline=None)
@given(
    task_id=text_no_surrogates,
    params=st.dictionaries(param_names, text_no_surrogates, max_size=6),
)
def test_generated_requests_match_sdk(task_id: str, params: dict[str, str]) -> None:
    pairs = list(params.items())
    assert our_sign(task_id, pairs) == sdk_sign(task_id, pairs)


def _signed_httpx_request(task_id: str, params: Params, token: str | None) -> httpx.Request:
    path = signer.encoded_path(_segments(task_id))
    query = signer.canonical_query(params)
    request = httpx.Request("GET", f"https://{HOST}{path}?{query}")
    auth = signer.HssAuth(
        signer.Credentials(AK, SK, token), project_id=PROJECT, clock=lambda: FIXED_MOMENT
    )
    flow = auth.auth_flow(request)
    return next(flow)


@pytest.mark.parametrize("task_id", ["task-42", "a/b c%", "镜像~"])
@pytest.mark.parametrize("token", [None, "sts-token"])
def test_hss_auth_signs_httpx_request_like_sdk(task_id: str, token: str | None) -> None:
    params = [("registry_name", "prod east"), ("registry_type", "Harbor,Jfrog"), ("limit", "200")]
    request = _signed_httpx_request(task_id, params, token)
    sdk_auth, sdk_uri = sdk_sign(task_id, params, token=token)
    assert request.headers["Authorization"] == sdk_auth
    assert request.url.raw_path.decode() == sdk_uri
    assert request.headers["X-Sdk-Date"] == DATE
    assert request.headers["X-Project-Id"] == PROJECT
    assert request.headers.get("X-Security-Token") == token


@settings(max_examples=60, deadline=None)
@given(task_id=text_no_surrogates.filter(lambda t: t not in {".", ".."}), name=text_no_surrogates)
def test_hss_auth_generated_requests_match_sdk(task_id: str, name: str) -> None:
    params = [("registry_name", name), ("offset", "0")]
    request = _signed_httpx_request(task_id, params, None)
    assert (request.headers["Authorization"], request.url.raw_path.decode()) == sdk_sign(
        task_id, params
    )


async def test_hss_auth_resigns_each_send_and_drops_stale_headers() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"total_num": 0, "data_list": []})

    moments = iter([FIXED_MOMENT, FIXED_MOMENT.replace(minute=16)])
    auth = signer.HssAuth(
        signer.Credentials(AK, SK), project_id=PROJECT, clock=lambda: next(moments)
    )
    path = signer.encoded_path(_segments("task-42"))
    query = signer.canonical_query([("limit", "200"), ("offset", "0"), ("sync_status", "failed")])
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler), auth=auth) as client:
        stale = {"X-Security-Token": "old", "Authorization": "stale"}
        await client.get(f"https://{HOST}{path}?{query}", headers=stale)
        await client.get(f"https://{HOST}{path}?{query}")
    first, second = seen
    assert first.headers["Authorization"].endswith(
        "Signature=890864a5bf2ca4319ec6a838ec2cf3ff3b98b598edd83b74b3fd6830a2b1d4ca"
    )
    assert "X-Security-Token" not in first.headers
    assert second.headers["X-Sdk-Date"] == "20261127T101600Z"
    assert second.headers["Authorization"] != first.headers["Authorization"]


def test_format_sdk_date_converts_to_utc() -> None:
    from datetime import timedelta, timezone

    moment = datetime(2026, 11, 27, 18, 15, tzinfo=timezone(timedelta(hours=8)))
    assert signer.format_sdk_date(moment) == DATE


def test_server_side_canonical_path_equals_client_side() -> None:
    for task_id in TASK_IDS:
        segments = _segments(task_id)
        raw = signer.encoded_path(segments)
        assert signer.canonical_path_of(raw) == signer.canonical_uri(segments)
