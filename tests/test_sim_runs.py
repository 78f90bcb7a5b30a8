"""The HSS simulator's sync runs (ListImageScanTask): over real HTTP with the simulator's
clock in the test's hand (``SimClock``), and on ``RunBook`` directly where only the plan
matters. Every run's task id is checked against ListAssociateRegistries: the counts a run
lists are what the registries API answers for it at that moment."""

from __future__ import annotations

import itertools
from typing import Any

import httpx
import pytest

from bot.sandbox.sim_server import _parser, cli_main, config_from_args
from bot.sandbox.simdata import HOSTILE_NAMES
from bot.sandbox.simruns import END_REASONS, IDENTITY, RunBook, RunsConfig
from bot.sandbox.simulator import SimConfig, SimRequest, Simulator
from tests.plugins.hss_sim import TEST_AK, MakeSim, RunningSim, SimClock

Params = list[tuple[str, str]]


async def list_runs(running: RunningSim, params: Params | None = None) -> dict[str, Any]:
    async with httpx.AsyncClient(auth=running.auth()) as client:
        response = await client.get(running.runs_url(params or [("limit", "200")]))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def registries_total(running: RunningSim, task_id: str, status: str) -> int:
    params = [("sync_status", status), ("limit", "10")]
    async with httpx.AsyncClient(auth=running.auth()) as client:
        response = await client.get(running.registries_url(task_id, params))
    assert response.status_code == 200, response.text
    total: int = response.json()["total_num"]
    return total


async def failed_ids(running: RunningSim, task_id: str) -> set[str]:
    params = [("sync_status", "failed"), ("limit", "200")]
    async with httpx.AsyncClient(auth=running.auth()) as client:
        response = await client.get(running.registries_url(task_id, params))
    return {row["registry_id"] for row in response.json()["data_list"]}


async def assert_counts_agree(running: RunningSim, row: dict[str, Any]) -> None:
    """The run's counts are what ListAssociateRegistries says about its task id."""
    task_id = row["task_id"]
    failed = await registries_total(running, task_id, "failed")
    finished = await registries_total(running, task_id, "finished")
    still = await registries_total(running, task_id, "running")
    assert (row["failed_num"], row["success_num"]) == (failed, finished), row
    assert row["total_num"] == failed + finished + still


async def strict_sim(make_hss_sim: MakeSim, clock: SimClock, **config: Any) -> RunningSim:
    settings: dict[str, Any] = {
        "run_every": 100.0,
        "run_duration": 40.0,
        "run_history": 2,
        "run_registries": 200,
    }
    settings.update(config)
    return await make_hss_sim(clock=clock, **settings)


# --- the schedule ----------------------------------------------------------------------------


async def test_scheduled_runs_appear_as_the_clock_moves(make_hss_sim: MakeSim) -> None:
    clock = SimClock()
    start = clock.now
    running = await strict_sim(make_hss_sim, clock)
    body = await list_runs(running)
    # Two began before the start, half a period apart from it, and have ended.
    assert body["total_num"] == 2
    assert [r["begin_time"] for r in body["data_list"]] == [
        int((start - 50) * 1000),
        int((start - 150) * 1000),
    ]
    assert {(r["task_type"], r["task_status"]) for r in body["data_list"]} == {("autoSync", 100)}
    assert running.sim.stats()["next_scheduled_run"] == start + 50

    clock.advance(49.9)
    assert (await list_runs(running))["total_num"] == 2
    clock.advance(0.1)
    newest = (await list_runs(running))["data_list"][0]
    assert newest["begin_time"] == int((start + 50) * 1000)
    assert (newest["task_status"], newest["end_time"], newest["task_type"]) == (0, 0, "autoSync")
    clock.advance(250)  # two and a half periods: two more
    assert (await list_runs(running))["total_num"] == 5


async def test_progress_advances_and_counts_agree_with_the_registries(
    make_hss_sim: MakeSim,
) -> None:
    clock = SimClock()
    running = await strict_sim(make_hss_sim, clock)
    clock.advance(50)  # the third scheduled run begins
    seen = []
    for _ in range(5):
        clock.advance(10)  # a quarter of the run each time
        row = (await list_runs(running))["data_list"][0]
        seen.append((row["task_status"], row["failed_num"] + row["success_num"]))
        await assert_counts_agree(running, row)
        # The registries are now built; their counts are listed from here on: still agreeing.
        await assert_counts_agree(running, (await list_runs(running))["data_list"][0])
    assert seen == [(25, 50), (50, 100), (75, 150), (100, 200), (100, 200)]
    assert row["end_time"] == row["begin_time"] + 40_000
    assert row["remain_min"] == 0
    assert 0 < row["failed_num"] < 10  # about 2% of 200


async def test_a_change_by_hand_shows_in_the_runs_counts(make_hss_sim: MakeSim) -> None:
    clock = SimClock()
    running = await strict_sim(make_hss_sim, clock)
    ended = (await list_runs(running))["data_list"][0]
    victim = next(
        r for r in running.sim.registries(ended["task_id"]) if r.sync_status == "finished"
    )
    running.sim.set_status(ended["task_id"], victim.registry_id, "failed", "disk full")
    after = next(
        r for r in (await list_runs(running))["data_list"] if r["task_id"] == ended["task_id"]
    )
    assert after["failed_num"] == ended["failed_num"] + 1
    assert after["success_num"] == ended["success_num"] - 1
    await assert_counts_agree(running, after)


# --- manual runs and early ends --------------------------------------------------------------


async def test_runs_start_and_end_by_the_control_endpoint(make_hss_sim: MakeSim) -> None:
    clock = SimClock()
    running = await strict_sim(make_hss_sim, clock)
    async with httpx.AsyncClient() as control:
        started = await control.post(f"{running.url}/_sim/run", json={"kind": "manual"})
        extra = await control.post(
            f"{running.url}/_sim/run", json={"kind": "auto", "duration": 1000}
        )
        bad_kind = await control.post(f"{running.url}/_sim/run", json={"kind": "weekly"})
        manual = started.json()["run"]
        clock.advance(20)  # half way
        stopped = await control.post(
            f"{running.url}/_sim/run", json={"task_id": manual["task_id"], "status": -1}
        )
        again = await control.post(
            f"{running.url}/_sim/run", json={"task_id": manual["task_id"], "status": -2}
        )
        unknown = await control.post(
            f"{running.url}/_sim/run", json={"task_id": "nope", "status": -1}
        )
        odd_status = await control.post(
            f"{running.url}/_sim/run",
            json={"task_id": extra.json()["run"]["task_id"], "status": 50},
        )
    assert started.status_code == extra.status_code == 200
    assert (manual["task_type"], manual["task_status"]) == ("manualSync", 0)
    assert extra.json()["run"]["task_type"] == "autoSync"
    assert [r.status_code for r in (bad_kind, again, unknown, odd_status)] == [400] * 4
    assert stopped.json()["run"]["task_status"] == -1

    listed = await list_runs(running, [("task_type", "manualSync"), ("limit", "10")])
    assert [r["task_id"] for r in listed["data_list"]] == [manual["task_id"]]
    row = listed["data_list"][0]
    assert row["end_time"] == int(clock.now * 1000)
    assert row["failed_reason"] == END_REASONS[-1]
    await assert_counts_agree(running, row)
    # Every registry it had not reached failed, saying why; nothing is left running.
    assert row["failed_num"] + row["success_num"] == row["total_num"] == 200
    assert row["success_num"] >= 90
    reasons = {r.failed_reason for r in running.sim.registries(manual["task_id"])[100:]}
    assert reasons == {END_REASONS[-1]}
    clock.advance(60)  # time moves on; an ended run does not
    assert (await list_runs(running, [("task_id", manual["task_id"])]))["data_list"] == [row]


# --- failures: carried over and new ----------------------------------------------------------


def test_half_the_failures_carry_over_and_half_are_new() -> None:
    book = RunBook(RunsConfig(seed=5, registries=500, every=100.0, history=6), start=0.0)
    autos = book.newest_first(0.0)[::-1]
    assert len(autos) == 6
    for previous, current in itertools.pairwise(autos):
        assert len(current.failing) == 10  # 2% of 500
        assert len(current.failing & previous.failing) == 5
    manual = book.start("manual", 1.0)
    assert len(manual.failing) == 10  # a kind's first run: all new
    second = book.start("manual", 2.0)
    assert len(second.failing & manual.failing) == 5  # carried within its own kind


def test_a_runs_failures_happen_when_it_reaches_them() -> None:
    # ``failures`` is the benchmarks' ground truth: each name fails at the moment given.
    config = RunsConfig(seed=3, registries=50, every=None, duration=100.0, failure_rate=0.1)
    run = RunBook(config, start=0.0).start("auto", 0.0)
    failures = run.failures()
    assert len(failures) == 5
    assert [at for _, at in failures] == sorted(at for _, at in failures)
    for name, at in failures:
        before = {r.registry_name: r.sync_status for r in run.registries(at - 1e-6).registries()}
        assert before[name] == "running"
        after = {r.registry_name: r.sync_status for r in run.registries(at).registries()}
        assert after[name] == "failed"
    assert run.failing_names() == [name for name, _ in failures]
    assert run.counts(100.0) == (5, 45, 50)


async def test_the_same_registries_fail_again_across_runs(make_hss_sim: MakeSim) -> None:
    # Runs sync one set of registries: a carried-over failure is the same registry id.
    clock = SimClock()
    running = await strict_sim(make_hss_sim, clock, run_registries=500, run_history=3)
    old, new = [r["task_id"] for r in (await list_runs(running))["data_list"][1::-1]]
    before, after = await failed_ids(running, old), await failed_ids(running, new)
    assert len(before) == len(after) == 10
    assert len(before & after) == 5
    assert {r.registry_id for r in running.sim.registries(old)} == {
        r.registry_id for r in running.sim.registries(new)
    }


def test_same_seed_same_runs() -> None:
    def ids(seed: int) -> list[tuple[str, frozenset[int]]]:
        book = RunBook(RunsConfig(seed=seed, every=60.0, history=4), start=1_000.0)
        return [(r.task_id, r.failing) for r in book.newest_first(1_000.0)]

    assert ids(3) == ids(3)
    assert ids(3) != ids(4)


# --- the list: filters, paging, the 1000 cap --------------------------------------------------


async def test_filters_paging_and_the_cap_of_1000(make_hss_sim: MakeSim) -> None:
    clock = SimClock()
    running = await strict_sim(make_hss_sim, clock, run_history=1005, run_registries=20)
    manual = running.sim.start_run("manual")
    first = await list_runs(running)
    assert first["total_num"] == 1000  # HSS lists at most 1000
    assert first["data_list"][0]["task_id"] == manual.task_id  # newest first
    begins = [r["begin_time"] for r in first["data_list"]]
    assert begins == sorted(begins, reverse=True)
    tail = await list_runs(running, [("offset", "990"), ("limit", "20")])
    assert len(tail["data_list"]) == 10
    assert (await list_runs(running, [("offset", "1000")]))["data_list"] == []

    autos = await list_runs(running, [("task_type", "autoSync"), ("limit", "10")])
    assert autos["total_num"] == 1000 and {r["task_type"] for r in autos["data_list"]} == {
        "autoSync"
    }
    name = manual.task_name.upper()[:20]  # a part of the name, any case
    named = await list_runs(running, [("task_name", name)])
    assert [r["task_id"] for r in named["data_list"]] == [manual.task_id]
    by_id = await list_runs(running, [("task_id", manual.task_id)])
    assert by_id["total_num"] == 1
    for params in ([("type", "image_scan")], [("task_type", "cycle")], [("task_name", "zzz")]):
        assert await list_runs(running, params) == {"total_num": 0, "data_list": []}


@pytest.mark.parametrize(
    "params",
    [
        [("type", "image_push")],
        [("task_type", "daily")],
        [("limit", "9")],
        [("limit", "201")],
        [("offset", "-1")],
        [("task_name", "x" * 257)],
        [("task_id", "")],
        [("enterprise_project_id", "e" * 257)],
        [("limit", "10"), ("limit", "20")],
    ],
)
async def test_invalid_run_parameters_are_hss_0001(hss_sim: RunningSim, params: Params) -> None:
    async with httpx.AsyncClient(auth=hss_sim.auth()) as client:
        response = await client.get(hss_sim.runs_url(params))
    assert response.status_code == 400
    assert response.json()["error_code"] == "HSS.0001"


async def test_each_api_has_its_own_rate_limit(make_hss_sim: MakeSim) -> None:
    running = await make_hss_sim(rate_limit=2, window=30)
    async with httpx.AsyncClient(auth=running.auth()) as client:
        registries = [(await client.get(running.registries_url("t"))).status_code for _ in "abc"]
        runs = [(await client.get(running.runs_url())).status_code for _ in "abc"]
    assert registries == runs == [200, 200, 429]
    stats = running.sim.stats()
    for api in ("registries", "tasks"):
        assert stats["apis"][api] == {
            "calls": {TEST_AK: 3},
            "throttled": 1,
            "max_in_window": {TEST_AK: 3},
        }
    assert stats["calls"] == {TEST_AK: 6} and stats["throttled"] == 2


def test_signature_and_project_are_checked_as_for_registries() -> None:
    sim = Simulator(SimConfig(project_id="p" * 32))
    unsigned = sim.handle(SimRequest("GET", f"/v5/{'p' * 32}/image/tasks", "", {}))
    assert unsigned.status == 401
    assert sim.stats()["apis"]["tasks"]["calls"] == {}


def test_hostile_run_names_only_on_request() -> None:
    def names(hostile: bool) -> set[str]:
        book = RunBook(RunsConfig(every=60.0, history=12, hostile=hostile), start=0.0)
        return {r.task_name for r in book.newest_first(0.0)}

    assert any(n.startswith(tuple(HOSTILE_NAMES)) for n in names(True))
    assert not any(n.startswith(tuple(HOSTILE_NAMES)) for n in names(False))


def test_runs_share_one_identity_not_the_run_id() -> None:
    book = RunBook(RunsConfig(registries=30, every=60.0, history=2), start=0.0)
    a, b = book.newest_first(0.0)
    assert [r.registry_name for r in a.registries(0.0).registries()] == [
        r.registry_name for r in b.registries(0.0).registries()
    ]
    assert IDENTITY not in {a.task_id, b.task_id}


# --- the CLI ---------------------------------------------------------------------------------


def test_cli_run_flags() -> None:
    args = _parser().parse_args(
        [
            *("--run-every", "30", "--run-duration", "5", "--run-history", "0"),
            *("--run-registries", "9", "--run-failure-rate", "0.25"),
        ]
    )
    config = config_from_args(args)
    assert (config.run_every, config.run_duration) == (30.0, 5.0)
    assert (config.run_history, config.run_registries) == (0, 9)
    assert config.run_failure_rate == 0.25
    defaults = config_from_args(_parser().parse_args([]))
    assert (defaults.run_every, defaults.run_duration) == (86400.0, 1800.0)
    assert (defaults.run_history, defaults.run_registries) == (3, 500)
    assert defaults.run_failure_rate == 0.02
    # The share reaches the runs the simulator lists.
    rated = _parser().parse_args(
        ["--run-history", "1", "--run-registries", "40", "--run-failure-rate", "0.25"]
    )
    (only,) = Simulator(config_from_args(rated)).listed_runs()
    assert (only["failed_num"], only["total_num"]) == (10, 40)


@pytest.mark.parametrize(
    "argv",
    [
        ["--run-every", "0"],
        ["--run-duration", "-1"],
        ["--run-history", "x"],
        ["--run-failure-rate", "1.5"],
        ["--run-failure-rate", "-0.1"],
        ["--run-failure-rate", "nan"],
    ],
)
def test_cli_refuses_bad_run_flags(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(argv) == 2
    assert "hss-sync-bot simulate" in capsys.readouterr().err
