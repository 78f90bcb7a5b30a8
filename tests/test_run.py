"""``hss-sync-bot run`` as a real process: HTTP mode, health, a signed command, SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest
from slack_sdk.signature import SignatureVerifier

from bot.sandbox.slack_requests import SlackUser
from bot.sandbox.slack_standin import SlackStandIn
from tests.plugins.hss_sim import TEST_SK, MakeSim
from tests.support import (
    bot_env,
    free_port,
    hss_env,
    redis_server_pids,
    run_bot,
    until,
    wait_healthy,
)

SECRET = "run-test-signing-secret"


async def test_run_serves_http_answers_a_command_and_stops_on_sigterm(
    make_hss_sim: MakeSim, standin: SlackStandIn, redis_url: str, redis: object
) -> None:
    sim = await make_hss_sim(task_sizes={"t": 40})
    port = free_port()
    proc = await run_bot(
        hss_env(
            sim.url,
            SLACK_BOT_TOKEN="xoxb-run-test",
            SLACK_SIGNING_SECRET=SECRET,
            SLACK_API_URL=f"{standin.url}/api/",
            REDIS_URL=redis_url,
            PORT=str(port),
        )
    )
    try:
        health = await wait_healthy(f"http://127.0.0.1:{port}/healthz", proc)
        assert health.json() == {"ok": True, "redis": "up"}
        async with httpx.AsyncClient(timeout=10.0) as http:
            user = SlackUser(
                bot_url=f"http://127.0.0.1:{port}",
                signing_secret=SECRET,
                response_base=f"{standin.url}/response",
                http=http,
            )
            reply = await user.command_text("t failed")
            assert reply.status == 200
            assert reply.body["response_type"] == "ephemeral"
            await standin.wait_for(lambda cs: any(c.name == reply.response_id for c in cs))
        assert sum(sim.sim.calls.values()) == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 0
    assert TEST_SK not in stderr.decode()
    assert SECRET not in stderr.decode()


COMPLETE = {
    "CLOUD_SDK_AK": "a",
    "CLOUD_SDK_SK": "b",
    "HSS_PROJECT_ID": "p",
    "HSS_REGION": "ap-southeast-1",
    "SLACK_BOT_TOKEN": "xoxb-run-test",
    "SLACK_SIGNING_SECRET": "run-test-secret",
}


@pytest.mark.parametrize(
    ("env", "variables"),
    [
        (
            {},
            [
                "CLOUD_SDK_AK",
                "CLOUD_SDK_SK",
                "HSS_PROJECT_ID",
                "HSS_REGION",
                "SLACK_BOT_TOKEN",
                "SLACK_SIGNING_SECRET",
            ],
        ),
        ({**COMPLETE, "SLACK_BOT_TOKEN": ""}, ["SLACK_BOT_TOKEN"]),
        ({**COMPLETE, "PORT": "http"}, ["PORT"]),
        ({**COMPLETE, "SLACK_APP_TOKEN": "xoxb-not-an-app-token"}, ["SLACK_APP_TOKEN"]),
        ({**COMPLETE, "PORT": "http", "CLOUD_SDK_SK": ""}, ["PORT", "CLOUD_SDK_SK"]),
    ],
)
async def test_run_refuses_bad_configuration_one_line_per_problem(
    env: dict[str, str], variables: list[str]
) -> None:
    proc = await run_bot(bot_env(**env))
    _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    lines = stderr.decode().strip().splitlines()
    assert [line.split(":")[1].strip() for line in lines] == variables, lines
    assert all(line.startswith("hss-sync-bot: ") for line in lines)
    assert "Traceback" not in stderr.decode()


async def test_run_in_socket_mode_acks_over_the_websocket(
    make_hss_sim: MakeSim, standin: SlackStandIn, redis_url: str, redis: object
) -> None:
    sim = await make_hss_sim(task_sizes={"t": 40})
    port = free_port()
    proc = await run_bot(
        hss_env(
            sim.url,
            SLACK_BOT_TOKEN="xoxb-run-test",
            SLACK_APP_TOKEN="xapp-run-test",
            SLACK_API_URL=f"{standin.url}/api/",
            REDIS_URL=redis_url,
            PORT=str(port),
        )
    )
    try:
        await wait_healthy(f"http://127.0.0.1:{port}/healthz", proc)
        await until(lambda: bool(standin.socket_clients), what="the bot never connected")
        envelope = await standin.send_envelope(
            "slash_commands",
            {
                "command": "/hss-sync",
                "text": "t failed",
                "user_id": "U0SOCKET01",
                "channel_id": "C0SOCKET01",
                "team_id": "T0STANDIN",
                "response_url": f"{standin.url}/response/socket1",
                "trigger_id": "trigger.socket1",
            },
        )
        calls = await standin.wait_for(
            lambda cs: (
                any(c.kind == "socket_ack" and c.name == envelope for c in cs)
                and any(c.name == "socket1" for c in cs)
            )
        )
        ack = next(c.body for c in calls if c.kind == "socket_ack" and c.name == envelope)
        assert ack["payload"]["response_type"] == "ephemeral"
        fresh = next(c.body for c in calls if c.name == "socket1")
        assert fresh["replace_original"] is True
        assert sum(sim.sim.calls.values()) == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 0, stderr.decode()[-2000:]
    assert "xapp-run-test" not in stderr.decode()


# --- start-up: failures and signals --------------------------------------------------------


def embedded_env(tmp_path: Path, sim_url: str, **extra: str) -> dict[str, str]:
    """A complete configuration with no REDIS_URL: the bot starts an embedded Redis in
    ``tmp_path``, which must not outlive it whatever happens at start-up."""
    return hss_env(
        sim_url,
        SLACK_BOT_TOKEN="xoxb-run-test",
        SLACK_SIGNING_SECRET=SECRET,
        HSS_DATA_DIR=str(tmp_path / "data"),
        **extra,
    )


async def poll_readyz(port: int, timeout: float) -> httpx.Response:
    """The first /readyz answer once the bot listens (start-up keeps trying Slack)."""
    deadline = asyncio.get_running_loop().time() + timeout
    async with httpx.AsyncClient() as http:
        while True:
            try:
                return await http.get(f"http://127.0.0.1:{port}/readyz", timeout=5.0)
            except httpx.TransportError:
                assert asyncio.get_running_loop().time() < deadline, "never listened"
                await asyncio.sleep(0.1)


def no_redis_left(tmp_path: Path) -> None:
    leftovers = redis_server_pids(tmp_path / "data")
    for pid in leftovers:
        os.kill(pid, signal.SIGKILL)
    assert not leftovers, "the embedded redis-server outlived the bot"


async def test_a_port_in_use_is_one_line_and_exit_2(
    make_hss_sim: MakeSim, standin: SlackStandIn, tmp_path: Path
) -> None:
    sim = await make_hss_sim()
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = embedded_env(tmp_path, sim.url, PORT=str(port), SLACK_API_URL=f"{standin.url}/api/")
        proc = await run_bot(env)
        _, stderr = await asyncio.wait_for(proc.communicate(), 30)

    errors = [line for line in stderr.decode().splitlines() if line.startswith("hss-sync-bot:")]
    assert proc.returncode == 2
    assert errors == [errors[0]] and errors[0].startswith("hss-sync-bot: PORT: cannot listen")
    assert "Traceback" not in stderr.decode()
    no_redis_left(tmp_path)


async def test_an_unusable_data_dir_is_one_line_and_exit_2(
    make_hss_sim: MakeSim, tmp_path: Path
) -> None:
    sim = await make_hss_sim()
    not_a_dir = tmp_path / "a-file"
    not_a_dir.write_text("")
    env = {**embedded_env(tmp_path, sim.url), "HSS_DATA_DIR": str(not_a_dir / "data")}

    proc = await run_bot(env)
    _, stderr = await asyncio.wait_for(proc.communicate(), 30)

    errors = [line for line in stderr.decode().splitlines() if line.startswith("hss-sync-bot:")]
    assert proc.returncode == 2
    assert len(errors) == 1 and errors[0].startswith("hss-sync-bot: HSS_DATA_DIR: cannot use")
    assert "Traceback" not in stderr.decode()


async def test_sigterm_while_slack_is_unreachable_at_start_up_stops_cleanly(
    make_hss_sim: MakeSim, tmp_path: Path
) -> None:
    sim = await make_hss_sim()
    # Nobody listens there: auth.test is retried, then Socket Mode retries for ever.
    env = embedded_env(
        tmp_path,
        sim.url,
        PORT=str(free_port()),
        SLACK_APP_TOKEN="xapp-run-test",
        SLACK_API_URL=f"http://127.0.0.1:{free_port()}/api/",
    )
    proc = await run_bot(env)
    ready = await poll_readyz(int(env["PORT"]), timeout=15.0)
    assert proc.returncode is None, "it gave up by itself"
    assert ready.status_code == 503
    assert "slack socket mode not connected (see the log for why)" in ready.json()["reasons"]

    proc.send_signal(signal.SIGTERM)
    _, stderr = await asyncio.wait_for(proc.communicate(), 15)

    assert proc.returncode == 0
    assert "Traceback" not in stderr.decode()
    assert '"stopped"' in stderr.decode()
    no_redis_left(tmp_path)


# --- requests that are not Slack's, and shutdown with people waiting ----------------------------


def run_env(
    sim_url: str, standin: SlackStandIn, redis_url: str, port: int, **extra: str
) -> dict[str, str]:
    return hss_env(
        sim_url,
        SLACK_BOT_TOKEN="xoxb-run-test",
        SLACK_SIGNING_SECRET=SECRET,
        SLACK_API_URL=f"{standin.url}/api/",
        REDIS_URL=redis_url,
        PORT=str(port),
        **extra,
    )


async def test_run_answers_junk_with_400_or_401_and_one_short_line_each(
    make_hss_sim: MakeSim, standin: SlackStandIn, redis_url: str, redis: object
) -> None:
    sim = await make_hss_sim()
    port = free_port()
    proc = await run_bot(run_env(sim.url, standin, redis_url, port))
    events = f"http://127.0.0.1:{port}/slack/events"
    bad_actions = 'payload={"type":"block_actions","user":{"id":"U1"},"actions":[]}'
    try:
        await wait_healthy(f"http://127.0.0.1:{port}/healthz", proc)
        async with httpx.AsyncClient(timeout=10.0) as http:
            unsigned = [
                await http.post(events, content=b, headers={"Content-Type": "application/json"})
                for b in ("[1]", '{"user":5}', "[" * 100_000)
            ]
            stamp = {"X-Slack-Request-Timestamp": "abc", "X-Slack-Signature": "v0=x"}
            stamped = await http.post(events, content="command=x", headers=stamp)
            ts = str(int(time.time()))
            signature = SignatureVerifier(SECRET).generate_signature(timestamp=ts, body=bad_actions)
            headers = {
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Slack-Request-Timestamp": ts,
                "X-Slack-Signature": signature,
            }
            shaped = await http.post(events, content=bad_actions, headers=headers)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 15)
    assert [r.status_code for r in unsigned] == [401, 401, 401]
    assert stamped.status_code == 401
    assert shaped.status_code == 400
    log = stderr.decode()
    assert "Traceback" not in log and '"level": "ERROR"' not in log
    refused = [line for line in log.splitlines() if "refused a Slack request" in line]
    assert len(refused) == 5
    assert all(len(line) < 400 for line in refused), refused
    assert proc.returncode == 0


async def test_sigterm_tells_waiting_people_and_exits_within_ten_seconds(
    make_hss_sim: MakeSim, standin: SlackStandIn, redis_url: str, redis: object
) -> None:
    # A 1,000-registry task is 5 pages; 1 call a minute: the second page waits for a slot, and
    # so does the other question.
    sim = await make_hss_sim(task_sizes={"big": 1000}, rate_limit=1, window=60.0)
    sim.sim.set_faults(latency_ms=1000.0)
    port = free_port()
    env = run_env(sim.url, standin, redis_url, port, HSS_RATE_LIMIT="1/60s")
    proc = await run_bot(env)
    try:
        await wait_healthy(f"http://127.0.0.1:{port}/healthz", proc)
        async with httpx.AsyncClient(timeout=10.0) as http:
            user = SlackUser(
                bot_url=f"http://127.0.0.1:{port}",
                signing_secret=SECRET,
                response_base=f"{standin.url}/response",
                http=http,
            )
            big = await user.command_text("big")
            queued = await user.command_text("other failed")
        assert "Fetching fresh data" in json.dumps(big.body)
        await until(lambda: sum(sim.sim.calls.values()) >= 1, what="the first page asked for")
    finally:
        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        _, stderr = await asyncio.wait_for(proc.communicate(), 20)
    took = time.monotonic() - signalled
    print(f"exited {took:.2f} s after SIGTERM")
    assert proc.returncode == 0, stderr.decode()[-2000:]
    assert took < 10.0, f"took {took:.1f} s to exit"
    for reply in (big, queued):
        [told] = standin.responses(reply.response_id)
        assert told.body["replace_original"] is True
        assert "The bot is restarting" in json.dumps(told.body)
        assert "Ask again in a minute" in json.dumps(told.body)
    assert "Traceback" not in stderr.decode()
