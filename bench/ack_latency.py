"""Slash-command ack latency at 50 concurrent commands: our bot against a bare Bolt app.

* ours, warm: the mirror holds fresh data, so the answer rides in the ack.
* ours, cold: a task never seen before, so the ack says "Fetching" and a refresh follows
  (the round waits for those replies before the next round starts).
* peer: a bare ``slack_bolt`` ``AsyncApp`` served the same way (aiohttp, same signing
  secret, same Web API client set-up) whose command listener only calls ``await ack()``.

The Slack side runs in a child process (as Slack is not inside the bot's process): one
HTTP client, the same signed requests for all; rounds of the three are interleaved (order
rotated each round) so machine noise hits all alike. Figures are the HTTP round trip of
the ack as the client sees it, one per line.

Run: ``.venv/bin/python -m bench.ack_latency [--rounds N] [--concurrency 50]
[--log off|devnull|stderr|stderr-queued]``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from multiprocessing.connection import Connection

import aiohttp
import httpx
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_sdk.web.async_client import AsyncWebClient

from bench.common import emit, ms, percentile, quiet, ratio
from bot.ops import logs
from bot.ops.server import start_http
from bot.sandbox.localstack import SIGNING_SECRET, Stack, local_stack
from bot.sandbox.simulator import SimConfig
from bot.sandbox.slack_requests import SlackUser

WARM_TASK = "warm-task"
WARM_TEXTS = (
    f"{WARM_TASK} failed",
    WARM_TASK,
    f"{WARM_TASK} running",
    f"{WARM_TASK} failed type=Harbor,Jfrog",
)
_cold_ids = itertools.count(1)


def bare_bolt(api_url: str) -> web.Application:
    """The peer: Bolt with the same verification and client set-up, a listener that only acks."""
    bolt = AsyncApp(
        client=AsyncWebClient(token="xoxb-demo", base_url=api_url),
        signing_secret=SIGNING_SECRET,
        process_before_response=False,
        raise_error_for_unhandled_request=False,
    )

    @bolt.command("/hss-sync")
    async def only_ack(ack: AsyncAck) -> None:
        await ack()

    async def events(request: web.Request) -> web.Response:
        return await to_aiohttp_response(await bolt.async_dispatch(await to_bolt_request(request)))

    app = web.Application()
    app.router.add_post("/slack/events", events)
    return app


@dataclass(frozen=True)
class Ack:
    status: int
    elapsed: float
    response_id: str
    fetching: bool


async def _signed(
    url: str, response_base: str, texts: list[str]
) -> list[tuple[str, bytes, dict[str, str]]]:
    """(response id, body, headers) of each command exactly as ``SlackUser`` signs it."""
    requests: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(200)

    ids = []
    async with httpx.AsyncClient(transport=httpx.MockTransport(record)) as capture:
        user = SlackUser(
            bot_url=url, signing_secret=SIGNING_SECRET, response_base=response_base, http=capture
        )
        for text in texts:
            ids.append((await user.command_text(text)).response_id)
    return [(i, r.content, dict(r.headers)) for i, r in zip(ids, requests, strict=True)]


async def _burst(
    session: aiohttp.ClientSession, url: str, signed: list[tuple[str, bytes, dict[str, str]]]
) -> list[Ack]:
    async def one(body: bytes, headers: dict[str, str]) -> tuple[int, float, bytes]:
        started = time.perf_counter()
        async with session.post(url, data=body, headers=headers) as response:
            raw = await response.read()
        return response.status, time.perf_counter() - started, raw

    done = await asyncio.gather(*(one(body, headers) for _, body, headers in signed))
    return [
        Ack(status, elapsed, ident, b"Fetching" in raw)
        for (ident, _, _), (status, elapsed, raw) in zip(signed, done, strict=True)
    ]


def _client_main(conn: Connection, response_base: str, concurrency: int) -> None:
    """The Slack side, in its own process with a light client (aiohttp): the bot's process
    does only the bot's work, as in production, and the client is not the bottleneck.
    Requests are signed before the burst starts, by ``SlackUser`` itself."""

    async def serve() -> None:
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:
            while (job := await asyncio.to_thread(conn.recv)) is not None:
                url, texts = job
                signed = await _signed(url, response_base, texts)
                conn.send(await _burst(session, f"{url}/slack/events", signed))

    asyncio.run(serve())


class Client:
    """Runs bursts of signed commands in the client process."""

    def __init__(self, response_base: str, concurrency: int) -> None:
        self._conn, child = mp.get_context("spawn").Pipe()
        self._proc = mp.get_context("spawn").Process(
            target=_client_main, args=(child, response_base, concurrency), daemon=True
        )
        self._proc.start()

    async def burst(self, url: str, texts: list[str]) -> list[Ack]:
        self._conn.send((url, texts))
        acks: list[Ack] = await asyncio.to_thread(self._conn.recv)
        bad = [a.status for a in acks if a.status != 200]
        if bad:
            raise RuntimeError(f"non-200 acks: {bad[:5]}")
        return acks

    def close(self) -> None:
        self._conn.send(None)
        self._proc.join(timeout=10)


async def cold_burst(stack: Stack, client: Client, url: str, n: int) -> list[float]:
    acks = await client.burst(url, [f"cold-{next(_cold_ids)} failed" for _ in range(n)])
    if not all(a.fetching for a in acks):
        raise RuntimeError("a cold ack did not say it is fetching")
    ids = {a.response_id for a in acks}
    # The refreshes must land before the next round, or they would slow the peer's round.
    await stack.standin.wait_for(
        lambda calls: ids <= {c.name for c in calls if c.kind == "response"}, timeout=60.0
    )
    return [a.elapsed for a in acks]


async def run(rounds: int, concurrency: int) -> dict[str, list[float]]:
    config = SimConfig(seed=3, rate_limit=1_000_000, task_sizes={WARM_TASK: 200})
    env = {"HSS_RATE_LIMIT": "1000000/60s", "HSS_FRESH_SECONDS": "86400"}
    async with AsyncExitStack() as exits:
        stack = await exits.enter_async_context(local_stack(sim_config=config, env=env))
        runner, port = await start_http(
            bare_bolt(f"{stack.standin.url}/api/"), host="127.0.0.1", port=0
        )
        exits.push_async_callback(runner.cleanup)
        client = Client(f"{stack.standin.url}/response", concurrency)
        exits.callback(client.close)
        # Stack does not expose the bot's URL; its signed-request user knows it.
        ours = stack.user._events.removesuffix("/slack/events")
        peer = f"http://127.0.0.1:{port}"
        await cold_burst(stack, client, ours, 1)
        warm = await client.burst(ours, [WARM_TEXTS[0]])  # fills the mirror: one full fetch
        await stack.standin.wait_for(lambda cs: any(c.name == warm[0].response_id for c in cs))
        warm_texts = [WARM_TEXTS[i % len(WARM_TEXTS)] for i in range(concurrency)]

        async def elapsed(url: str, texts: list[str]) -> list[float]:
            return [a.elapsed for a in await client.burst(url, texts)]

        kinds: dict[str, Callable[[], Awaitable[list[float]]]] = {
            "ours_warm": lambda: elapsed(ours, warm_texts),
            "peer": lambda: elapsed(peer, ["anything"] * concurrency),
            "ours_cold": lambda: cold_burst(stack, client, ours, concurrency),
        }
        for measure in kinds.values():  # warm-up: connections, Bolt's auth.test, code paths
            await measure()
        results: dict[str, list[float]] = {k: [] for k in kinds}
        order = list(kinds)
        for r in range(rounds):
            for name in order[r % 3 :] + order[: r % 3]:
                results[name].extend(await kinds[name]())
        return results


def report(results: dict[str, list[float]], concurrency: int) -> None:
    print(f"# concurrency={concurrency} samples_per_kind={len(results['peer'])}", flush=True)
    for name, values in results.items():
        emit(f"ack.{name}.p50_ms", ms(percentile(values, 50)))
        emit(f"ack.{name}.p99_ms", ms(percentile(values, 99)))
    peer99, peer50 = percentile(results["peer"], 99), percentile(results["peer"], 50)
    emit("ack.p99_ratio_warm_over_peer", ratio(percentile(results["ours_warm"], 99), peer99))
    emit("ack.p50_ratio_warm_over_peer", ratio(percentile(results["ours_warm"], 50), peer50))
    emit("ack.p99_ratio_cold_over_peer", ratio(percentile(results["ours_cold"], 99), peer99))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument(
        "--log",
        choices=("off", "devnull", "stderr", "stderr-queued"),
        default="off",
        help="log as `run` does (INFO, JSON lines, secrets masked): into a discarded stream, "
        "to stderr written by the event loop's thread, or to stderr through the writer "
        "thread `run` uses (redirect stderr to a file)",
    )
    args = parser.parse_args()
    if args.log == "off":
        quiet()
    elif args.log == "devnull":
        logs.configure("INFO", stream=open(os.devnull, "w"), json_lines=True)  # noqa: SIM115
    else:
        logs.configure(
            "INFO", stream=sys.stderr, json_lines=True, queued=args.log == "stderr-queued"
        )
    report(asyncio.run(run(args.rounds, args.concurrency)), args.concurrency)


if __name__ == "__main__":
    main()
