"""``hss-sync-bot`` as people run it: the real console script in a subprocess.

Each run gets a controlled environment (nothing inherited but ``PATH``) pointing at a
simulator served by the test's event loop, so subprocesses are awaited with
``asyncio.create_subprocess_exec``: a blocking ``subprocess.run`` would stall the simulator.
Unless a test says otherwise the runs share the session's test Redis (flushed per test) through
``REDIS_URL``. Every run is checked for tracebacks and for leaked secrets.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import unicodedata
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from bot.cli import build_parser
from bot.config import Settings
from bot.errors import TooManyQuestions
from bot.hss.budget import MAX_QUEUED_PER_ASKER, RedisCallBudget, Ticket, asker
from bot.models import REGISTRY_TYPES, Registry, SyncStatus
from bot.sandbox import demo, sim_server
from bot.sandbox.simdata import Query
from bot.sandbox.simulator import DEMO_AK, DEMO_PROJECT_ID, DEMO_SK, SimConfig, Simulator
from bot.storage.embedded import EmbeddedRedis, probe, socket_path_for
from tests.plugins.hss_sim import TEST_AK, TEST_SK, MakeSim, RunningSim
from tests.support import (
    RUN_TIMEOUT,
    Cli,
    Run,
    base_env,
    check_run,
    free_port,
    redis_server_pids,
    run_cli,
    until,
)

API_FIELDS = ["registry_id", "registry_name", "registry_type", "sync_status", "failed_reason"]
WRONG_SK = "SKwrong-but-still-secret-0000000000000000"
TOKEN = "TEMPtoken-cli-test-security-token-0123456789"
TASK = "task-cli"
TASK_SIZE = 40
BIG_TASK = "task-big"
BIG_SIZE = 450  # three pages of 200


@pytest.fixture
async def sim(make_hss_sim: MakeSim) -> RunningSim:
    return await make_hss_sim(default_size=TASK_SIZE, task_sizes={BIG_TASK: BIG_SIZE})


@pytest.fixture
def cli(sim: RunningSim, redis: aioredis.Redis, redis_url: str, tmp_path: Path) -> Cli:
    del redis  # flushes the shared test Redis before and after the test
    return Cli(sim=sim, env={**base_env(sim, tmp_path), "REDIS_URL": redis_url}, cwd=tmp_path)


@pytest.fixture
def embedded_cli(sim: RunningSim, tmp_path: Path) -> Iterator[Cli]:
    """No REDIS_URL: the CLI runs an embedded Redis in HSS_DATA_DIR; none may outlive a test."""
    cli = Cli(sim=sim, env=base_env(sim, tmp_path), cwd=tmp_path)
    data_dir = Path(cli.env["HSS_DATA_DIR"])
    yield cli
    leftovers = redis_server_pids(data_dir)
    for pid in leftovers:  # only servers on this test's own data dir
        os.kill(pid, 9)
    assert not leftovers, "a redis-server outlived the CLI run"


def api_filter(
    status: str | None = None, types: Sequence[str] = (), name: str | None = None
) -> Query:
    """An unpaged query of the simulator (``types`` spelled as the API spells them)."""
    assert set(types) <= set(REGISTRY_TYPES)
    return Query(
        limit=1_000_000, sync_status=status, registry_types=frozenset(types), registry_name=name
    )


def expected(sim: Simulator, task_id: str, query: Query | None = None) -> list[Registry]:
    """What HSS holds for the filter, by the simulator's own filtering."""
    return sim.task(task_id).query(query or api_filter())[1]


def by_id(rows: Sequence[Mapping[str, str]]) -> list[Mapping[str, str]]:
    return sorted(rows, key=lambda r: r["registry_id"])


def exit_for(rows: Sequence[Registry]) -> int:
    return 3 if any(r.sync_status == SyncStatus.FAILED for r in rows) else 0


# --- output ----------------------------------------------------------------------------------


async def test_table_lists_every_registry_over_several_pages(cli: Cli) -> None:
    rows = expected(cli.sim.sim, BIG_TASK)
    failed = sum(r.sync_status == "failed" for r in rows)
    assert len(rows) == BIG_SIZE and failed > 0

    run = await cli("query", BIG_TASK)

    assert run.code == 3
    header, *lines = run.stdout.splitlines()
    assert header.split()[:3] == ["STATUS", "NAME", "TYPE"]
    assert len(lines) == BIG_SIZE
    by_registry = {line.split()[3]: line.split() for line in lines}
    assert len(by_registry) == BIG_SIZE
    for row in rows:
        status, name, type_ = by_registry[row.registry_id][:3]
        assert (status, name, type_) == (row.sync_status, row.registry_name, row.registry_type)
    assert run.errors[-1].startswith(f"{BIG_SIZE} registries, {failed} failed; data from ")


def cells(text: str) -> int:
    """Terminal cells: East Asian wide characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


async def test_table_stays_aligned_and_inert_with_hostile_text(
    cli: Cli, make_hss_sim: MakeSim
) -> None:
    sim = await make_hss_sim(default_size=120, hostile=True)
    victim = sim.sim.registries(TASK)[0].registry_id
    reason = "\x1b[2J\x1b[31mred alert\x1b[0m\nsecond line\tand\rmore"
    sim.sim.set_status(TASK, victim, "failed", reason)
    rows = sim.sim.registries(TASK)
    assert any(cells(r.registry_name) > len(r.registry_name) for r in rows)  # wide names

    table = await cli("query", TASK, HSS_ENDPOINT=sim.url)
    as_json = await cli("query", TASK, "--json", HSS_ENDPOINT=sim.url)

    assert "\x1b" not in table.stdout and "\r" not in table.stdout and "\t" not in table.stdout
    header, *lines = table.stdout.splitlines()
    assert len(lines) == len(rows)
    id_column = header.index("REGISTRY ID")
    for line in lines:
        match = re.search(r"\b[0-9a-f]{32}\b", line)
        assert match, line
        assert cells(line[: match.start()]) == id_column, line
    (shown,) = [line for line in lines if victim in line]
    assert shown.endswith("[2J [31mred alert [0m second line and more")  # one inert line
    assert by_id(as_json.json()) == by_id([r.as_api_dict() for r in rows])  # exact text


FILTERS: list[tuple[list[str], Query]] = [
    ([], api_filter()),
    (["failed"], api_filter("failed")),
    (["FINISHED"], api_filter("finished")),
    (["running"], api_filter("running")),
    (["--type", "Harbor,jfrog"], api_filter(types=["Harbor", "Jfrog"])),
    (["--name", "PROD"], api_filter(name="prod")),
    (
        ["failed", "--type", "SwrPrivate,SwrEnterprise,Other"],
        api_filter("failed", ["SwrPrivate", "SwrEnterprise", "Other"]),
    ),
    (
        ["finished", "--name", "swr", "--type", "SwrShared"],
        api_filter("finished", ["SwrShared"], "swr"),
    ),
    (["--name", "no-such-registry"], api_filter(name="no-such-registry")),
]


@pytest.mark.parametrize(("argv", "flt"), FILTERS)
@pytest.mark.parametrize("task_id", [TASK, BIG_TASK])
async def test_json_matches_the_simulator(
    cli: Cli, task_id: str, argv: list[str], flt: Query
) -> None:
    rows = expected(cli.sim.sim, task_id, flt)

    run = await cli("query", task_id, *argv, "--json")

    printed = run.json()
    assert all(list(r) == API_FIELDS for r in printed)
    assert by_id(printed) == by_id([r.as_api_dict() for r in rows])
    assert run.code == exit_for(rows)


async def test_exit_status_says_whether_printed_rows_failed(cli: Cli) -> None:
    rows = expected(cli.sim.sim, TASK)
    assert any(r.sync_status == "failed" for r in rows)
    assert any(r.sync_status == "running" for r in rows)

    assert (await cli("query", TASK)).code == 3
    assert (await cli("query", TASK, "failed")).code == 3
    assert (await cli("query", TASK, "finished")).code == 0
    assert (await cli("query", TASK, "running", "--json")).code == 0
    assert (await cli("query", TASK, "--name", "no-such-registry")).code == 0


async def test_output_into_a_closed_pipe_is_no_crash(cli: Cli) -> None:
    # `hss-sync-bot query ... | head -1`: the reader goes away before the output is written.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        run = await run_cli(
            ("query", BIG_TASK, "--json"), env=cli.env, cwd=cli.cwd, stdout=write_end
        )
    finally:
        os.close(write_end)
    assert run.code == 3
    assert run.errors[-1].startswith(f"{BIG_SIZE} registries")


# --- bad usage and configuration ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["query", TASK, "bogus"], ['Unknown status "bogus"', "finished, running, failed"]),
        (["query", TASK, "failed", "running"], ["unrecognized arguments: running"]),
        (["query", TASK, "--type", "Quay"], ['Unknown registry type "Quay"', "Harbor"]),
        (["query", TASK, "--type", ","], ["Harbor, Jfrog"]),
        (["query", "t" * 65], ["too long", "at most 64"]),
        (["query", ""], ["task id is empty"]),
        (["query", "bad\x01id"], ["control characters"]),
        (["query", TASK, "--name", ""], ["registry name"]),
        (["query", TASK, "--name", "n" * 129], ["at most 128"]),
        (["query", TASK, "--ep", " "], ["enterprise project id"]),
        (["query", TASK, "--bogus"], ["unrecognized arguments: --bogus"]),
        (["query"], ["required: task_id"]),
        (["query", "--json"], ["required: task_id"]),
        (["frobnicate"], ["invalid choice: 'frobnicate'"]),
        ([], ["required: command"]),
    ],
)
async def test_bad_usage_exits_2_with_one_line_and_no_call(
    cli: Cli, argv: list[str], says: list[str]
) -> None:
    run = await cli(*argv)

    assert run.code == 2
    assert len(run.errors) == 1, run.stderr
    for text in says:
        assert text in run.errors[0]
    assert run.stdout == ""
    assert cli.calls == 0


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"CLOUD_SDK_AK": None}, "CLOUD_SDK_AK"),
        ({"CLOUD_SDK_SK": None}, "CLOUD_SDK_SK"),
        ({"HSS_PROJECT_ID": None}, "HSS_PROJECT_ID"),
        ({"HSS_ENDPOINT": None}, "HSS_REGION"),
        ({"HSS_ENDPOINT": None, "HSS_REGION": "mars-1"}, "HSS_REGION"),
        ({"HSS_ENDPOINT": "http://127.0.0.1:abc"}, "HSS_ENDPOINT"),
        ({"HSS_ENDPOINT": "127.0.0.1:8931"}, "HSS_ENDPOINT"),
        ({"HSS_RATE_LIMIT": "abc"}, "HSS_RATE_LIMIT"),
        ({"HSS_RATE_LIMIT": "0/60s"}, "HSS_RATE_LIMIT"),
        ({"HSS_FRESH_SECONDS": "-5"}, "HSS_FRESH_SECONDS"),
        ({"PORT": "x"}, "PORT"),
        ({"REDIS_URL": "localhost:6379"}, "REDIS_URL"),
        ({"SLACK_APP_TOKEN": "xoxb-wrong-kind-of-token"}, "SLACK_APP_TOKEN"),
        ({"HSS_PROJECT_ID": "p" * 257}, "HSS_PROJECT_ID"),
    ],
)
@pytest.mark.parametrize("command", ["query", "reset-auth"])
async def test_bad_configuration_exits_2_naming_the_variable(
    cli: Cli, command: str, overrides: dict[str, str | None], variable: str
) -> None:
    args = ("query", TASK) if command == "query" else ("reset-auth",)

    run = await cli(*args, **overrides)

    assert run.code == 2
    assert run.errors == [run.errors[0]]
    assert run.errors[0].startswith(f"hss-sync-bot: {variable}: ")
    assert cli.calls == 0


async def test_run_reports_every_configuration_problem_at_once(cli: Cli) -> None:
    run = await cli(
        "run", PORT="x", HSS_RATE_LIMIT="abc", CLOUD_SDK_SK=None, SLACK_SIGNING_SECRET=None
    )

    assert run.code == 2
    assert [line.split(":")[1].strip() for line in run.errors] == [
        "HSS_RATE_LIMIT",
        "PORT",
        "CLOUD_SDK_SK",
        "SLACK_BOT_TOKEN",
        "SLACK_SIGNING_SECRET",
    ]
    assert cli.calls == 0


async def test_unusable_data_dir_exits_2_naming_it(embedded_cli: Cli, tmp_path: Path) -> None:
    not_a_dir = tmp_path / "a-file"
    not_a_dir.write_text("")

    run = await embedded_cli("query", TASK, HSS_DATA_DIR=str(not_a_dir / "data"))

    assert run.code == 2
    assert len(run.errors) == 1
    assert run.errors[0].startswith("hss-sync-bot: HSS_DATA_DIR: ")
    assert embedded_cli.calls == 0


async def test_usage_is_checked_before_configuration(cli: Cli) -> None:
    run = await cli("query", TASK, "bogus", CLOUD_SDK_AK=None, HSS_RATE_LIMIT="abc")
    assert run.code == 2
    assert "Unknown status" in run.stderr


# --- API and network errors --------------------------------------------------------------------


async def test_wrong_sk_stops_calls_until_the_sk_is_fixed(cli: Cli) -> None:
    run = await cli("query", TASK, CLOUD_SDK_SK=WRONG_SK)
    assert run.code == 1
    assert len(run.errors) == 1
    assert "APIGW.0301" in run.stderr
    assert re.search(r"Request id: [0-9a-f]{32}\.", run.stderr)
    assert cli.sim.sim.auth_failures[TEST_AK] == 1

    # Repeated 401s would lock the AK/SK at HSS: later runs with it refuse without calling.
    again = await cli("query", TASK, CLOUD_SDK_SK=WRONG_SK)
    assert again.code == 1 and "APIGW.0301" in again.stderr
    assert cli.calls == 1

    fixed = await cli("query", TASK, "--json")
    assert fixed.code == exit_for(expected(cli.sim.sim, TASK))
    assert len(fixed.json()) == TASK_SIZE
    assert cli.calls == 2


async def test_reset_auth_allows_calls_again_after_a_401(cli: Cli) -> None:
    # The SK was rotated at IAM and our copy is stale, until IAM is put right.
    cli.sim.sim.config = replace(cli.sim.sim.config, sk=WRONG_SK)
    assert (await cli("query", TASK)).code == 1
    cli.sim.sim.config = replace(cli.sim.sim.config, sk=TEST_SK)

    locked = await cli("query", TASK)
    assert locked.code == 1 and "APIGW.0301" in locked.stderr
    assert cli.calls == 1

    reset = await cli("reset-auth")
    assert (reset.code, reset.stdout) == (0, "HSS calls allowed again.\n")

    allowed = await cli("query", TASK, "--json")
    assert allowed.code == exit_for(expected(cli.sim.sim, TASK))
    assert len(allowed.json()) == TASK_SIZE
    assert cli.calls == 2

    idle = await cli("reset-auth")
    assert (idle.code, idle.stdout) == (0, "No authentication lock was set.\n")


async def test_unknown_task_exits_1(cli: Cli) -> None:
    run = await cli("query", "missing-task", "failed")
    assert run.code == 1
    assert len(run.errors) == 1
    assert "HSS.0011" in run.stderr and "Request id:" in run.stderr
    assert run.stdout == ""


async def test_unreachable_hss_exits_1(cli: Cli) -> None:
    run = await cli("query", TASK, HSS_ENDPOINT=f"http://127.0.0.1:{free_port()}")
    assert run.code == 1
    assert len(run.errors) == 1
    assert "could not reach HSS" in run.stderr
    assert run.stdout == ""


async def test_reset_auth_without_redis_fails_instead_of_pretending(cli: Cli) -> None:
    # The lock lives in Redis; "clearing" an in-process copy would tell the operator nothing.
    run = await cli("reset-auth", REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    assert run.code == 1
    assert run.errors[-1].startswith("hss-sync-bot: Cannot reach Redis")
    assert run.stdout == ""


# --- the mirror and the budget -----------------------------------------------------------------


async def test_fresh_mirror_answers_without_a_call(cli: Cli) -> None:
    first = await cli("query", TASK, "--json")
    assert cli.calls == 1

    again = await cli("query", TASK, "--json")
    narrower = await cli("query", TASK, "failed", "--type", "Harbor,Jfrog,SwrPrivate", "--json")
    assert cli.calls == 1
    assert by_id(again.json()) == by_id(first.json())
    wanted = expected(cli.sim.sim, TASK, api_filter("failed", ["Harbor", "Jfrog", "SwrPrivate"]))
    assert by_id(narrower.json()) == by_id([r.as_api_dict() for r in wanted])

    await cli("query", TASK, HSS_FRESH_SECONDS="0")
    assert cli.calls == 2  # nothing is fresh enough now: one new call, not one per round


async def test_embedded_redis_is_started_stopped_and_its_mirror_persists(
    embedded_cli: Cli,
) -> None:
    data_dir = Path(embedded_cli.env["HSS_DATA_DIR"])

    first = await embedded_cli("query", TASK, "--json")
    started = [line for line in first.errors if "embedded Redis" in line]
    assert len(started) == 1
    assert "Started an embedded Redis" in started[0] and str(data_dir) in started[0]
    assert probe(socket_path_for(data_dir)) is None
    assert redis_server_pids(data_dir) == []
    assert embedded_cli.calls == 1

    second = await embedded_cli("query", TASK, "--json")
    assert len([line for line in second.errors if "embedded Redis" in line]) == 1
    assert embedded_cli.calls == 1  # answered from the mirror persisted in HSS_DATA_DIR
    assert by_id(second.json()) == by_id(first.json())


@pytest.mark.parametrize(
    ("log_level", "lines"), [("WARNING", 0), ("ERROR", 0), ("INFO", 1)], ids=str
)
async def test_log_level_decides_whether_the_embedded_redis_line_is_printed(
    embedded_cli: Cli, log_level: str, lines: int
) -> None:
    # The line is INFO: LOG_LEVEL=WARNING must keep it out, as it keeps out every INFO line.
    for _ in range(2):  # the first run starts the server, the second finds it running
        run = await embedded_cli("query", TASK, "--json", LOG_LEVEL=log_level)
        assert run.code in (0, 3)
        assert len([line for line in run.errors if "embedded Redis" in line]) == lines
    assert run.json() and embedded_cli.calls == 1


async def test_embedded_redis_of_another_process_is_used_and_left_running(
    embedded_cli: Cli,
) -> None:
    server = EmbeddedRedis(data_dir=Path(embedded_cli.env["HSS_DATA_DIR"]), persistent=True)
    await asyncio.to_thread(server.start)
    try:
        run = await embedded_cli("query", TASK)
        using = [line for line in run.errors if "embedded Redis" in line]
        assert len(using) == 1 and "already running" in using[0]
        assert server.running and server.is_serving()
    finally:
        await asyncio.to_thread(server.stop)


async def strict(cli: Cli, make_hss_sim: MakeSim, seconds: int) -> Cli:
    """HSS at one call per ``seconds``, and the CLI told so: a second call must wait."""
    sim = await make_hss_sim(default_size=TASK_SIZE, rate_limit=1, window=float(seconds))
    env = {**cli.env, "HSS_ENDPOINT": sim.url, "HSS_RATE_LIMIT": f"1/{seconds}s"}
    return replace(cli, sim=sim, env=env, runs=[])


@pytest.fixture
async def strict_cli(cli: Cli, make_hss_sim: MakeSim) -> Cli:
    return await strict(cli, make_hss_sim, 3)


async def test_budget_is_shared_by_runs_back_to_back(cli: Cli, make_hss_sim: MakeSim) -> None:
    # A minute's window, as in production: however slowly a loaded machine exits the first
    # run and starts the second, the second must say it waits (it did not with 3 s), and it
    # is stopped once it has said so rather than waited for.
    strict_cli = await strict(cli, make_hss_sim, 60)
    first = await strict_cli("query", "task-a")
    assert first.code in (0, 3) and strict_cli.calls == 1

    second = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "bot.cli", "query", "task-b"),
        env=strict_cli.env,
        cwd=strict_cli.cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    said: list[str] = []
    try:
        assert second.stderr is not None
        async with asyncio.timeout(RUN_TIMEOUT):
            while not said or not said[-1].startswith("Waiting about"):
                line = await second.stderr.readline()
                if not line:
                    break  # it ended without waiting
                said.append(line.decode())
    except TimeoutError:
        # A second run that spent its own budget was throttled by HSS and waits silently.
        pytest.fail(f"the second run neither said it waits nor ended: {said}")
    finally:
        second.kill()
        await second.wait()
    check_run(Run(("query", "task-b"), -9, "", "".join(said)), strict_cli.env)

    assert said and said[-1].startswith("Waiting about") and "1/60s" in said[-1], said
    assert 1 < int(said[-1].split()[2]) <= 60
    assert strict_cli.sim.sim.by_status == {200: 1}  # the second run never called
    assert strict_cli.sim.sim.throttled == 0


async def test_budget_is_shared_by_parallel_runs(strict_cli: Cli) -> None:
    runs = await asyncio.gather(*(strict_cli("query", f"task-{n}") for n in range(2)))

    assert {run.code for run in runs} <= {0, 3}
    assert strict_cli.sim.sim.by_status == {200: 2}
    assert strict_cli.sim.sim.throttled == 0


# --- secrets ---------------------------------------------------------------------------------


async def test_temporary_credentials_never_show_even_in_debug_logs(
    cli: Cli, make_hss_sim: MakeSim
) -> None:
    sim = await make_hss_sim(default_size=TASK_SIZE, security_token=TOKEN)
    env = {"HSS_ENDPOINT": sim.url, "CLOUD_SDK_SECURITY_TOKEN": TOKEN, "LOG_LEVEL": "DEBUG"}

    run = await cli("query", TASK, **env)  # check_run looks for SK and token in the output

    assert run.code == exit_for(expected(sim.sim, TASK))
    assert sim.sim.by_status == {200: 1}
    assert "DEBUG" in run.stderr  # the logs were on and still showed nothing secret


# --- help and the other subcommands ------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--help"], ["query", "simulate", "reset-auth"]),
        (["query", "--help"], ["task_id", "--type", "--name", "--ep", "--json"]),
        (["simulate", "--help"], ["--port", "--rate-limit"]),
        (["demo", "--help"], ["hss-sync-bot demo", "--json", "--interactive"]),
    ],
)
async def test_help_exits_0(cli: Cli, argv: list[str], says: list[str]) -> None:
    run = await cli(*argv)
    assert run.code == 0
    for text in says:
        assert text in run.stdout


#: Markup of docstrings (reST literals and roles) that would show as is in a terminal.
_MARKUP = re.compile(r"``|:(?:class|func|mod|meth|data|attr):`")


@pytest.mark.parametrize(
    "argv",
    [[], ["run"], ["query"], ["tasks"], ["simulate"], ["demo"], ["reset-auth"]],
    ids=["top", "run", "query", "tasks", "simulate", "demo", "reset-auth"],
)
async def test_every_help_is_plain_text(cli: Cli, argv: list[str]) -> None:
    run = await cli(*argv, "--help")
    assert run.code == 0
    assert run.stdout.startswith("usage: hss-sync-bot")
    assert not _MARKUP.search(run.stdout), run.stdout


async def test_query_help_states_its_exit_codes_and_variables(cli: Cli) -> None:
    run = await cli("query", "--help")
    assert run.code == 0
    lines = [line.strip() for line in run.stdout.splitlines()]
    for code, meaning in [
        ("0", "no printed"),
        ("3", "some printed"),
        ("2", "bad usage"),
        ("1", ""),
    ]:
        assert any(line.startswith(f"{code}  {meaning}") for line in lines), code
    for variable in (
        "CLOUD_SDK_AK",
        "CLOUD_SDK_SK",
        "HSS_PROJECT_ID",
        "HSS_REGION or HSS_ENDPOINT",
        "REDIS_URL",
        "HSS_ENTERPRISE_PROJECT_ID",
    ):
        assert variable in run.stdout


def _parsers() -> dict[str, argparse.ArgumentParser]:
    """Every parser a --help comes from: the top one, each sub-command's, simulate's, demo's."""
    top = build_parser()
    [commands] = [a for a in top._actions if isinstance(a, argparse._SubParsersAction)]
    found: dict[str, argparse.ArgumentParser] = {"hss-sync-bot": top, **commands.choices}
    found["simulate"] = sim_server._parser()  # they parse their own flags
    found["demo"] = demo._parser()
    return found


@pytest.mark.parametrize("name", list(_parsers()))
def test_every_option_has_a_description_and_says_its_default(name: str) -> None:
    parser = _parsers()[name]
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
            continue
        assert action.help, (name, action.dest)
        if action.option_strings:
            assert "default" in action.help, (name, action.option_strings, action.help)


@pytest.mark.parametrize("command", ["simulate", "demo"])
@pytest.mark.parametrize(
    "argv",
    [[], ["--help"], ["-h", "--port", "0"], ["--port=0", "--", "-x"], ["--seed", "-1", "x"]],
)
def test_simulate_and_demo_get_their_arguments_as_given(command: str, argv: list[str]) -> None:
    args = build_parser().parse_args([command, *argv])
    assert (args.command, args.argv) == (command, argv)


def test_an_unknown_flag_before_the_sub_command_is_refused_not_passed_on(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["--bogus", "simulate"])
    assert info.value.code == 2
    assert capsys.readouterr().err == (
        "hss-sync-bot: unrecognized arguments: --bogus (see --help)\n"
    )


async def test_simulate_refuses_unknown_flags(cli: Cli) -> None:
    run = await cli("simulate", "--bogus")
    assert run.code == 2
    assert "unrecognized arguments: --bogus" in run.stderr


@pytest.fixture
async def simulate_process(tmp_path: Path) -> AsyncIterator[str]:
    """``hss-sync-bot simulate --port 0`` as its own process; yields its URL."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.cli",
        "simulate",
        "--port",
        "0",
        "--registries",
        "15",
        env={"PATH": os.environ.get("PATH", "")},
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(RUN_TIMEOUT):
            banner = (await proc.stdout.readline()).decode()
        match = re.search(r"on (http://\S+)", banner)
        assert match, banner
        yield match[1]
    finally:
        proc.terminate()
        await proc.communicate()


async def test_query_against_the_simulate_subcommand(
    simulate_process: str, redis: aioredis.Redis, redis_url: str, tmp_path: Path
) -> None:
    del redis
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HSS_ENDPOINT": simulate_process,
        "CLOUD_SDK_AK": DEMO_AK,
        "CLOUD_SDK_SK": DEMO_SK,
        "HSS_PROJECT_ID": DEMO_PROJECT_ID,
        "REDIS_URL": redis_url,
    }
    run = await run_cli(("query", "demo-task", "--json"), env=env, cwd=tmp_path)

    same_seed = Simulator(SimConfig(default_size=15))
    rows = same_seed.registries("demo-task")
    assert by_id(run.json()) == by_id([r.as_api_dict() for r in rows])
    assert run.code == exit_for(rows)


async def test_query_logs_one_lookup_line_per_run(cli: Cli) -> None:
    first = await cli("query", TASK, "failed", LOG_LEVEL="INFO")
    again = await cli("query", TASK, "failed", LOG_LEVEL="INFO")

    def lookups(run: Run) -> list[dict[str, object]]:
        lines = [json.loads(line) for line in run.errors if line.startswith("{")]
        return [line for line in lines if line.get("event") == "lookup"]

    assert first.code == again.code == 3
    [refreshed] = lookups(first)
    [fresh] = lookups(again)
    assert (refreshed["task"], refreshed["status_filter"]) == (TASK, "failed")
    assert (refreshed["outcome"], fresh["outcome"]) == ("refreshed", "fresh")


async def test_query_takes_turns_as_the_cli_and_is_refused_over_the_cap(
    cli: Cli, redis: aioredis.Redis
) -> None:
    # Other CLI runs (a shell loop, say) already hold three places in the budget's queue.
    env = {**cli.env, "HSS_RATE_LIMIT": "1/60s"}
    settings = Settings.from_env(env)
    budget = RedisCallBudget(redis, scope=settings.budget_scope, limit=settings.rate_limit.padded())
    await budget.acquire(timeout=0)  # the minute's one call
    asker.set("cli")
    places = [Ticket() for _ in range(MAX_QUEUED_PER_ASKER)]
    waiting = [asyncio.create_task(budget.acquire(ticket=t)) for t in places]
    await until(lambda: all(t.arrivals for t in places), what="three CLI runs waiting")

    run = await cli("query", TASK, HSS_RATE_LIMIT="1/60s")

    assert run.code == 1
    refusal = TooManyQuestions("cli", MAX_QUEUED_PER_ASKER).user_message()
    assert run.errors[-1] == f"hss-sync-bot query: {refusal}"
    assert run.stdout == ""
    assert cli.calls == 0
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
