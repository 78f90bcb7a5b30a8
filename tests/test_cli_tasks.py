"""``hss-sync-bot tasks`` and ``query <reference>`` as people run them: the console script in a
subprocess, against the simulator's sync runs over HTTP and the test Redis."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.plugins.hss_sim import MakeSim, RunningSim
from tests.support import Cli, base_env

JSON_FIELDS = [
    "task_id",
    "task_name",
    "task_type",
    "begin_time",
    "end_time",
    "task_status",
    "failed_num",
    "success_num",
    "total_num",
]


@pytest.fixture
async def sim(make_hss_sim: MakeSim) -> RunningSim:
    return await make_hss_sim(
        run_history=6, run_registries=20, run_failure_rate=0.3, run_every=3600, run_duration=600
    )


@pytest.fixture
def cli(sim: RunningSim, redis: aioredis.Redis, redis_url: str, tmp_path: Path) -> Cli:
    del redis  # flushes the shared test Redis before and after the test
    return Cli(sim=sim, env={**base_env(sim, tmp_path), "REDIS_URL": redis_url}, cwd=tmp_path)


def listed(sim: RunningSim) -> list[dict[str, Any]]:
    return [{k: info[k] for k in JSON_FIELDS} for info in sim.sim.listed_runs()]


def tasks_calls(sim: RunningSim) -> int:
    return sum(sim.sim.apis["tasks"].calls.values())


async def test_json_has_the_api_field_names_newest_first(cli: Cli, sim: RunningSim) -> None:
    run = await cli("tasks", "--json")
    rows = run.json()
    assert rows == listed(sim)
    assert all(list(row) == JSON_FIELDS for row in rows)
    assert run.code == (3 if any(r["failed_num"] for r in rows) else 0)
    assert "runs," in run.stderr and "data from" in run.stderr
    assert tasks_calls(sim) == 1
    again = await cli("tasks", "--json", "--failed")  # the fresh list: no second call
    assert again.json() == [r for r in rows if r["failed_num"]] and tasks_calls(sim) == 1


async def test_filters_and_exit_status(cli: Cli, sim: RunningSim) -> None:
    manual = sim.sim.start_run("manual", duration=3600)
    rows = listed(sim)
    run = await cli("tasks", "--type", "manual", "--json")
    assert [r["task_id"] for r in run.json()] == [manual.task_id]
    assert run.code == (3 if run.json()[0]["failed_num"] else 0)
    run = await cli(
        "tasks", "--type", "AUTO", "--name", rows[-1]["task_name"][2:].upper(), "--json"
    )
    assert [r["task_id"] for r in run.json()] == [rows[-1]["task_id"]]
    run = await cli("tasks", "--name", "no-such-run", "--json")
    assert run.json() == [] and run.code == 0


async def test_table_lists_each_run_on_one_inert_line(
    make_hss_sim: MakeSim, tmp_path: Path, redis: aioredis.Redis, redis_url: str
) -> None:
    sim = await make_hss_sim(run_history=6, run_registries=10, hostile=True)
    cli = Cli(sim=sim, env={**base_env(sim, tmp_path), "REDIS_URL": redis_url}, cwd=tmp_path)
    run = await cli("tasks")
    lines = run.stdout.splitlines()
    assert lines[0].split()[:3] == ["TASK", "ID", "NAME"]
    assert len(lines) == 1 + len(listed(sim))
    assert "\x1b" not in run.stdout and "\r" not in run.stdout
    for info, line in zip(listed(sim), lines[1:], strict=True):
        assert line.startswith(info["task_id"])


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["tasks", "--type", "scan"], 'Unknown run kind "scan"'),
        (["tasks", "--name", ""], "name= needs part of a run name"),
        (["tasks", "--name", "x" * 257], "at most 256"),
        (["tasks", "--name", "a\u200bb"], "U+200B"),
        (["tasks", "extra"], "unrecognized arguments"),
        (["query", "latest", "broken"], 'Unknown status "broken"'),
    ],
)
async def test_bad_usage_exits_2_without_a_call(cli: Cli, argv: list[str], says: str) -> None:
    run = await cli(*argv)
    assert run.code == 2 and says in run.stderr
    assert len(run.errors) == 1 and cli.calls == 0


async def test_a_refused_list_exits_1_in_one_sentence(cli: Cli, sim: RunningSim) -> None:
    sim.sim.queue(403)
    run = await cli("tasks")
    assert run.code == 1 and run.stdout == ""
    [line] = run.errors
    assert "The list of sync runs is unavailable" in line
    assert line.endswith("plain task ids keep working.")
    # A task id still works, the reference says the same sentence without a call.
    task = listed(sim)[0]["task_id"]
    assert (await cli("query", task, "--json")).code in (0, 3)
    by_status = dict(sim.sim.by_status)
    run = await cli("query", "latest")
    assert run.code == 1 and "unavailable" in run.stderr and sim.sim.by_status == by_status


async def test_query_takes_a_reference_and_names_the_run(cli: Cli, sim: RunningSim) -> None:
    newest = listed(sim)[0]
    run = await cli("query", "latest", "failed", "--json")
    assert f"latest is {newest['task_name']!r} (task id {newest['task_id']}" in run.stderr
    failed = [r for r in sim.sim.registries(newest["task_id"]) if r.sync_status == "failed"]
    assert sorted(r["registry_id"] for r in run.json()) == sorted(r.registry_id for r in failed)
    assert run.code == (3 if failed else 0)
    none = await cli("query", "latest-manual")
    assert none.code == 2 and "HSS lists no manualSync sync runs" in none.stderr


async def test_tasks_help_states_exit_codes_and_variables(cli: Cli) -> None:
    run = await cli("tasks", "--help")
    assert run.code == 0 and cli.calls == 0
    lines = [line.strip() for line in run.stdout.splitlines()]
    for code in ("0", "3", "2", "1"):
        assert any(line.startswith(f"{code}  ") for line in lines), code
    for text in (
        "--type",
        "--name",
        "--failed",
        "--json",
        "CLOUD_SDK_AK",
        "HSS_PROJECT_ID",
        "HSS_TASKS_RATE_LIMIT",
        "REDIS_URL",
    ):
        assert text in run.stdout
