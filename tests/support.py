"""Small pieces several test modules share: a settable clock, waiting on a condition, the bot
as a process, a local deployment with watches on, and the checks every Slack message passes.

Test modules import from here (and from ``tests.plugins``), never from each other."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import unicodedata
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.typedefs import Handler
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from slack_sdk.models.blocks import Block, BlockElement

from bot.hss.budget import CallBudget, Priority, Ticket
from bot.models import REGISTRY_TYPES, LookupRequest, SyncStatus, TaskRef, task_id_problem
from bot.sandbox.localstack import Stack, local_stack
from bot.sandbox.sim_server import make_app
from bot.sandbox.simulator import SimConfig, Simulator
from bot.sandbox.slack_standin import Channel
from bot.slack.render import Message
from bot.storage import keys
from bot.storage.embedded import socket_path_for
from bot.storage.mirror_store import RedisMirrorStore
from tests.plugins.hss_sim import TEST_AK, TEST_PROJECT_ID, TEST_SK, RunningSim


class Clock:
    """A ``time.time`` stand-in that moves only when a test sets ``now``."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# --- waiting on a condition -------------------------------------------------------------------

#: How often ``until`` looks again: short next to anything a test waits for.
POLL = 0.02


async def until(
    check: Callable[[], bool | Awaitable[bool]], *, timeout: float = 10.0, what: str = ""
) -> None:
    """Return as soon as ``check()`` (sync or async) is true; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        done = check()
        if inspect.isawaitable(done):
            done = await done
        if done:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what or check}")
        await asyncio.sleep(POLL)


# --- the bot as a process -----------------------------------------------------------------------


def free_port() -> int:
    """A TCP port nothing listens on right now (the kernel's pick of an ephemeral one)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bot_env(**extra: str) -> dict[str, str]:
    """A process environment with nothing of the test's own but the basics, plus ``extra``."""
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    return {**keep, "PYTHONUNBUFFERED": "1", **extra}


def hss_env(sim_url: str, **extra: str) -> dict[str, str]:
    """``bot_env`` with the test simulator's credentials and endpoint."""
    return bot_env(
        CLOUD_SDK_AK=TEST_AK,
        CLOUD_SDK_SK=TEST_SK,
        HSS_PROJECT_ID=TEST_PROJECT_ID,
        HSS_ENDPOINT=sim_url,
        **extra,
    )


async def run_bot(env: dict[str, str]) -> asyncio.subprocess.Process:
    """``hss-sync-bot run`` in a subprocess, its output piped."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.cli",
        "run",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def wait_healthy(
    url: str, proc: asyncio.subprocess.Process, timeout: float = 30.0
) -> httpx.Response:
    """The first 200 from ``url``; fails if the process exits first or after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as http:
        while proc.returncode is None and time.monotonic() < deadline:
            try:
                response = await http.get(url, timeout=1.0)
                if response.status_code == 200:
                    return response
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError("the bot never became healthy")


@dataclass
class Replica:
    """One ``hss-sync-bot run`` process; its stderr is read all along (a full pipe would
    block the bot's logging) and kept for the checks at the end."""

    name: str
    port: int
    proc: asyncio.subprocess.Process
    _err: bytearray = field(default_factory=bytearray)
    _readers: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def stderr(self) -> str:
        return self._err.decode(errors="replace")

    def start_reading(self) -> None:
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [
            asyncio.create_task(_pump(self.proc.stderr, self._err)),
            asyncio.create_task(_pump(self.proc.stdout, bytearray())),
        ]

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Send ``sig`` and wait for the exit; the return code."""
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        await asyncio.wait_for(asyncio.gather(*self._readers), 5.0)
        return code


async def _pump(stream: asyncio.StreamReader, into: bytearray) -> None:
    while chunk := await stream.read(65536):
        into += chunk


@dataclass
class SimDoor:
    """One more HTTP front of a served simulator, counting the API requests in flight
    through it: give each replica its own door, and a slow answer shows which one is
    waiting on HSS (the one holding a lease around its calls)."""

    url: str = ""
    in_flight: int = 0
    runner: web.AppRunner | None = None

    async def aclose(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def open_door(sim: Simulator) -> SimDoor:
    door = SimDoor()

    @web.middleware
    async def count(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/_sim/"):
            return await handler(request)
        door.in_flight += 1
        try:
            return await handler(request)
        finally:
            door.in_flight -= 1

    app = make_app(sim)
    app.middlewares.append(count)
    door.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await door.runner.setup()
    await web.TCPSite(door.runner, "127.0.0.1", 0).start()
    host, port = door.runner.addresses[0][:2]
    door.url = f"http://{host}:{port}"
    return door


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` in a ``/metrics`` body whose labels include
    ``labels``."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                total += sample.value
    return total


def redis_server_pids(data_dir: Path) -> list[int]:
    """Live redis-server processes serving ``data_dir`` (their title names the socket)."""
    needle = os.fsencode(socket_path_for(data_dir))
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes() if entry.name.isdigit() else b""
        except OSError:
            continue
        if b"redis-server" in cmdline and needle in cmdline:
            pids.append(int(entry.name))
    return pids


# --- what the alerting has done, read from Redis -------------------------------------------------


async def refreshes_stored(redis: aioredis.Redis, ref: TaskRef) -> int:
    """How many refreshes of ``ref`` the mirror has saved (its generation)."""
    return await RedisMirrorStore(redis).generation(ref)


async def change_stored(redis: aioredis.Redis, ref: TaskRef, registry_id: str, new: str) -> bool:
    """A refresh has saved ``registry_id`` going to status ``new``."""
    changes = await RedisMirrorStore(redis).changes(ref)
    return any(c.registry_id == registry_id and c.new == new for _, c in changes)


async def alerts_delivered(redis: aioredis.Redis, ref: TaskRef, channels: Sequence[str]) -> bool:
    """Everything the saved refreshes of ``ref`` had to say has reached Slack: the alert
    pipeline has handled the newest change (its cursor and the items it queued are written in
    one MULTI), and no channel's outbox still holds an item (one is deleted only after Slack
    took it)."""
    newest = await redis.xrevrange(keys.mirror_changes(ref), count=1)
    cursor = await redis.get(keys.alert_cursor(ref))
    if newest and cursor != newest[0][0]:
        return False
    lengths = [await redis.xlen(keys.outbox(channel)) for channel in channels]
    return not any(lengths)


# --- a local deployment -----------------------------------------------------------------------


#: How often ``alerting_stack``'s alert pipeline looks for newly watched tasks (the bot's 5 s
#: would delay a new watch's first alert that long).
TASKS_EVERY = 0.1


@asynccontextmanager
async def alerting_stack(redis_url: str, task: str) -> AsyncIterator[Stack]:
    """A local deployment with watches on, refreshing every second, no budget pressure and
    fast alert delivery; ``task`` has 30 registries."""
    config = SimConfig(
        ak=TEST_AK, sk=TEST_SK, project_id=TEST_PROJECT_ID, rate_limit=1000, task_sizes={task: 30}
    )
    env = {"POLL_INTERVAL_SECONDS": "1", "HSS_RATE_LIMIT": "1000/60s"}
    async with local_stack(
        sim_config=config,
        env=env,
        redis_url=redis_url,
        watches=True,
        send_interval=0.05,
        tasks_every=TASKS_EVERY,
    ) as running:
        yield running


@asynccontextmanager
async def watching_stack(
    redis_url: str,
    *,
    env: dict[str, str] | None = None,
    channels: Sequence[Channel] = (),
    **sim: Any,
) -> AsyncIterator[Stack]:
    """A local deployment with watches on and its workers running; ``env`` overrides,
    ``channels`` can be typed as ``#name``, ``sim`` are more SimConfig fields."""
    config = SimConfig(ak=TEST_AK, sk=TEST_SK, project_id=TEST_PROJECT_ID, rate_limit=1000, **sim)
    async with local_stack(
        sim_config=config, env=env, redis_url=redis_url, watches=True, channels=channels
    ) as running:
        yield running


async def said(stack: Stack, text: str, *, user: str = "U0DEMO0001") -> str:
    """The ephemeral answer to ``/hss-sync <text>`` typed by ``user``: its notification text
    and every section's mrkdwn, a line each."""
    stack.user.user_id = user
    reply = await stack.user.command_text(text)
    assert reply.status == 200 and reply.elapsed < 3.0
    assert reply.body["response_type"] == "ephemeral"
    sections = [b["text"]["text"] for b in reply.body.get("blocks", []) if b["type"] == "section"]
    return "\n".join([reply.body["text"], *sections])


async def home_views(stack: Stack, count: int) -> list[dict[str, Any]]:
    """The views of the first ``count`` ``views.publish`` calls, once made."""
    await stack.standin.wait_for(
        lambda cs: len([c for c in cs if c.name == "views.publish"]) >= count
    )
    views = [c.body["view"] for c in stack.standin.api("views.publish")]
    return [json.loads(v) if isinstance(v, str) else v for v in views]


# --- what every Slack message must be -----------------------------------------------------------

#: Text people or the API may send that Slack would turn into mentions, links or formatting.
HOSTILE = [
    "<!channel>",
    "<!here>",
    "<@U123>",
    "<!subteam^S1>",
    "<https://evil.example|click>",
    "*bold*",
    "`tick`",
    "```fence",
    "_it_ ~s~",
    "a & b",
]
HOSTILE_RAW = [h for h in HOSTILE if "<" in h]

#: Any task id a person could ask for (bot.models.task_id_problem says which).
task_ids = st.text(
    st.characters(blacklist_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp")),
    min_size=1,
    max_size=64,
).filter(lambda s: task_id_problem(s) is None)

#: Any lookup a person could ask for.
lookup_requests = st.builds(
    LookupRequest,
    task_id=task_ids,
    status=st.none() | st.sampled_from(SyncStatus),
    types=st.frozensets(st.sampled_from(REGISTRY_TYPES)),
    name=st.none() | st.text(min_size=1, max_size=128).filter(lambda s: bool(s.strip())),
    ep=st.none() | st.text(min_size=1, max_size=256).filter(lambda s: bool(s.strip())),
)


def printable(request: LookupRequest) -> bool:
    """No control, invisible or text-direction characters (Cc, Cf) in what the request would
    show: the bot refuses them in task ids, names and enterprise project ids."""
    values = [request.task_id, request.name or "", request.ep or ""]
    return not any(unicodedata.category(c) in ("Cc", "Cf") for v in values for c in v)


def block_texts(block: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every text object inside a block."""
    if "text" in block:
        yield block["text"]
    for element in block.get("elements", []):
        if element.get("type") in ("mrkdwn", "plain_text"):
            yield element
        elif "text" in element:
            yield element["text"]


def check_message(message: Message, ours: re.Pattern[str]) -> None:
    """Slack's limits (slack_sdk's models and explicit numbers) and nothing unescaped: the
    only ``<...>`` tokens in mrkdwn are those matching ``ours``, the ones the bot writes."""
    json.dumps(message.blocks)
    assert 0 < len(message.blocks) <= 50
    assert 0 < len(message.text) <= 3000
    assert not re.search("[<>]", message.text), message.text
    total = 0
    for block in message.blocks:
        Block.parse(block).validate_json()  # type: ignore[union-attr]
        check_block(block)
        for text in block_texts(block):
            total += len(text["text"])
            if text["type"] == "mrkdwn":
                assert not re.search("[<>]", ours.sub("", text["text"])), text["text"]
    assert total <= 10_000


def mrkdwn_of(message: Message) -> str:
    """The message's mrkdwn texts, one per line."""
    return "\n".join(
        t["text"] for b in message.blocks for t in block_texts(b) if t["type"] == "mrkdwn"
    )


def check_block(block: dict[str, Any]) -> None:
    """Slack's limits for one block of the kinds the bot writes."""
    kind = block["type"]
    if kind == "header":
        assert block["text"]["type"] == "plain_text"
        assert 0 < len(block["text"]["text"]) <= 150
    elif kind == "section":
        assert 0 < len(block["text"]["text"]) <= 3000
    elif kind == "context":
        assert 0 < len(block["elements"]) <= 10
    elif kind == "actions":
        elements = block["elements"]
        assert 0 < len(elements) <= 25
        assert len({e["action_id"] for e in elements}) == len(elements)
        for element in elements:
            BlockElement.parse(element).validate_json()  # type: ignore[union-attr]
            assert len(element["text"]["text"]) <= 75
            assert len(element["value"]) <= 2000
            assert len(element["action_id"]) <= 255
    else:
        assert kind == "divider"


# --- recording HSS seams ------------------------------------------------------------------------


@dataclass
class RecordingBudget:
    """A ``CallBudget`` that records what the client asked of it and delegates to ``inner``.

    ``on_acquire(n)`` runs before the n-th slot is granted (1-based): the hook tests use to
    change HSS's data between two pages at a deterministic point.
    """

    inner: CallBudget | None = None
    on_acquire: Callable[[int], None] = lambda n: None
    acquired: list[Priority] = field(default_factory=list)
    penalties: list[float | None] = field(default_factory=list)
    tickets: list[Ticket | None] = field(default_factory=list)

    async def acquire(
        self,
        priority: Priority = Priority.INTERACTIVE,
        *,
        timeout: float | None = None,
        ticket: Ticket | None = None,
    ) -> None:
        self.acquired.append(priority)
        self.tickets.append(ticket)
        self.on_acquire(len(self.acquired))
        if self.inner is not None:
            await self.inner.acquire(priority, timeout=timeout, ticket=ticket)

    async def next_slot_in(self) -> float:
        return await self.inner.next_slot_in() if self.inner else 0.0

    async def penalize(self, retry_after: float | None) -> None:
        self.penalties.append(retry_after)
        if self.inner is not None:
            await self.inner.penalize(retry_after)

    async def calls_left(self) -> int:
        return await self.inner.calls_left() if self.inner else 5


class RecordingTransport(httpx.AsyncBaseTransport):
    """The real loopback transport, keeping each request's raw target as it went out."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self.targets: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.targets.append(request.url.raw_path.decode("ascii"))
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


# --- the CLI as a process -------------------------------------------------------------------

SECRET_VARIABLES = (
    "CLOUD_SDK_SK",
    "CLOUD_SDK_SECURITY_TOKEN",
    "SLACK_BOT_TOKEN",
    "SLACK_SIGNING_SECRET",
    "SLACK_APP_TOKEN",
)
RUN_TIMEOUT = 30.0


@dataclass(frozen=True)
class Run:
    args: tuple[str, ...]
    code: int
    stdout: str
    stderr: str

    @property
    def errors(self) -> list[str]:
        return self.stderr.strip().splitlines()

    def json(self) -> list[dict[str, str]]:
        rows = json.loads(self.stdout)
        assert isinstance(rows, list)
        return rows


def check_run(run: Run, env: Mapping[str, str]) -> Run:
    """What must hold for every run, whatever it was asked to do."""
    assert "Traceback" not in run.stderr, run.stderr
    for name in SECRET_VARIABLES:
        value = env.get(name)
        if value:
            assert value not in run.stdout, f"{name} leaked to stdout"
            assert value not in run.stderr, f"{name} leaked to stderr"
    return run


async def run_cli(
    args: Sequence[str], *, env: Mapping[str, str], cwd: Path, stdout: int = subprocess.PIPE
) -> Run:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.cli",
        *args,
        env=dict(env),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(RUN_TIMEOUT):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    run = Run(tuple(args), proc.returncode, (out or b"").decode(), err.decode())
    return check_run(run, env)


@dataclass
class Cli:
    """``await cli("query", TASK, VAR=value, OTHER=None)``: runs with the base environment,
    a variable set to ``None`` removed."""

    sim: RunningSim
    env: dict[str, str]
    cwd: Path
    runs: list[Run] = field(default_factory=list)

    async def __call__(self, *args: str, **overrides: str | None) -> Run:
        env = {**self.env, **{k: v for k, v in overrides.items() if v is not None}}
        for name in (k for k, v in overrides.items() if v is None):
            env.pop(name, None)
        run = await run_cli(args, env=env, cwd=self.cwd)
        self.runs.append(run)
        return run

    @property
    def calls(self) -> int:
        """Requests that reached the simulator's API, whatever it answered."""
        return sum(self.sim.sim.by_status.values())


def base_env(sim: RunningSim, tmp_path: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", ""),
        "HSS_ENDPOINT": sim.url,
        "CLOUD_SDK_AK": TEST_AK,
        "CLOUD_SDK_SK": TEST_SK,
        "HSS_PROJECT_ID": TEST_PROJECT_ID,
        "HSS_DATA_DIR": str(tmp_path / "data"),
    }
