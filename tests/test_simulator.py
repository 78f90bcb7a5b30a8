"""The HSS simulator over real HTTP: signatures, rate limit, paging, filters, faults, flips."""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import httpx
import pytest
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.sdk_request import SdkRequest
from huaweicloudsdkcore.signer.signer import Signer

from bot.hss import signer
from bot.sandbox.sim_server import cli_main
from bot.sandbox.simdata import HOSTILE_NAMES, Query, TaskData
from bot.sandbox.simulator import SimConfig, SimRequest, Simulator
from tests.plugins.hss_sim import (
    TEST_AK,
    TEST_PROJECT_ID,
    TEST_SK,
    MakeSim,
    RunningSim,
    SimClock,
)

Params = list[tuple[str, str]]


async def get(
    running: RunningSim,
    task_id: str,
    params: Params | None = None,
    *,
    auth: httpx.Auth | None = None,
    timeout: float = 5.0,
) -> httpx.Response:
    async with httpx.AsyncClient(auth=auth or running.auth(), timeout=timeout) as client:
        return await client.get(running.registries_url(task_id, params or []))


def signed_headers(running: RunningSim, url: str) -> dict[str, str]:
    """Headers HssAuth would send for ``url``, to replay against a different URL."""
    return dict(next(running.auth().auth_flow(httpx.Request("GET", url))).headers)


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error_code"] == code
    assert body["error_msg"]
    assert body["request_id"] == response.headers["X-Request-Id"]


# -- signatures -------------------------------------------------------------------------------


async def test_signed_request_gets_a_page(hss_sim: RunningSim) -> None:
    response = await get(hss_sim, "task-42", [("limit", "10")])
    assert response.status_code == 200
    body = response.json()
    assert body["total_num"] == 120
    assert len(body["data_list"]) == 10
    assert set(body["data_list"][0]) == {
        "registry_id",
        "registry_name",
        "registry_type",
        "sync_status",
        "failed_reason",
    }
    assert hss_sim.sim.stats()["calls"] == {TEST_AK: 1}


async def test_request_signed_by_official_sdk_is_accepted(hss_sim: RunningSim) -> None:
    netloc = urlsplit(hss_sim.url).netloc
    task_id = "sdk task/é"
    request = SdkRequest(
        method="GET",
        schema="http",
        host=netloc,
        resource_path=f"/v5/{TEST_PROJECT_ID}/image/image-sync/tasks/"
        + signer.encoded_path([task_id])[1:]
        + "/registries",
        query_params=[("registry_type", "Harbor,Jfrog"), ("limit", 200), ("registry_name", "a b")],
        header_params={
            "X-Sdk-Date": signer.format_sdk_date(datetime.now(UTC)),
            "X-Project-Id": TEST_PROJECT_ID,
            "Content-Type": "application/json",
        },
        body="",
    )
    Signer(BasicCredentials(TEST_AK, TEST_SK, TEST_PROJECT_ID)).sign(request)
    async with httpx.AsyncClient() as client:
        response = await client.get(hss_sim.url + request.uri, headers=request.header_params)
    assert response.status_code == 200, response.text
    assert response.json()["total_num"] == 0  # generated names never contain "a b"


async def test_wrong_secret_is_401_and_counted(hss_sim: RunningSim) -> None:
    bad = signer.HssAuth(signer.Credentials(TEST_AK, "wrong"), project_id=TEST_PROJECT_ID)
    response = await get(hss_sim, "t", auth=bad)
    assert_error(response, 401, "APIGW.0301")
    assert hss_sim.sim.stats()["auth_failures"] == {TEST_AK: 1}
    assert hss_sim.sim.stats()["calls"] == {}


async def test_unknown_ak_and_missing_authorization_are_401(hss_sim: RunningSim) -> None:
    stranger = signer.HssAuth(signer.Credentials("AKOTHER", TEST_SK), project_id=TEST_PROJECT_ID)
    assert_error(await get(hss_sim, "t", auth=stranger), 401, "APIGW.0301")
    async with httpx.AsyncClient() as client:
        response = await client.get(hss_sim.registries_url("t"))
    assert_error(response, 401, "APIGW.0301")


async def test_tampered_query_is_rejected(hss_sim: RunningSim) -> None:
    url = hss_sim.registries_url("t", [("limit", "10")])
    spaced = hss_sim.registries_url("t", [("registry_name", "a b")])
    async with httpx.AsyncClient() as client:
        ok = await client.get(url, headers=signed_headers(hss_sim, url))
        tampered = await client.get(
            url.replace("limit=10", "limit=200"), headers=signed_headers(hss_sim, url)
        )
        plus = await client.get(spaced.replace("%20", "+"), headers=signed_headers(hss_sim, spaced))
    assert ok.status_code == 200
    assert_error(tampered, 401, "APIGW.0301")
    assert_error(plus, 401, "APIGW.0301")  # "+" is not a space to the gateway


@pytest.mark.parametrize("skew_minutes", [-16, 16])
async def test_date_outside_15_minutes_is_rejected(hss_sim: RunningSim, skew_minutes: int) -> None:
    moment = datetime.now(UTC) + timedelta(minutes=skew_minutes)
    response = await get(hss_sim, "t", auth=hss_sim.auth(clock=lambda: moment))
    assert_error(response, 401, "APIGW.0301")
    near = datetime.now(UTC) - timedelta(minutes=14)
    assert (await get(hss_sim, "t", auth=hss_sim.auth(clock=lambda: near))).status_code == 200


async def test_security_token_required_when_configured(make_hss_sim: MakeSim) -> None:
    running = await make_hss_sim(security_token="sts-token")
    assert (await get(running, "t")).status_code == 200
    without = signer.HssAuth(signer.Credentials(TEST_AK, TEST_SK), project_id=TEST_PROJECT_ID)
    assert_error(await get(running, "t", auth=without), 401, "APIGW.0301")
    wrong = signer.HssAuth(signer.Credentials(TEST_AK, TEST_SK, "x"), project_id=TEST_PROJECT_ID)
    assert_error(await get(running, "t", auth=wrong), 401, "APIGW.0301")


async def test_lockout_after_five_consecutive_failures(make_hss_sim: MakeSim) -> None:
    running = await make_hss_sim(lockout_after=5, lockout_seconds=60)
    bad = signer.HssAuth(signer.Credentials(TEST_AK, "wrong"), project_id=TEST_PROJECT_ID)
    for _ in range(5):
        assert_error(await get(running, "t", auth=bad), 401, "APIGW.0301")
    locked = await get(running, "t")
    assert_error(locked, 401, "APIGW.0301")
    assert "locked" in locked.json()["error_msg"]
    assert running.sim.stats()["locked"] == [TEST_AK]
    assert running.sim.stats()["auth_failures"] == {TEST_AK: 6}


def test_lockout_expires_on_the_clock() -> None:
    now = [1_800_000_000.0]
    config = SimConfig(
        ak=TEST_AK, sk=TEST_SK, project_id=TEST_PROJECT_ID, lockout_after=5, lockout_seconds=300
    )
    sim = Simulator(config, clock=lambda: now[0])
    for _ in range(5):
        assert sim.handle(_signed(sim, now[0], sk="wrong")).status == 401
    now[0] += 299
    assert sim.handle(_signed(sim, now[0])).status == 401  # correct, but still locked
    now[0] += 2
    assert sim.stats()["locked"] == []
    assert sim.handle(_signed(sim, now[0])).status == 200


async def test_wrong_project_is_403(hss_sim: RunningSim) -> None:
    other = signer.HssAuth(hss_sim.credentials, project_id="other")
    url = hss_sim.registries_url("t").replace(TEST_PROJECT_ID, "other")
    async with httpx.AsyncClient(auth=other) as client:
        assert_error(await client.get(url), 403, "APIGW.0302")


# -- rate limit -------------------------------------------------------------------------------


async def test_rate_limit_sliding_window_with_retry_after(make_hss_sim: MakeSim) -> None:
    # The simulator's clock in the test's hand: a loaded machine cannot stretch the burst
    # past the window, and the window passes without a real wait.
    clock = SimClock()
    running = await make_hss_sim(clock=clock, rate_limit=5, window=0.5, retry_after=True)
    statuses = []
    for n in range(5):  # at 0, 0.1, ... 0.4 s: all in one window
        clock.advance(0.1 if n else 0.0)
        statuses.append((await get(running, "t")).status_code)
    throttled = await get(running, "t")
    assert statuses == [200] * 5
    assert_error(throttled, 429, "APIGW.0308")
    assert throttled.headers["Retry-After"] == "1"  # 0.1 s, rounded up to whole seconds
    clock.advance(0.15)  # the window slides past the first call only: one slot, not five
    assert (await get(running, "t")).status_code == 200
    assert (await get(running, "t")).status_code == 429
    stats = running.sim.stats()
    assert stats["throttled"] == 2
    assert stats["max_in_window"] == {TEST_AK: 7}  # the refused calls count too
    assert stats["by_status"] == {"200": 6, "429": 2}


async def test_no_retry_after_unless_configured(make_hss_sim: MakeSim) -> None:
    running = await make_hss_sim(rate_limit=1, window=30)
    assert (await get(running, "t")).status_code == 200
    throttled = await get(running, "t")
    assert_error(throttled, 429, "APIGW.0308")
    assert "Retry-After" not in throttled.headers


async def test_rate_limit_is_per_ak(make_hss_sim: MakeSim) -> None:
    running = await make_hss_sim(rate_limit=1, window=30, extra_keys={"AK2": "SK2"})
    other = signer.HssAuth(signer.Credentials("AK2", "SK2"), project_id=TEST_PROJECT_ID)
    assert (await get(running, "t")).status_code == 200
    assert (await get(running, "t", auth=other)).status_code == 200
    assert (await get(running, "t")).status_code == 429
    assert running.sim.stats()["calls"] == {TEST_AK: 2, "AK2": 1}


# -- paging and filters -----------------------------------------------------------------------


async def test_paging_returns_every_registry_once(make_hss_sim: MakeSim) -> None:
    running = await make_hss_sim(default_size=250)
    seen = []
    for offset in range(0, 250, 100):
        body = (await get(running, "t", [("offset", str(offset)), ("limit", "100")])).json()
        assert body["total_num"] == 250
        seen += body["data_list"]
    assert [r["registry_id"] for r in seen] == [r.registry_id for r in running.sim.registries("t")]
    assert len({r["registry_id"] for r in seen}) == 250
    past_end = (await get(running, "t", [("offset", "400")])).json()
    assert past_end == {"total_num": 250, "data_list": []}


async def test_filters(make_hss_sim: MakeSim) -> None:
    running = await make_hss_sim(default_size=200, task_sizes={"small": 12})
    everything = running.sim.registries("t")
    failed = (await get(running, "t", [("sync_status", "failed"), ("limit", "200")])).json()
    assert failed["total_num"] == sum(r.sync_status == "failed" for r in everything) > 0
    assert {r["sync_status"] for r in failed["data_list"]} == {"failed"}
    assert all(r["failed_reason"] for r in failed["data_list"])
    typed = (await get(running, "t", [("registry_type", "Harbor,Jfrog"), ("limit", "200")])).json()
    assert {r["registry_type"] for r in typed["data_list"]} == {"Harbor", "Jfrog"}
    assert typed["total_num"] == sum(r.registry_type in {"Harbor", "Jfrog"} for r in everything)
    named = (await get(running, "t", [("registry_name", "HARBOR-"), ("limit", "200")])).json()
    assert named["total_num"] == sum("harbor-" in r.registry_name for r in everything) > 0
    eps = await get(running, "small", [("enterprise_project_id", "all_granted_eps")])
    assert eps.json()["total_num"] == 12


async def test_status_mix_and_types_are_realistic() -> None:
    registries = TaskData(seed=3, task_id="t", size=5000).registries()
    shares = Counter(r.sync_status for r in registries)
    assert 0.75 < shares["finished"] / 5000 < 0.85
    assert 0.07 < shares["failed"] / 5000 < 0.13
    assert {r.registry_type for r in registries} == {
        "SwrPrivate",
        "SwrShared",
        "SwrEnterprise",
        "Harbor",
        "Jfrog",
        "Other",
    }
    reasons = {r.failed_reason for r in registries if r.failed_reason}
    assert any("权限不足" in r for r in reasons)
    assert any("<" in r and ">" in r for r in reasons)
    assert not any(n in {r.registry_name for r in registries} for n in HOSTILE_NAMES)


def test_hostile_data_only_on_request() -> None:
    hostile = TaskData(seed=3, task_id="t", size=3000, hostile=True).registries()
    assert "<!channel>" in {r.registry_name for r in hostile}
    assert any("<https://evil.example|click>" in r.failed_reason for r in hostile)


@pytest.mark.parametrize(
    "params",
    [
        [("limit", "9")],
        [("limit", "201")],
        [("limit", "ten")],
        [("offset", "-1")],
        [("offset", "2000001")],
        [("sync_status", "done")],
        [("registry_type", "Harbor,Docker")],
        [("registry_name", "x" * 129)],
        [("enterprise_project_id", "e" * 257)],
        [("limit", "10"), ("limit", "20")],
    ],
)
async def test_invalid_parameters_are_hss_0001(hss_sim: RunningSim, params: Params) -> None:
    assert_error(await get(hss_sim, "t", params), 400, "HSS.0001")


async def test_boundary_parameters_are_accepted(hss_sim: RunningSim) -> None:
    for params in ([("limit", "10")], [("limit", "200")], [("offset", "2000000")]):
        assert (await get(hss_sim, "t", params)).status_code == 200
    assert_error(await get(hss_sim, "x" * 65), 400, "HSS.0001")


async def test_unknown_task(make_hss_sim: MakeSim) -> None:
    running = await make_hss_sim(missing_tasks=frozenset({"gone"}), not_found_status=404)
    assert_error(await get(running, "gone"), 404, "HSS.0011")
    assert_error(await get(running, "missing-7"), 404, "HSS.0011")
    assert (await get(running, "present")).status_code == 200


# -- faults, flips, shifts --------------------------------------------------------------------


async def test_scripted_responses_in_order(hss_sim: RunningSim) -> None:
    hss_sim.sim.queue(503, 429, "malformed", "ok", 502)
    assert_error(await get(hss_sim, "t"), 503, "SIM.503")
    assert_error(await get(hss_sim, "t"), 429, "APIGW.0308")
    malformed = await get(hss_sim, "t")
    assert malformed.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(malformed.text)
    assert (await get(hss_sim, "t")).json()["total_num"] == 120
    assert (await get(hss_sim, "t")).status_code == 502
    assert (await get(hss_sim, "t")).status_code == 200


async def test_timeout_and_latency_over_http_control(hss_sim: RunningSim) -> None:
    async with httpx.AsyncClient() as control:
        faults = {"timeout_seconds": 2, "latency_ms": 120, "queue": ["timeout"]}
        assert (await control.post(f"{hss_sim.url}/_sim/faults", json=faults)).status_code == 200
    with pytest.raises(httpx.ReadTimeout):
        await get(hss_sim, "t", timeout=0.5)
    started = time.monotonic()
    assert (await get(hss_sim, "t")).status_code == 200
    assert time.monotonic() - started >= 0.12


async def test_random_fault_rates(make_hss_sim: MakeSim) -> None:
    from bot.sandbox.simulator import Faults

    running = await make_hss_sim(faults=Faults(error_rate=1.0))
    assert (await get(running, "t")).status_code in {500, 502, 503, 504}
    running.sim.set_faults(error_rate=0.0, throttle_rate=1.0)
    assert_error(await get(running, "t"), 429, "APIGW.0308")
    running.sim.set_faults(throttle_rate=0.0, malformed_rate=1.0)
    with pytest.raises(json.JSONDecodeError):
        (await get(running, "t")).json()
    running.sim.set_faults(malformed_rate=0.3)
    codes = Counter([(await get(running, "t")).text.endswith("}") for _ in range(40)])
    assert 3 <= codes[False] <= 25


async def test_flip_one_registry_over_http(hss_sim: RunningSim) -> None:
    target = hss_sim.sim.registries("t")[7]
    flip = {
        "task_id": "t",
        "registry_id": target.registry_id,
        "status": "failed",
        "reason": "镜像同步失败: 权限不足 <b>&</b>",
    }
    async with httpx.AsyncClient() as control:
        changed = (await control.post(f"{hss_sim.url}/_sim/flip", json=flip)).json()["changed"]
        random5 = await control.post(f"{hss_sim.url}/_sim/flip", json={"task_id": "t", "count": 5})
        bad = await control.post(f"{hss_sim.url}/_sim/flip", json={**flip, "registry_id": "0" * 32})
    assert changed[0]["sync_status"] == "failed"
    assert len(random5.json()["changed"]) == 5
    assert bad.status_code == 400
    page = (await get(hss_sim, "t", [("limit", "10")])).json()["data_list"]
    if target.registry_id not in {r["registry_id"] for r in random5.json()["changed"]}:
        assert page[7]["failed_reason"] == "镜像同步失败: 权限不足 <b>&</b>"


def test_set_status_by_name_or_id_shows_in_the_next_answer() -> None:
    sim = Simulator(SimConfig(seed=3, task_sizes={"t": 40}))
    target = next(r for r in sim.registries("t") if r.sync_status == "finished")
    by_name = sim.set_status("t", target.registry_name.upper(), "failed", "disk <full> & gone")
    assert (by_name.registry_id, by_name.sync_status) == (target.registry_id, "failed")
    assert sim.find_registry("t", target.registry_id).failed_reason == "disk <full> & gone"
    _, failed = sim.task("t").query(Query(limit=40, sync_status="failed"))
    assert target.registry_id in {r.registry_id for r in failed}

    back = sim.set_status("t", target.registry_id, "finished")
    assert (back.sync_status, back.failed_reason) == ("finished", "")
    # Without a reason a failure gets the seeded one, as the API would report it.
    assert sim.set_status("t", target.registry_name, "failed").failed_reason


def test_set_status_refuses_unknown_registries_and_statuses() -> None:
    sim = Simulator(SimConfig(task_sizes={"t": 40}))
    name = sim.registries("t")[0].registry_name
    with pytest.raises(KeyError, match="has no registry with id or name 'nope'"):
        sim.set_status("t", "nope", "failed")
    with pytest.raises(KeyError):  # a part of a name is not the name
        sim.find_registry("t", name[:-1])
    with pytest.raises(KeyError):
        sim.set_status("t", "0" * 32, "failed")
    with pytest.raises(ValueError, match="finished, running, failed"):
        sim.set_status("t", name, "broken")
    assert sim.find_registry("t", name).sync_status == sim.registries("t")[0].sync_status


def test_task_ids_lists_configured_and_used_tasks() -> None:
    sim = Simulator(SimConfig(task_sizes={"b": 3, "a": 5}))
    assert sim.task_ids() == ["a", "b"]
    sim.registries("c")
    assert sim.task_ids() == ["a", "b", "c"]


async def test_flip_by_registry_name_over_http(hss_sim: RunningSim) -> None:
    target = hss_sim.sim.registries("t")[3]
    flip = {"task_id": "t", "registry": target.registry_name, "status": "running"}
    async with httpx.AsyncClient() as control:
        changed = await control.post(f"{hss_sim.url}/_sim/flip", json=flip)
        unknown = await control.post(
            f"{hss_sim.url}/_sim/flip", json={**flip, "registry": "no-such-registry"}
        )
        no_status = await control.post(
            f"{hss_sim.url}/_sim/flip", json={"task_id": "t", "registry": target.registry_name}
        )
    assert changed.json()["changed"][0]["registry_id"] == target.registry_id
    assert changed.json()["changed"][0]["sync_status"] == "running"
    assert unknown.status_code == 400 and "no-such-registry" in unknown.text
    assert no_status.status_code == 400 and "status must be one of" in no_status.text
    page = (await get(hss_sim, "t", [("limit", "10")])).json()["data_list"]
    assert page[3]["sync_status"] == "running"


async def test_insert_shifts_rows_between_pages(hss_sim: RunningSim) -> None:
    first = (await get(hss_sim, "t", [("limit", "10")])).json()
    async with httpx.AsyncClient() as control:
        shift = {"task_id": "t", "insert": 3, "at": 0}
        shifted = (await control.post(f"{hss_sim.url}/_sim/shift", json=shift)).json()
    second = (await get(hss_sim, "t", [("offset", "10"), ("limit", "10")])).json()
    assert shifted["size"] == 123
    assert second["total_num"] == first["total_num"] + 3
    # the last 3 rows of page one moved onto page two: a client must de-duplicate by id
    assert [r["registry_id"] for r in second["data_list"][:3]] == [
        r["registry_id"] for r in first["data_list"][7:]
    ]
    removed = hss_sim.sim.remove("t", 5, at=2)
    assert len(removed) == 5
    assert len(hss_sim.sim.task("t")) == 118


def _signed(sim: Simulator, now: float, task_id: str = "t", sk: str = TEST_SK) -> SimRequest:
    path = signer.encoded_path(
        ["v5", TEST_PROJECT_ID, "image", "image-sync", "tasks", task_id, "registries"]
    )
    headers = {
        "Host": "sim",
        "X-Sdk-Date": signer.format_sdk_date(datetime.fromtimestamp(now, UTC)),
        "Content-Type": "application/json",
    }
    headers["Authorization"] = signer.authorization(
        ak=TEST_AK,
        sk=sk,
        method="GET",
        canonical_path=signer.canonical_path_of(path),
        query="limit=200",
        headers=headers,
    )
    return SimRequest("GET", path, "limit=200", headers)


def test_periodic_flips_follow_the_injected_clock() -> None:
    now = [1_800_000_000.0]
    config = SimConfig(
        ak=TEST_AK,
        sk=TEST_SK,
        project_id=TEST_PROJECT_ID,
        flip_every=10,
        flip_count=4,
        default_size=50,
    )
    sim = Simulator(config, clock=lambda: now[0])
    before = json.loads(sim.handle(_signed(sim, now[0])).body)["data_list"]
    now[0] += 25  # two flip periods
    after = json.loads(sim.handle(_signed(sim, now[0])).body)["data_list"]
    changed = sum(a != b for a, b in zip(before, after, strict=True))
    assert 1 <= changed <= 8


def test_same_seed_same_data_other_seed_other_data() -> None:
    def data(seed: int) -> list[object]:
        return list(Simulator(SimConfig(seed=seed)).registries("task-1"))

    assert data(7) == data(7)
    assert data(7) != data(8)
    assert Simulator(SimConfig(seed=7)).registries("task-2") != data(7)


async def test_stats_and_reset_over_http(hss_sim: RunningSim) -> None:
    hss_sim.sim.flip("t", 3)
    await get(hss_sim, "t")
    async with httpx.AsyncClient() as control:
        stats = (await control.get(f"{hss_sim.url}/_sim/stats")).json()
        await control.post(f"{hss_sim.url}/_sim/reset")
        after = (await control.get(f"{hss_sim.url}/_sim/stats")).json()
        limit = await control.post(f"{hss_sim.url}/_sim/limit", json={"rate_limit": 2})
    assert stats["calls"] == {TEST_AK: 1} and stats["by_status"] == {"200": 1}
    assert after["calls"] == {} and after["throttled"] == 0
    assert limit.json()["calls"] == 2
    assert hss_sim.sim.registries("t") == Simulator(hss_sim.sim.config).registries("t")


# -- scale ------------------------------------------------------------------------------------


async def test_100k_registry_task_pages_fast(make_hss_sim: MakeSim) -> None:
    running = await make_hss_sim(task_sizes={"big": 100_000})
    data = running.sim.task("big")
    queries = [
        Query(offset=0, limit=200),
        Query(offset=99_800, limit=200),
        Query(offset=5_000, limit=200, sync_status="failed"),
        Query(offset=1_000, limit=200, registry_types=frozenset({"Harbor", "Other"})),
        Query(offset=200, limit=200, registry_name="harbor-prod"),
    ]
    data.query(queries[-1])  # the name index is built once per task (about 0.1 s)
    for query in queries:
        started = time.perf_counter()
        total, page = data.query(query)
        assert time.perf_counter() - started < 0.05, query
        assert len(page) == 200 and total >= 200
    started = time.perf_counter()
    last = (await get(running, "big", [("offset", "99800"), ("limit", "200")])).json()
    assert time.perf_counter() - started < 1.0
    assert last["total_num"] == 100_000 and len(last["data_list"]) == 200
    assert last["data_list"][-1]["registry_name"].endswith("-99999")


# -- CLI --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [["--rate-limit", "0"], ["--task-size", "nosize"], ["--error-rate", "2"], ["--bogus"]],
)
def test_cli_rejects_bad_flags(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(argv) == 2
    assert "hss-sync-bot simulate" in capsys.readouterr().err


def test_cli_builds_config_from_flags() -> None:
    from bot.sandbox.sim_server import _parser, config_from_args

    args = _parser().parse_args(
        [
            "--seed",
            "4",
            "--task-size",
            "a=b=10",
            "--window",
            "0.5",
            "--retry-after",
            "--error-rate",
            "0.1",
            "--flip-every",
            "3",
        ]
    )
    config = config_from_args(args)
    assert config.task_sizes == {"a=b": 10}
    assert (config.seed, config.window, config.retry_after) == (4, 0.5, True)
    assert config.faults.error_rate == 0.1 and config.flip_every == 3
